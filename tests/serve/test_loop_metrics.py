"""The event loop's lock-free instruments export exactly what ``prometheus_client``'s
Histogram and Counter export for the same observations (the fleet merge reads the same)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from keel.serve.metrics import LoopCounter, LoopHistogram, Metrics

BUCKETS = (0.0002, 0.001, 0.01, 1.0)
VALUES = [0.0, 0.0001, 0.0002, 0.00020000001, 0.001, 0.5, 1.0, 1.5, 1e9, 0.003]


def test_histograms_and_counters_expose_the_same_text() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("t_seconds", "Latency.", ["route"], registry=theirs, buckets=BUCKETS)
    h2 = LoopHistogram("t_seconds", "Latency.", ["route"], registry=ours, buckets=BUCKETS)
    u1 = Histogram("t_size", "Sizes.", registry=theirs, buckets=(1, 2, 4))
    u2 = LoopHistogram("t_size", "Sizes.", registry=ours, buckets=(1, 2, 4))
    c1 = Counter("t_requests", "Requests.", ["route", "status"], registry=theirs)
    c2 = LoopCounter("t_requests", "Requests.", ["route", "status"], registry=ours)
    for i, value in enumerate(VALUES):
        route = ("predict", "health")[i % 2]
        h1.labels(route).observe(value)
        h2.labels(route).observe(value)
        c1.labels(route, str(200 + i % 3)).inc()
        c2.labels(route, str(200 + i % 3)).inc()
        u1.observe(i % 6)
        u2.observe(i % 6)
    c1.labels("predict", "500").inc(2.5)
    c2.labels("predict", "500").inc(2.5)
    # the same creation times (each series records its own when first used)
    for route in ("predict", "health"):
        h2.labels(route).created = h1.labels(route)._created
    u2._one.created = u1._created
    for labels, series in c2._series.items():
        series.created = c1.labels(*labels)._created
    assert generate_latest(ours).decode() == generate_latest(theirs).decode()


def test_server_metrics_count_requests_without_locks() -> None:
    metrics = Metrics()
    for status in (200, 200, 422):
        metrics.observe("predict", status, 0.0007)
    text = generate_latest(metrics.registry).decode()
    assert 'keel_requests_total{route="predict",status="200"} 2.0' in text
    assert 'keel_requests_total{route="predict",status="422"} 1.0' in text
    assert 'keel_request_duration_seconds_bucket{le="0.0005",route="predict"} 0.0' in text
    assert 'keel_request_duration_seconds_bucket{le="0.001",route="predict"} 3.0' in text
    assert 'keel_request_duration_seconds_count{route="predict"} 3.0' in text
