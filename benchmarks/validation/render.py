"""The RESULTS.md section of the validation benchmark, from its raw JSON."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checks import CHECKS, DEFECTS

NAMES = {
    "keel": "Keel `validate_data` (statistics + checks)",
    "keel_cli": "`keel validate --schema schema.yaml -f json` (CLI, same work)",
    "gx": "Great Expectations (pandas)",
    "pandera": "pandera (pandas backend)",
    "floor": "DuckDB floor: one SELECT, checks only",
    "floor_stats": "DuckDB floor: one SELECT, checks + statistics",
}
GB = 1024.0


def work_s(result: dict[str, Any]) -> float:
    """In-process time after the data is read: setup + statistics + checks."""
    return sum(v for k, v in result["phases_s"].items() if k not in ("import", "read"))


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _spread(values: list[float]) -> str:
    """Median (min to max), or the single value."""
    if not values:
        return "—"
    middle = _fmt(statistics.median(values))
    return middle if len(values) == 1 else f"{middle} ({_fmt(min(values))}–{_fmt(max(values))})"


class Size:
    """The rounds of one size, with medians and per-round ratios."""

    def __init__(self, rounds: list[dict[str, Any]]) -> None:
        self.rounds = rounds
        tools = [t for t in NAMES if any(t in r["tools"] for r in rounds)]
        self.ok = {
            t: [r["tools"][t] for r in rounds if "error" not in r["tools"].get(t, {"error": 1})]
            for t in tools
        }
        self.errors = {
            t: [r["tools"][t]["error"] for r in rounds if "error" in r["tools"].get(t, {})]
            for t in tools
        }

    def values(self, tool: str, field: str) -> list[float]:
        runs = self.ok.get(tool, [])
        if field == "work_s":
            return [work_s(r) for r in runs if r["phases_s"] is not None]
        return [r[field] for r in runs]

    def med(self, tool: str, field: str) -> float | None:
        values = self.values(tool, field)
        return statistics.median(values) if values else None

    def cell(self, tool: str, field: str) -> str:
        return _spread(self.values(tool, field))

    def floor_failing(self) -> set[str] | None:
        """The failing checks the floor found (first round it ran), if it ran."""
        runs = self.ok.get("floor") or self.ok.get("floor_stats") or []
        return set(runs[0]["failed"]) if runs else None

    def ratio(self, num: str, den: str, field: str) -> float | None:
        """Median over rounds of num/den, both measured in the same round."""
        pairs = [
            r["tools"][num][field] / r["tools"][den][field]
            if field != "work_s"
            else work_s(r["tools"][num]) / work_s(r["tools"][den])
            for r in self.rounds
            if "error" not in r["tools"].get(num, {"error": 1})
            and "error" not in r["tools"].get(den, {"error": 1})
            and (field != "work_s" or r["tools"][num]["phases_s"] is not None)
        ]
        return statistics.median(pairs) if pairs else None


def _loads(rounds: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['loadavg']:.2f}" for r in rounds)


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}×" if value >= 10 else f"{value:.2f}×"


def _table(size: str, data: Size, designed: set[str]) -> list[str]:
    expected = data.floor_failing() or designed
    reference = "the floor" if data.floor_failing() is not None else "designed"
    lines = [
        f"**{size.upper()} rows** ({len(data.rounds)} round(s); 1-minute load average at the "
        f"start of each: {_loads(data.rounds)})",
        "",
        "| tool | process wall s | in-process: import / read / validate s | peak RSS MB "
        "| wall ÷ Keel wall | validate ÷ Keel validate | failing checks |",
        "|---|---|---|---|---|---|---|",
    ]
    for tool in data.ok:
        if not data.ok[tool]:
            lines.append(f"| {NAMES[tool]} | failed: {data.errors[tool][0][:200]} | | | | | |")
            continue
        failed = [set(r["failed"]) for r in data.ok[tool]]
        same = all(f == expected for f in failed)
        agree = f"same {len(expected)} as {reference}" if same else "DIFFERENT: "
        if not same:
            agree += ", ".join(sorted(next(f for f in failed if f != expected)))
        phases = " / ".join(
            _fmt(statistics.median(r["phases_s"].get(p, 0.0) for r in data.ok[tool]))
            if data.ok[tool][0]["phases_s"] is not None
            else "—"
            for p in ("import", "read")
        )
        lines.append(
            f"| {NAMES[tool]} | {data.cell(tool, 'wall_s')} | {phases} / "
            f"{data.cell(tool, 'work_s')} | {data.cell(tool, 'rss_mb')} | "
            f"{_ratio(data.ratio(tool, 'keel', 'wall_s'))} | "
            f"{_ratio(data.ratio(tool, 'keel', 'work_s'))} | {agree} |"
        )
    floor = data.floor_failing()
    if floor is not None:
        match = "as designed" if floor == designed else f"designed: {', '.join(sorted(designed))}"
        lines += ["", f"Failing checks found by the floor ({match}): {', '.join(sorted(floor))}."]
    return [*lines, "", *_counts(data, expected | designed)]


def _counts(data: Size, failing: set[str]) -> list[str]:
    """Unexpected rows per failing check and tool, from each tool's first good round."""
    tools = [t for t in data.ok if data.ok[t]]
    if not tools:
        return []
    short = {
        "keel": "Keel",
        "keel_cli": "keel CLI",
        "gx": "GX",
        "pandera": "pandera",
        "floor": "floor",
    }
    shown = [t for t in tools if t in short]
    lines = [
        "| failing check: unexpected rows | " + " | ".join(short[t] for t in shown) + " |",
        "|---|" + "---|" * len(shown),
    ]
    for ident in sorted(failing):
        cells = []
        for tool in shown:
            value = data.ok[tool][0]["unexpected"].get(ident)
            cells.append("—" if value is None else f"{value:,}")
        lines.append(f"| {ident} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _targets(sizes: dict[str, Size], ingest: list[dict[str, Any]]) -> list[str]:
    rows: list[tuple[str, str, bool | None]] = []

    def add(label: str, value: float | None, ok: bool | None, unit: str) -> None:
        shown = "not measured" if value is None else f"{_fmt(value)}{unit}"
        rows.append((label, shown, None if value is None else ok))

    one, ten = sizes.get("1m"), sizes.get("10m")
    if one is not None:
        wall, work = one.med("keel", "wall_s"), one.med("keel", "work_s")
        speedup = one.ratio("gx", "keel", "wall_s")
        add(
            "1M rows: whole process <= 0.5 s (imports, read, statistics, checks)",
            wall,
            wall is not None and wall <= 0.5,
            " s",
        )
        add(
            "1M rows: in-process statistics + checks <= 0.5 s (after the read)",
            work,
            work is not None and work <= 0.5,
            " s",
        )
        add(
            "1M rows: >= 10× faster than Great Expectations (process wall)",
            speedup,
            speedup is not None and speedup >= 10,
            "×",
        )
        inner = one.ratio("gx", "keel", "work_s")
        add(
            "1M rows: >= 10× faster than Great Expectations (in-process validate)",
            inner,
            inner is not None and inner >= 10,
            "×",
        )
    if ten is not None:
        wall, rss = ten.med("keel", "wall_s"), ten.med("keel", "rss_mb")
        add("10M rows: whole process <= 3 s", wall, wall is not None and wall <= 3, " s")
        add("10M rows: peak RSS <= 1 GB", rss, rss is not None and rss <= GB, " MB")
    done = [r["tools"]["keel"] for r in ingest if "error" not in r["tools"].get("keel", {"e": 1})]
    if done:
        rss = statistics.median(r["rss_mb"] for r in done)
        size = ingest[0]["size"].upper()
        add(f"ingest {size}-row CSV into a snapshot: peak RSS <= 1 GB", rss, rss <= GB, " MB")
    lines = ["| target (issue 3) | Keel, median | result |", "|---|---|---|"]
    for label, shown, ok in rows:
        verdict = "—" if ok is None else "**PASS**" if ok else "**FAIL**"
        lines.append(f"| {label} | {shown} | {verdict} |")
    return lines


def _ingest(ingest: list[dict[str, Any]]) -> list[str]:
    if not ingest:
        return []
    lines = [
        f"**Ingest** of the {ingest[0]['size'].upper()}-row CSV into a Parquet snapshot "
        f"({len(ingest)} round(s); load average {_loads(ingest)}). Keel: `keel.data.ingest` on a "
        "throwaway project whose `data.train` is the CSV (streaming DuckDB scan, cleaning, "
        "bad-row quarantine, content-addressed artifact). Floor: one DuckDB `COPY (SELECT * "
        "FROM read_csv(...)) TO '...parquet'`. Also `keel validate` on the CSV itself, with the "
        "same schema.yaml: over 64 MiB a CSV is streamed in 256K-row batches (statistics, "
        "row hashes and the 15 checks), no snapshot written.",
        "",
        "| ingest | process wall s | peak RSS MB | rows | snapshot MB |",
        "|---|---|---|---|---|",
    ]
    tools = (
        ("keel", "Keel"),
        ("floor", "DuckDB floor"),
        ("validate_csv", "`keel validate` on the CSV"),
    )
    for tool, label in tools:
        done = [r["tools"][tool] for r in ingest if "error" not in r["tools"].get(tool, {"e": 1})]
        if not done:
            errors = [r["tools"].get(tool, {}).get("error", "not run") for r in ingest]
            lines.append(f"| {label} | failed: {str(errors[0])[:200]} | | | |")
            continue
        walls, rss = [r["wall_s"] for r in done], [r["rss_mb"] for r in done]
        api = f"`{done[0]['unexpected'].get('api', '?')}`"
        if tool == "validate_csv":
            api = "failing checks: " + (", ".join(done[0]["failed"]) or "none")
        lines.append(
            f"| {label} ({api}) | {_spread(walls)} | {_spread(rss)} | {done[0]['rows']:,} | "
            f"{done[0]['unexpected'].get('snapshot_mb', '—')} |"
        )
    return [*lines, ""]


def _versions(raw: dict[str, Any]) -> str:
    parts = []
    for venv, found in raw.get("versions", {}).items():
        shown = ", ".join(f"{k} {v}" for k, v in found.items())
        parts.append(f"{venv} venv: {shown}" if venv != "keel" else f"Keel's venv: {shown}")
    return "; ".join(parts)


def _keel_facts(raw: dict[str, Any]) -> tuple[str, list[str]]:
    """The Keel API the runner used, and Keel's anomalies beyond the 15 checks."""
    runs = [
        r["tools"]["keel"]
        for rounds in raw["rounds"].values()
        for r in rounds
        if "error" not in r["tools"].get("keel", {"error": 1})
    ]
    api = runs[0]["unexpected"].get("api", "?") if runs else "?"
    extra = sorted({e for run in runs for e in run["unexpected"].get("extra", [])})
    return api, extra


def _method(raw: dict[str, Any]) -> str:
    api, extra = _keel_facts(raw)
    counts = {k: sum(1 for c in CHECKS if c[0] == k) for k in sorted({c[0] for c in CHECKS})}
    defects = ", ".join(f"{col} = {val!r} in {frac:.2%} of rows" for frac, col, val in DEFECTS)
    return (
        "Method. The real rows of `examples/adult/data/adult.data` (read as Keel reads them: "
        "`?` is missing) replicated to 1M and 10M rows, with defects injected "
        f"({defects}), written to Parquet (and the 10M rows to CSV) under "
        "`benchmarks/.work/validation/` (`benchmarks/validation/make_data.py`). The same "
        f"{len(CHECKS)} checks (`benchmarks/validation/checks.py`: "
        f"{', '.join(f'{n} {k}' for k, n in counts.items())}) for every tool; nulls do not count "
        "against range and set checks. Each tool runs as its own process reading the same "
        "Parquet file: **process wall** is start to exit measured by the harness (interpreter, "
        "imports, reading, validating); **validate** is the tool's in-process time after the "
        "read (GX: context + suite + `run`; Keel: `validate_data`, which also computes the "
        "per-column statistics: quantiles from exact value counts or KLL, HLL distinct, "
        "histograms, top-k; it streams the Parquet file, one pass for statistics and row "
        "hashes); **peak RSS** "
        "is that process's maximum resident set (`os.wait4`). Keel runs twice: through the "
        f"Python API (`benchmarks/validation/run_keel.py`, `{api}`, the checks as a Keel "
        "Schema) and as a user would, `keel validate FILE --schema schema.yaml -f json` (the "
        "same schema written to YAML). Great Expectations: ephemeral context, pandas "
        "datasource, default result format; pandera: lazy validation so every failing check "
        "is collected; both read with `pandas.read_parquet` (pandas 3 defaults). The floor is "
        "one hand-written DuckDB SELECT straight over the Parquet file; its `+ statistics` "
        "variant adds count/min/max/mean/std/approximate quantiles/approximate distinct per "
        "numeric column and exact value counts per string column. Keel also reports anomalies "
        f"beyond the 15 ({', '.join(extra) or 'none'}"
        f"{': the replicated rows repeat by construction' if 'duplicate_rows' in extra else ''}"
        "). Ratios are taken within a round, then the median is shown; tool order rotates per "
        "round."
    )


def render(raw: dict[str, Any]) -> str:
    """The section, Markdown."""
    sizes = {size: Size(rounds) for size, rounds in raw["rounds"].items() if rounds}
    expected = set(raw["expected_failing"])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(raw["started"]))
    minutes = (raw["finished"] - raw["started"]) / 60
    command = raw.get("command", ".venv/bin/python benchmarks/run.py --only validation")
    lines = [
        "## Validation: statistics + 15 checks on 1M and 10M Adult rows",
        "",
        f"Run `{command}` on {when}, {minutes:.0f} min.",
        "",
        _method(raw),
        "",
    ]
    for size, data in sizes.items():
        lines += _table(size, data, expected)
    lines += _ingest(raw.get("ingest", []))
    lines += ["### Targets", "", *_targets(sizes, raw.get("ingest", [])), ""]
    lines += [f"Versions: {_versions(raw)}.", ""]
    notes = [f"{k} venv: {v}" for k, v in raw.get("venv_notes", {}).items()]
    if raw["config"].get("quick"):
        notes.insert(0, "QUICK smoke run (1 round per size): not a result")
    if notes:
        lines += ["Notes: " + "; ".join(notes) + ".", ""]
    return "\n".join(lines).rstrip() + "\n"
