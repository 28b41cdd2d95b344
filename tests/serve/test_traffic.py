"""The request path's per-version traffic counts (:class:`keel.serve.routing.Traffic`)."""

from __future__ import annotations

import math
import random

from keel.registry.deployments import LATENCY_EDGES_MS, bucket_of
from keel.serve.routing import Traffic


def _bucket(seconds: float) -> int:
    traffic = Traffic()
    traffic.record("d", "1", "primary", seconds)
    (row,) = traffic.drain()
    (bucket,) = row["latency"]
    return int(bucket)


def test_a_request_lands_in_the_bucket_bucket_of_names() -> None:
    # the edges themselves and the floats beside them (where the bisection defers to
    # bucket_of's logarithm), zero and the overflow, and log-uniform values between
    milliseconds = [0.0, 1e-6, 1e9]
    for edge in LATENCY_EDGES_MS:
        below, above = math.nextafter(edge, 0.0), math.nextafter(edge, math.inf)
        milliseconds += [edge, below, above, edge * (1 - 1e-6), edge * (1 + 1e-6)]
        milliseconds += [edge * (1 - 2e-6), edge * (1 + 2e-6), edge * (1 + 1e-9)]
    rng = random.Random(16)
    milliseconds += [10 ** rng.uniform(-3, 6) for _ in range(5000)]
    for ms in milliseconds:
        seconds = ms / 1000.0  # what Traffic is given: it buckets seconds * 1000
        assert _bucket(seconds) == bucket_of(seconds * 1000.0), ms


def test_each_version_counts_its_requests_errors_and_refusals() -> None:
    traffic = Traffic()
    traffic.record("d", "1", "primary", 0.002)
    traffic.record("d", "1", "primary", 0.002, error=True)
    traffic.record("d", "1", "primary", 0.004, rejected=True)
    traffic.record("d", "2", "shadow", 0.001, compared=3, disagreed=1)
    rows = {row["version"]: row for row in traffic.drain()}
    assert {k: rows["1"][k] for k in ("requests", "errors", "rejected", "compared")} == {
        "requests": 3,
        "errors": 1,
        "rejected": 1,
        "compared": 0,
    }
    assert rows["1"]["latency"] == {str(bucket_of(2.0)): 2, str(bucket_of(4.0)): 1}
    assert (rows["2"]["role"], rows["2"]["compared"], rows["2"]["disagreed"]) == ("shadow", 3, 1)
    assert traffic.drain() == []
