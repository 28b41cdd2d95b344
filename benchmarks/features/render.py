"""The feature store section of RESULTS.md, from bench.py's raw JSON."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

TITLE = "## Feature store: online lookups and the point-in-time join, Keel vs Feast"


def _us(value: float) -> str:
    return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.0f} us"


def _lookup_rows(section: dict[str, Any], where: str) -> list[str]:
    rows = []
    for key, result in section.items():
        tool, backend = key.split("/")
        name = f"{'Keel' if tool == 'keel' else 'Feast'} ({backend})"
        if "error" in result:
            rows.append(f"| {name} | {where} | {result['error'][:120]} | | | | |")
            continue
        cells = []
        for n in ("x10", "x100"):
            r = result.get(n, {})
            if "p50_us" not in r:
                cells += [r.get("error", "-")[:60], ""]
                continue
            cells += [_us(r["p50_us"]), _us(r["p99_us"])]
        peer = section.get(f"{'feast' if tool == 'keel' else 'keel'}/{backend}", {})
        ratio = ""
        if tool == "keel" and "p50_us" in peer.get("x10", {}) and "p50_us" in result.get("x10", {}):
            ratio = f"{peer['x10']['p50_us'] / result['x10']['p50_us']:.0f}x / " + (
                f"{peer['x100']['p50_us'] / result['x100']['p50_us']:.0f}x"
            )
        rows.append(f"| {name} | {where} | {' | '.join(cells)} | {ratio} |")
        floor = result.get("floor", {})
        if all("p50_us" in floor.get(n, {}) for n in ("x10", "x100")):
            cells = [_us(floor[n][p]) for n in ("x10", "x100") for p in ("p50_us", "p99_us")]
            rows.append(f"| round-trip floor ({backend}: socket + hiredis) | {where} | "
                        f"{' | '.join(cells)} |  |")  # fmt: skip
    return rows


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if key in r and r[key] is not None]
    return statistics.median(values) if values else None


def render(raw: dict[str, Any]) -> str:
    cfg = raw["config"]
    lines = [
        TITLE,
        "",
        f"Method. `benchmarks/features/bench.py`: every tool in its own process on the same "
        f"Parquet data; Feast {raw['versions'].get('feast (feast venv)', '?')} from its own venv "
        "(`pip install 'feast[redis]'`). Online: a 10,000-entity view with 100 float features, "
        "materialized by each tool into its SQLite and its Redis online store (one redis-server "
        f"on 127.0.0.1 for both), then {cfg['calls']:,} sequential lookups of 1 random entity x "
        f"10 and x 100 features after a warm-up; over HTTP, {cfg['http_calls']:,} requests on one "
        "keep-alive connection from the same Python client to Keel's server (`POST "
        "/v1/features`, the `keel serve` app) and to `feast serve` (`POST "
        "/get-online-features`). Point-in-time join: 1M entity rows x 10 features from 3 views "
        "of 1M rows each, 30-day TTL: Keel `historical()` vs Feast `get_historical_features` "
        "(file offline store, `.to_df()`) vs a hand-written DuckDB query with three ASOF LEFT "
        "JOINs and the TTL (the floor); peak RSS is the child's rusage.",
        "",
        "| tool (online store) | path | 1 x 10 p50 | 1 x 10 p99 | 1 x 100 p50 | 1 x 100 p99 "
        "| Feast / Keel (p50, x10 / x100) |",
        "|---|---|---|---|---|---|---|",
        *_lookup_rows(raw["online"], "in-process"),
        *_lookup_rows(raw["http"], "HTTP"),
        "",
        "| point-in-time join | join (median) | process wall | peak RSS | rows out | rows with "
        "view_a values | vs floor |",
        "|---|---|---|---|---|---|---|",
    ]
    floor = _median(raw["pit"].get("floor", []), "join_s")
    names = {
        "keel": "Keel `historical()`",
        "floor": "DuckDB ASOF by hand (floor)",
        "feast": "Feast `get_historical_features`",
    }
    for tool in ("keel", "floor", "feast"):
        runs = raw["pit"].get(tool)
        if not runs:
            continue
        ok = [r for r in runs if "error" not in r]
        if not ok:
            lines.append(f"| {names[tool]} | {runs[0]['error'][:150]} | | | | | |")
            continue
        join = _median(ok, "join_s")
        assert join is not None
        ratio = f"{join / floor:.2f}x" if floor else ""
        lines.append(
            f"| {names[tool]} ({len(ok)} run{'s' if len(ok) > 1 else ''}) | {join:.2f} s | "
            f"{_median(ok, 'wall_s') or 0:.1f} s | {_median(ok, 'peak_rss_mb') or 0:.0f} MB | "
            f"{ok[0]['rows']:,} | {ok[0]['non_null_a0']:,} | {ratio} |"
        )
    lines += ["", *_notes(raw)]
    return "\n".join(lines) + "\n"


def _notes(raw: dict[str, Any]) -> list[str]:
    load = ""
    if "loadavg_start" in raw:
        load = f" (1-minute load average {raw['loadavg_start']:.1f} at the start, "
        load += f"{raw['loadavg_end']:.1f} at the end)"
    notes = [
        f"Timings were taken on a 2-core machine shared with other work{load}: p99 figures "
        "especially are noisy."
    ]
    if raw.get("feast_unavailable"):
        notes.append(f"Feast was not measured: {raw['feast_unavailable']}.")
    feast = [r for r in raw["pit"].get("feast", []) if "error" not in r]
    keel = [r for r in raw["pit"].get("keel", []) if "error" not in r]
    if feast and keel and feast[0]["rows"] != keel[0]["rows"]:
        notes.append(
            f"Feast's file offline store returned {feast[0]['rows']:,} of "
            f"{keel[0]['rows']:,} entity rows: it drops every entity row that lacks a value "
            "within the TTL in some view (the count equals the rows where Keel's join has all "
            "three views non-null, checked once by hand), where Keel and the floor keep every "
            "entity row with NULLs, as Feast's own documentation describes the join."
        )
    keel_redis = raw["online"].get("keel/redis", {})
    feast_redis = raw["online"].get("feast/redis", {})
    floor = keel_redis.get("floor", {})
    if "p50_us" in floor.get("x10", {}) and "p50_us" in feast_redis.get("x10", {}):
        keel_x10, floor_x10 = keel_redis["x10"]["p50_us"], floor["x10"]["p50_us"]
        notes.append(
            f"Redis round-trip floor: one HMGET over a plain socket (hiredis parsing, nothing "
            f"decoded) takes {floor_x10:.0f} us at the median on this machine, so Keel adds "
            f"{keel_x10 - floor_x10:.0f} us to a round trip (x10) and Feast "
            f"{feast_redis['x10']['p50_us'] - floor_x10:.0f} us; Feast / floor is "
            f"{feast_redis['x10']['p50_us'] / floor_x10:.1f}x, the most any Redis client "
            "could be faster than Feast here at 1 x 10. On an idle 2-core VM most of the "
            "round trip is waking the other core (under load it measured ~12 us)."
        )
    if raw.get("redis") != "started":
        notes.append(f"Redis: {raw.get('redis')}.")
    return [f"- {n}" for n in notes]


if __name__ == "__main__":
    import json

    print(render(json.loads(Path(sys.argv[1]).read_text())))
