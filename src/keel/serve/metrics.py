"""The server's Prometheus metrics: requests, latency, predictions, the log and reloads.

Label values are bounded (route names, not paths; model names the server serves), so the
series count never grows with traffic. Children are cached per label so an observation on the
request path is an attribute lookup and an add.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from keel.serve.fleet import FleetRegistry

__all__ = ["Metrics"]

_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Every metric ``/metrics`` exports, in one registry per server."""

    def __init__(self) -> None:
        self.registry = FleetRegistry()  # a worker of --workers N: the fleet's numbers
        self.latency = Histogram(
            "keel_request_duration_seconds",
            "Request latency by route.",
            ["route"],
            registry=self.registry,
            buckets=_BUCKETS,
        )
        self.requests = Counter(
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
        self._latency: dict[str, Histogram] = {}
        self._requests: dict[tuple[str, int], Counter] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
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
