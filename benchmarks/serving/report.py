"""Turn the serving benchmark's raw rounds into the RESULTS.md section (medians over rounds)."""

from __future__ import annotations

import math
import statistics
from typing import Any

DASH, TIMES, OVER = "\u2013", "\u00d7", "\u00f7"  # en dash, multiplication, division
TARGET_C1_P50_MS = 0.6
TARGET_C64_RPS = 3000.0
TARGET_C64_P99_MS = 30.0


def fmt(value: float | None, unit: str = "") -> str:
    """Three significant figures, thousands separated; '—' for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return text + unit


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    return f" ({fmt(min(values))}{DASH}{fmt(max(values))})"


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def per_round(raw: dict[str, Any], key: str, conns: str, metric: str) -> list[float]:
    """One load metric of one server at one connection count, for every round it ran."""
    out = []
    for rnd in raw["rounds"]:
        load = rnd["servers"].get(key, {}).get("loads", {}).get(conns)
        if load is not None:
            out.append(float(load[metric]))
    return out


def ratio(
    raw: dict[str, Any], conns: str, metric: str, num: str, den: str
) -> tuple[float | None, list[float]]:
    """Median over rounds of num/den, each ratio taken within one round."""
    values = []
    for rnd in raw["rounds"]:
        a = rnd["servers"].get(num, {}).get("loads", {}).get(conns)
        b = rnd["servers"].get(den, {}).get("loads", {}).get(conns)
        if a is not None and b is not None and b[metric]:
            values.append(a[metric] / b[metric])
    return med(values), values


def server_field(raw: dict[str, Any], key: str, name: str) -> list[float]:
    return [
        float(r["servers"][key][name]) for r in raw["rounds"] if name in r["servers"].get(key, {})
    ]


def render(raw: dict[str, Any]) -> tuple[str, list[str]]:
    """(markdown section, notes for the top of the file)."""
    conns = [str(c) for c in raw["config"]["conns"]]
    servers: dict[str, Any] = raw["servers"]
    lines: list[str] = []
    notes: list[str] = list(raw.get("notes", []))

    # --- side by side -----------------------------------------------------------------------
    names = {
        "keel": "Keel",
        "keel_nolog": "Keel --no-log",
        "mlflow": "MLflow",
        "http_floor": "HTTP floor",
    }
    present = [k for k in names if k in servers]
    head = ["conns"]
    for key in present:
        head += [f"{names[key]} p50 / p99 ms", f"{names[key]} req/s"]
    pairs = [("mlflow", "keel", "MLflow"), ("http_floor", "keel", "floor")]
    pairs = [(other, k, short) for other, k, short in pairs if other in servers and k in servers]
    for _other, _, short in pairs:
        first = (
            f"{short} p50 {OVER} Keel p50" if short == "MLflow" else f"Keel p50 {OVER} floor p50"
        )
        head += [first, f"Keel req/s {OVER} {short} req/s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in conns:
        row = [c]
        for key in present:
            p50 = _ms(med(per_round(raw, key, c, "p50_us")))
            p99 = _ms(med(per_round(raw, key, c, "p99_us")))
            row += [f"{fmt(p50)} / {fmt(p99)}", fmt(med(per_round(raw, key, c, "rps")))]
        for other, keel, _short in pairs:
            if other == "mlflow":
                row.append(_x(ratio(raw, c, "p50_us", other, keel)[0]))
            else:
                row.append(_x(ratio(raw, c, "p50_us", keel, other)[0]))
            row.append(_x(ratio(raw, c, "rps", keel, other)[0]))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "Medians over rounds; each ratio is taken within a round, then its median is shown. "
        "Latencies are wrk's, which corrects for coordinated omission: one server stall of S ms "
        "adds samples as if requests had kept arriving at the measured rate, so a rare stall "
        "shows up in p99 the way a constant-rate client would feel it."
    )

    # --- targets ----------------------------------------------------------------------------
    lines += ["", "### Targets (Keel, from the issue)", ""]
    lines += ["| target | measured | result |", "|---|---|---|"]
    p50_c1 = _ms(med(per_round(raw, "keel", "1", "p50_us")))
    rps_c64 = med(per_round(raw, "keel", "64", "rps"))
    p99_c64 = _ms(med(per_round(raw, "keel", "64", "p99_us")))
    lines.append(
        f"| c=1 p50 <= {TARGET_C1_P50_MS} ms | {fmt(p50_c1, ' ms')} | "
        f"{_verdict(p50_c1 is not None and p50_c1 <= TARGET_C1_P50_MS, p50_c1)} |"
    )
    lines.append(
        f"| c=64 >= {TARGET_C64_RPS:,.0f} req/s | {fmt(rps_c64, ' req/s')} | "
        f"{_verdict(rps_c64 is not None and rps_c64 >= TARGET_C64_RPS, rps_c64)} |"
    )
    lines.append(
        f"| c=64 p99 <= {TARGET_C64_P99_MS:.0f} ms | {fmt(p99_c64, ' ms')} | "
        f"{_verdict(p99_c64 is not None and p99_c64 <= TARGET_C64_P99_MS, p99_c64)} |"
    )

    # --- in-process floor -------------------------------------------------------------------
    model = raw["model"]
    lines += [
        "",
        f"### In-process floor (1 row, {model['n_features']} features, {model['n_trees']} trees, "
        f"median of {raw['config']['floor_calls']} calls, pinned to CPU 0)",
        "",
        f"| path | p50 µs | p50 min{DASH}max over rounds | p99 µs |",
        "|---|---|---|---|",
    ]
    floor_rows = (
        ("booster_numpy", "`Booster.predict(numpy row)` — physical limit"),
        ("transform_row_predict", "`pipeline.transform_row(dict)` + `Booster.predict` — Keel"),
        ("handler", "server handler minus HTTP: orjson in, `predict_rows`, orjson out"),
        ("booster_pandas", "`Booster.predict(1-row pandas DataFrame)` — reference"),
    )
    for key, label in floor_rows:
        p50 = [r["floor"][key]["p50_us"] for r in raw["rounds"]]
        p99 = [r["floor"][key]["p99_us"] for r in raw["rounds"]]
        lines.append(
            f"| {label} | {fmt(med(p50))} | {spread(p50).strip(' ()') or '—'} | {fmt(med(p99))} |"
        )

    # --- detail -----------------------------------------------------------------------------
    lines += [
        "",
        "### Detail per server",
        "",
        f"| server | conns | p50 ms (min{DASH}max) | p99 ms | req/s (min{DASH}max) | "
        "server CPU µs/req | requests | non-2xx | socket errors | RSS MB | startup s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, info in servers.items():
        rss = med(server_field(raw, key, "rss_mb"))
        startup = med(server_field(raw, key, "startup_s"))
        for c in conns:
            p50 = [v / 1e3 for v in per_round(raw, key, c, "p50_us")]
            rps = per_round(raw, key, c, "rps")
            lines.append(
                f"| {info['label']} | {c} | {fmt(med(p50))}{spread(p50)} | "
                f"{fmt(_ms(med(per_round(raw, key, c, 'p99_us'))))} | "
                f"{fmt(med(rps))}{spread(rps)} | "
                f"{fmt(med(per_round(raw, key, c, 'server_cpu_us_per_req')))} | "
                f"{int(sum(per_round(raw, key, c, 'requests'))):,} | "
                f"{int(sum(per_round(raw, key, c, 'not_2xx')))} | "
                f"{int(sum(per_round(raw, key, c, 'errors')))} | {fmt(rss)} | {fmt(startup)} |"
            )
    lines.append("")
    lines.append(
        "requests / non-2xx / socket errors are summed over rounds; server CPU is user + system "
        "time of the server's process tree during the load divided by the requests answered; "
        "RSS is the whole process tree after the load (for MLflow: the `mlflow` CLI plus the "
        "uvicorn worker it starts); startup is process start to the first 200 on a real "
        "predict request."
    )

    # --- notes --------------------------------------------------------------------------------
    for rnd in raw["rounds"]:
        for key, rec in rnd["servers"].items():
            if "error" in rec:
                notes.append(f"round {rnd['round'] + 1}, {key}: {rec['error']}")
            for c, load in rec.get("loads", {}).items():
                if load.get("hit_count_bound"):
                    notes.append(
                        f"round {rnd['round'] + 1}, {key} c={c}: stopped by the request "
                        "count bound before the time bound"
                    )
    keel_logs = [
        (r["servers"]["keel"].get("prediction_log_lines"), _served(r["servers"]["keel"]))
        for r in raw["rounds"]
        if "keel" in r["servers"] and "loads" in r["servers"]["keel"]
    ]
    if keel_logs:
        written = sum(w or 0 for w, _ in keel_logs)
        served = sum(s for _, s in keel_logs)
        notes.append(
            f"Keel's prediction log was on: {written:,} lines written for {served:,} "
            "requests wrk counted as answered (the log also holds the readiness probe, the "
            "warm-up and requests still in flight when wrk stopped)"
            + ("" if written >= served else " — FEWER lines than answered requests: lost rows")
        )
    if "keel" in servers and "keel_nolog" in servers:
        parts = []
        for c in conns:
            on = _ms(med(per_round(raw, "keel", c, "p99_us")))
            off = _ms(med(per_round(raw, "keel_nolog", c, "p99_us")))
            parts.append(f"c={c}: {fmt(on)} ms on vs {fmt(off)} ms off")
        notes.append(
            "Cost of Keel's prediction log (same server with `--no-log`), p99: " + "; ".join(parts)
        )
    return "\n".join(lines), notes


def _served(rec: dict[str, Any]) -> int:
    return int(sum(load["requests"] - load["not_2xx"] for load in rec["loads"].values()))


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1e3


def _x(value: float | None) -> str:
    return "—" if value is None else f"{fmt(value)}{TIMES}"


def _verdict(ok: bool, value: float | None) -> str:
    if value is None:
        return "not measured"
    return "**PASS**" if ok else "**FAIL**"
