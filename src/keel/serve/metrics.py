"""The server's Prometheus metrics: requests, latency, predictions, unknown entities, the log
and reloads.

Label values are bounded (route names, not paths; model names the server serves), so the
series count never grows with traffic. The per-request instruments the event loop updates
(latency, requests by status, the batch queue's waits and sizes) are :class:`LoopHistogram`
and :class:`LoopCounter`: plain Python numbers one thread adds to, no lock, turned into
Prometheus samples only when scraped, exported exactly as ``prometheus_client``'s Histogram
and Counter would. Predictions by version, counted by the prediction threads and the loop, are
a :class:`ThreadsCounter`: a cell per thread, no lock to add, summed when scraped.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client import metrics as _prometheus
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from keel.serve.fleet import FleetRegistry

__all__ = ["LoopCounter", "LoopHistogram", "Metrics", "ThreadsCounter"]

_go = cast(Callable[[float], str], floatToGoString)  # how Prometheus writes a bucket's le
_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Bins:
    """One histogram series: a count per bucket (not cumulative), the sum, when it began."""

    __slots__ = ("bounds", "counts", "created", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        """Count one value (the first bucket whose bound is >= it, as Prometheus does)."""
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount


class LoopHistogram(Collector):
    """A histogram updated by one thread without locks, collected like ``Histogram``.

    Args:
        name: Metric name (without ``_bucket``/``_count``/``_sum``).
        documentation: Help text.
        labelnames: Label names; without any, :meth:`observe` counts the one series.
        buckets: Upper bounds, increasing (``+Inf`` is added).
        registry: Where it is exported.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None,
    ) -> None:
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        self.bounds = (*(float(b) for b in buckets), float("inf"))
        self._les = [_go(bound) for bound in self.bounds]
        self._series: dict[tuple[str, ...], _Bins] = {}
        if not self.labelnames:
            self._one = self.labels()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> _Bins:
        """The series of these label values (kept: cache it on the request path)."""
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = _Bins(self.bounds)
        return series

    def observe(self, amount: float) -> None:
        """Count one value in the unlabelled series."""
        self._one.observe(amount)

    def observe_each(self, amounts: Sequence[float]) -> None:
        """Count each value in the unlabelled series (one call for a batch's waits)."""
        series = self._one
        counts, bounds, total = series.counts, series.bounds, series.total
        for amount in amounts:
            counts[bisect_left(bounds, amount)] += 1
            total += amount  # in order, as observe() one by one would add them
        series.total = total

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "histogram")
        les = self._les
        for values, series in list(self._series.items()):
            labels = dict(zip(self.labelnames, values, strict=True))
            counts, total = list(series.counts), series.total
            acc = 0.0
            for le, count in zip(les, counts, strict=True):
                acc += count
                metric.add_sample(f"{self.name}_bucket", {**labels, "le": le}, acc)
            metric.add_sample(f"{self.name}_count", labels, acc)
            metric.add_sample(f"{self.name}_sum", labels, total)
            if _prometheus._use_created:
                metric.add_sample(f"{self.name}_created", labels, series.created)
        yield metric


class _Count:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _Labelled(Collector):
    """A labelled metric's name, help and label names, registered once its series exist."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None,
    ) -> None:
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        if registry is not None:
            registry.register(self)  # collects: subclasses make their series first


class LoopCounter(_Labelled):
    """A labelled counter updated by one thread without locks, collected like ``Counter``
    (``name`` without ``_total``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None,
    ) -> None:
        self._series: dict[tuple[str, ...], _Count] = {}
        super().__init__(name, documentation, labelnames, registry=registry)

    def labels(self, *values: str) -> _Count:
        """The series of these label values (kept: cache it on the request path)."""
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = _Count()
        return series

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "counter")
        for values, series in list(self._series.items()):
            labels = dict(zip(self.labelnames, values, strict=True))
            metric.add_sample(f"{self.name}_total", labels, series.value)
            if _prometheus._use_created:
                metric.add_sample(f"{self.name}_created", labels, series.created)
        yield metric


class ThreadsCounter(_Labelled):
    """A labelled counter several threads add to without locks: each thread has its own cell
    per series (:meth:`cell`; only that thread adds to it), summed when scraped, collected
    like ``Counter`` (``name`` without ``_total``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None,
    ) -> None:
        self._series: dict[tuple[str, ...], dict[int, _Count]] = {}  # thread id -> its cell
        self._lock = threading.Lock()  # taken when a cell is made, never to add
        super().__init__(name, documentation, labelnames, registry=registry)

    def cell(self, *values: str) -> _Count:
        """The calling thread's cell of these label values: keep it per thread and add to its
        ``value`` (a thread id reused after a thread ended gets the ended thread's cell)."""
        with self._lock:
            cells = self._series.setdefault(values, {})
            found = cells.get(threading.get_ident())
            if found is None:
                found = cells[threading.get_ident()] = _Count()
            return found

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "counter")
        with self._lock:
            series = [(values, list(cells.values())) for values, cells in self._series.items()]
        for values, cells in series:
            labels = dict(zip(self.labelnames, values, strict=True))
            metric.add_sample(f"{self.name}_total", labels, sum(c.value for c in cells))
            if _prometheus._use_created:
                metric.add_sample(f"{self.name}_created", labels, min(c.created for c in cells))
        yield metric


class Metrics:
    """Every metric ``/metrics`` exports, in one registry per server."""

    def __init__(self) -> None:
        self.registry = FleetRegistry()  # a worker of --workers N: the fleet's numbers
        self.latency = LoopHistogram(  # observed on the event loop only
            "keel_request_duration_seconds",
            "Request latency by route.",
            ["route"],
            registry=self.registry,
            buckets=_BUCKETS,
        )
        self.requests = LoopCounter(
            "keel_requests",
            "Requests by route and HTTP status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.predictions = ThreadsCounter(  # added to by the prediction threads and the loop
            "keel_predictions",
            "Rows predicted by model and version.",
            ["model", "version"],
            registry=self.registry,
        )
        self.shed = Counter(
            "keel_requests_shed",
            "Predictions refused with 503 because the queue would break serve.slo_p99_ms.",
            registry=self.registry,
        )
        self.unknown_entities = Counter(  # rare: a locked prometheus_client Counter
            "keel_unknown_entities",
            "Instances scored with a feature view's features missing: the online store has no "
            "row for their entity (not materialized, or deleted).",
            ["model", "view"],
            registry=self.registry,
        )
        self.inflight = Gauge(
            "keel_predictions_in_flight", "Predictions queued or running.", registry=self.registry
        )
        # (route, status) -> its latency series and its request count, found once
        self._series: dict[tuple[str, int], tuple[_Bins, _Count]] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request (on the event loop; the series' updates written out
        here, one Python call a request)."""
        series = self._series.get((route, status))
        if series is None:
            latency = self.latency.labels(route)
            series = self._series[(route, status)] = (
                latency,
                self.requests.labels(route, str(status)),
            )
        bins, count = series
        bins.counts[bisect_left(bins.bounds, seconds)] += 1
        bins.total += seconds
        count.value += 1.0

    def export(self, name: str, help_text: str, value: Callable[[], float]) -> None:
        """Export a counter whose value is read when scraped (the log's drops, swaps)."""
        self.registry.register(_Read(name, help_text, value))


class _Read(Collector):
    def __init__(self, name: str, help_text: str, value: Callable[[], float]) -> None:
        self.name, self.help_text, self.value = name, help_text, value

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.help_text, value=self.value())
