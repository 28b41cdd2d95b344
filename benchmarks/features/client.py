"""Sequential HTTP client: one keep-alive connection, one request at a time, latency percentiles.

usage: client.py PORT PATH BODY_TEMPLATE_JSON CALLS
``BODY_TEMPLATE_JSON`` holds ``"__KEY__"`` where the entity key goes (a random key per call).
Prints one JSON line. The same client measures Keel and Feast.
"""

from __future__ import annotations

import http.client
import json
import sys
import time

import numpy as np
from feature_data import N_ONLINE


def main(port: int, path: str, template: str, calls: int) -> dict[str, object]:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"content-type": "application/json"}
    keys = np.random.default_rng(5).integers(0, N_ONLINE, size=calls + 200).tolist()
    times = np.empty(calls)
    status = 0
    last = b""
    for i, k in enumerate(keys):
        body = template.replace('"__KEY__"', str(k)).encode()
        t0 = time.perf_counter_ns()
        con.request("POST", path, body=body, headers=headers)
        response = con.getresponse()
        last = response.read()
        elapsed = time.perf_counter_ns() - t0
        status = response.status
        if status != 200:
            raise SystemExit(f"HTTP {status}: {last[:300]!r}")
        if i >= 200:  # the first 200 are warm-up
            times[i - 200] = elapsed
    us = times / 1000.0
    return {
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()),
        "calls": calls,
        "bytes": len(last),
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]))))
