"""The server's Prometheus metrics: requests, latency, predictions, the log and reloads.

Label values are bounded (route names, not paths; model names the server serves), so the
series count never grows with traffic. The per-request instruments the event loop updates
(latency, requests by status, the batch queue's waits and sizes) are :class:`LoopHistogram`
and :class:`LoopCounter`: plain Python numbers one thread adds to, no lock, turned into
Prometheus samples only when scraped, exported exactly as ``prometheus_client``'s Histogram
and Counter would. Instruments other threads update (predictions by version) stay
``prometheus_client``'s, whose increments are locked.
"""

from __future__ import annotations

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

__all__ = ["LoopCounter", "LoopHistogram", "Metrics"]

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


class LoopCounter(Collector):
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
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], _Count] = {}
        if registry is not None:
            registry.register(self)

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
        self.predictions = Counter(
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
        self.inflight = Gauge(
            "keel_predictions_in_flight", "Predictions queued or running.", registry=self.registry
        )
        self._latency: dict[str, _Bins] = {}
        self._requests: dict[tuple[str, int], _Count] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request (on the event loop)."""
        child = self._latency.get(route)
        if child is None:
            child = self._latency[route] = self.latency.labels(route)
        child.observe(seconds)
        counter = self._requests.get((route, status))
        if counter is None:
            counter = self._requests[(route, status)] = self.requests.labels(route, str(status))
        counter.inc()

    def export(self, name: str, help_text: str, value: Callable[[], float]) -> None:
        """Export a counter whose value is read when scraped (the log's drops, swaps)."""
        self.registry.register(_Read(name, help_text, value))


class _Read(Collector):
    def __init__(self, name: str, help_text: str, value: Callable[[], float]) -> None:
        self.name, self.help_text, self.value = name, help_text, value

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.help_text, value=self.value())
