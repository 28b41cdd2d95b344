"""Run every Keel benchmark and rewrite benchmarks/RESULTS.md (what ``make bench`` runs).

usage: .venv/bin/python benchmarks/run.py [--only serving,pipeline,validation]
       .venv/bin/python benchmarks/run.py --render [RAW.json]   (rewrite RESULTS.md from raw runs)

Benchmarks: serving (``benchmarks/serving/``), the pipeline (``benchmarks/pipeline/``: ``keel run``
fresh and cached against a hand-written script), and validation (``benchmarks/validation/``:
statistics + 15 checks on 1M/10M rows, Keel vs Great Expectations vs pandera vs a DuckDB floor,
and the 10M-row CSV ingest), and the feature store (``benchmarks/features/``: online lookups and
the point-in-time join, Keel vs Feast vs a DuckDB floor; knobs ``FEATURES_*`` in its bench.py),
and training (``benchmarks/training/``: tracking 100,000 runs vs MLflow, tracked fit vs bare
LightGBM, and the parts search/Ray add; knobs in each part's module).
``--only`` (or ``BENCHMARKS=validation``) runs some of them; every
run stores each benchmark's raw JSON under ``benchmarks/.work/results/<name>-<stamp>.json`` and
RESULTS.md is rendered from the latest raw of each, so the other sections keep their last full
run. Environment knobs:

- ``ROUNDS`` (3): rounds; every figure is a median over rounds.
- ``DURATION`` (10): seconds of load per server and connection count.
- ``CONNS`` (1,8,64): wrk connection counts.
- ``WRK_MAX_REQ`` (2000000): count bound per wrk run (the time bound is DURATION).
- ``SERVERS`` (keel,keel_nolog,mlflow,http_floor): which servers; ``keel_nolog`` is
  ``keel serve --no-log``, a diagnostic that prices the prediction log.
- ``QUICK=1``: smoke check, 1 round of 3 s; written to ``benchmarks/.work/RESULTS-quick.md``
  so that it never replaces the real RESULTS.md.
- validation: ``VALIDATION_SIZES``, ``VALIDATION_ROUNDS_1M`` (5), ``VALIDATION_ROUNDS_10M`` (3),
  ``VALIDATION_TOOLS``, ``INGEST_ROUNDS`` (3), ``VALIDATION_TIMEOUT`` (see its bench.py).

Run nothing else heavy meanwhile: servers use CPU 0, wrk CPU 1 (a 2-core machine).
Raw per-round JSON goes to ``benchmarks/.work/results/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR / "serving"))
sys.path.insert(0, str(BENCH_DIR))

import bench  # noqa: E402
import report  # noqa: E402
from training import bench as training_bench  # noqa: E402
from validation import bench as validation_bench  # noqa: E402
from validation import render as validation_render  # noqa: E402

from features import bench as features_bench  # noqa: E402
from features import render as features_render  # noqa: E402
from pipeline import bench as pipeline_bench  # noqa: E402

BENCHMARKS = ("serving", "pipeline", "validation", "features", "training")
RESULTS_DIR = BENCH_DIR / ".work" / "results"

KNOBS = (
    "QUICK",
    "ROUNDS",
    "DURATION",
    "CONNS",
    "WRK_MAX_REQ",
    "SERVERS",
    "FLOOR_CALLS",
    "VALIDATION_SIZES",
    "VALIDATION_ROUNDS_1M",
    "VALIDATION_ROUNDS_10M",
    "VALIDATION_TOOLS",
    "INGEST_ROUNDS",
)
KEEL_PACKAGES = (
    "keel",
    "lightgbm",
    "numpy",
    "pandas",
    "pyarrow",
    "orjson",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httptools",
)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the benchmarks' finally blocks


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        mem_kb = int(handle.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(raw: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in KEEL_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    try:
        probe = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        banner = (probe.stdout + probe.stderr).split("\n", 1)[0]  # "wrk 4.1.0 [epoll] Copyright"
        found["wrk"] = banner.split(" Copyright", 1)[0].removeprefix("wrk ").strip()
    except FileNotFoundError:
        found["wrk"] = "not installed"
    mlflow = raw.get("mlflow")
    if mlflow:
        for name in ("mlflow", "lightgbm", "pandas"):
            found[f"{name} (MLflow venv)"] = mlflow[name]
    return found


def git_state() -> dict[str, str]:
    """Commit of the Keel checkout and a hash of uncommitted changes under src/ (to spot edits)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=BENCH_DIR.parent, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src")
    diff = git("diff", "HEAD", "--", "src")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "src_dirty": "yes" if dirty else "no",
        "src_diff_sha256": hashlib.sha256((diff + dirty).encode()).hexdigest()[:12]
        if dirty
        else "",
        "src_mtime": max(
            (p.stat().st_mtime for p in (BENCH_DIR.parent / "src").rglob("*.py")), default=0.0
        ).__repr__(),
    }


def command(only: list[str] | None = None) -> str:
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in KNOBS if k in os.environ)
    args = f" --only {','.join(only)}" if only and list(only) != list(BENCHMARKS) else ""
    return (env + " " if env else "") + ".venv/bin/python benchmarks/run.py" + args


def _serving_section(raw: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The serving section's lines and its notes."""
    section, notes = report.render(raw)
    cfg = raw["config"]
    loads = [r["loadavg"] for r in raw["rounds"]]
    notes.append(
        "The machine is shared with other agents: 1-minute load average at the start of each "
        f"serving round {', '.join(f'{x:.2f}' for x in loads)} (a quiet 2-core machine sits "
        "near 0; the benchmark itself adds about 2 while loading). Expect some noise; the "
        "rounds' spread (min to max) is in the detail table."
    )
    if cfg["quick"]:
        notes.insert(0, "QUICK smoke run (1 round, 3 s per level): not a result.")
    lines = [
        "## Serving: one 1-row request per call, UCI Adult LightGBM model",
        "",
        "Method. `keel init --example adult` + `keel run` in a fresh project; the registered "
        f"model ({raw['model']['n_trees']} trees, {raw['model']['n_features']} features after "
        "Keel's transform) is served by: (a) `keel serve` as shipped, prediction log ON; "
        "(b) `mlflow models serve --env-manager local -w 1` on THE SAME booster (exported with "
        "`model_to_string`, logged with `mlflow.lightgbm.log_model` to a local file store); "
        "(c) a bare ASGI app on uvicorn (uvloop, httptools) answering a constant: the HTTP "
        "floor; and, as a diagnostic, (d) `keel serve --no-log`. Each server is pinned to "
        "CPU 0 (`taskset`, one worker); wrk (one thread) is "
        f"pinned to CPU 1 and runs {cfg['duration_s']} s per connection count "
        f"({', '.join(map(str, cfg['conns']))}) after a {cfg['warmup_s']} s warm-up, bounded "
        f"in count too ({cfg['max_requests']:,} responses). Each server must first answer a "
        "real request with 200 and the in-process probability. "
        f"{cfg['rounds']} round(s), server order rotated per round; 127.0.0.1 only; servers "
        "stopped by process group. MLflow's request carries the already-transformed "
        f"{raw['model']['n_features']}-column feature vector (`dataframe_split`), so MLflow "
        "skips feature transformation: a small advantage to MLflow. Keel receives the raw "
        "14-field record and validates and transforms it. MLflow 3.17 refuses its file store "
        "unless `MLFLOW_ALLOW_FILE_STORE=true`, which is set for the export and the server. "
        "Logging stays at each server's default: MLflow's access log on; Keel's and the "
        "floor's access logs off.",
        "",
        section,
        "",
    ]
    return lines, notes


def _provenance(name: str, raw: dict[str, Any]) -> tuple[str, str | None]:
    """One header line for a benchmark's raw run, and a note if src/ changed while it ran."""
    git = raw.get("git", {})
    start, end = git.get("start", {}), git.get("end", {})
    source = f"commit {start.get('commit', '?')}"
    source += " with uncommitted changes in src/" if start.get("src_dirty") == "yes" else ""
    when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(raw["started"]))
    minutes = (raw["finished"] - raw["started"]) / 60
    line = (
        f"- {name}: `{raw.get('command') or command()}` on {when}, {minutes:.0f} min; "
        f"Keel source {source}"
    )
    changed = None
    if start and end and start != end:
        changed = f"{name}: src/ changed while the benchmark ran (others edit it concurrently)."
    return line, changed


SECTION_TITLES = {
    "serving": "## Serving",
    "pipeline": "## Pipeline",
    "validation": "## Validation",
    "features": "## Feature store",
    "training": "## Training",
}


def previous_sections(path: Path) -> dict[str, list[str]]:
    """The sections of an existing RESULTS.md by benchmark (and ``notes``: its note bullets)."""
    if not path.exists():
        return {}
    blocks: dict[str, list[str]] = {}
    current: str | None = None
    sub: str | None = None  # a ### subsection of a generated section, kept by its title
    for line in path.read_text().splitlines():
        for name in BENCHMARKS:
            if current is None and line.startswith(f"- {name}: "):
                blocks[f"header:{name}"] = [line]
        if line.startswith("- keel ") and current == "machine":
            blocks["versions"] = [line]
        if line.startswith("## "):
            sub = None
            titled = (n for n, t in SECTION_TITLES.items() if line.startswith(t))
            current = next(titled, "notes" if line == "## Notes" else None)
            if line == "## Machine and versions":
                current = "machine"
                continue
            if current is None and not line.startswith("# "):
                current = f"extra:{line}"  # measured by hand (a script of its own): kept as is
            if current and current != "machine":
                blocks[current] = []
                if current == "notes":
                    continue
        elif line.startswith("### ") and current in BENCHMARKS:
            sub = f"sub:{current}:{line}"
            blocks[sub] = []
        if current == "notes" and not line.startswith("- "):
            continue
        if current and current != "machine":
            blocks[current].append(line)
            if sub is not None:
                blocks[sub].append(line)
    return blocks


def _kept_subsections(name: str, rendered: list[str], previous: dict[str, list[str]]) -> list[str]:
    """The ### subsections of a section's previous text that its renderer does not write."""
    titles = {p for line in rendered for p in line.splitlines() if p.startswith("### ")}
    kept: list[str] = []
    for key, lines in previous.items():
        if key.startswith(f"sub:{name}:") and lines and lines[0] not in titles:
            kept += [*lines, ""] if lines[-1:] != [""] else lines
    return kept


def _generated_note(note: str) -> bool:
    return note.startswith("- Not run yet") or any(
        note.startswith(f"- {n}: src/ changed") for n in BENCHMARKS
    )


def _sections(
    raws: dict[str, dict[str, Any]], previous: dict[str, list[str]]
) -> tuple[list[str], list[str], list[str]]:
    """Body lines, header lines and notes for every benchmark, raw-rendered or kept."""
    notes: list[str] = []
    body: list[str] = []
    header: list[str] = []
    for name in BENCHMARKS:
        raw = raws.get(name)
        if raw is None:
            if name in previous:
                body += [*previous[name], ""] if previous[name][-1:] != [""] else previous[name]
                header += previous.get(f"header:{name}") or [
                    f"- {name}: section kept from the previous RESULTS.md (no raw run of it "
                    "in benchmarks/.work/results/)"
                ]
                if name == "serving":
                    notes += [n[2:] for n in previous.get("notes", []) if not _generated_note(n)]
            else:
                notes.append(f"Not run yet (no raw results): {name}.")
            continue
        if name == "serving":
            lines, serving_notes = _serving_section(raw)
            body += lines
            notes = serving_notes + notes
        elif name == "pipeline":
            body += [pipeline_bench.render(raw), ""]
        elif name == "features":
            body += [features_render.render(raw).rstrip("\n"), ""]
        elif name == "training":
            body += [training_bench.render(raw).rstrip("\n"), ""]
        else:
            body += [validation_render.render(raw).rstrip("\n"), ""]
        body += _kept_subsections(name, body, previous)
        line, changed = _provenance(name, raw)
        header.append(line)
        notes += [changed] if changed else []
    for key, lines in previous.items():
        if key.startswith("extra:"):
            body += [*lines, ""] if lines[-1:] != [""] else lines
    return body, header, notes


def write_results(raws: dict[str, dict[str, Any]], path: Path) -> None:
    """Render RESULTS.md from the raw run of each benchmark.

    A benchmark without a raw run keeps its section from the RESULTS.md already at ``path`` (a
    fresh checkout has RESULTS.md but no raw JSON), or is listed as not run.
    """
    previous = previous_sections(path)
    body, header, notes = _sections(raws, previous)
    mach = next((r["machine"] for r in raws.values() if "machine" in r), None) or machine()
    out = [
        "# Keel benchmarks",
        "",
        "Generated by `.venv/bin/python benchmarks/run.py` (`make bench` runs every benchmark "
        "with the defaults); each section comes from the latest run of its benchmark:",
        "",
        *header,
        "",
        "## Machine and versions",
        "",
        f"- {mach['nproc']} cores ({mach['cpu']}), {mach['memory_gb']} GB RAM, "
        f"Linux {mach['kernel']}, Python {mach['python']}",
        *(
            previous.get("versions", [])
            if "serving" not in raws and "versions" in previous
            else [
                "- " + ", ".join(f"{k} {v}" for k, v in versions(raws.get("serving", {})).items())
            ]
        ),
        "",
        *body,
        *(["## Notes", "", *[f"- {n}" for n in notes], ""] if notes else []),
    ]
    path.write_text("\n".join(out))


def _is_quick(raw: dict[str, Any]) -> bool:
    return bool(raw.get("quick", raw.get("config", {}).get("quick", False)))


def _kind(raw: dict[str, Any]) -> str:
    if raw.get("benchmark") in ("features", "training"):
        return str(raw["benchmark"])
    if "expected_failing" in raw:
        return "validation"
    return "serving" if "model" in raw else "pipeline"


def latest(name: str, *, quick: bool) -> dict[str, Any] | None:
    """The newest raw run of a benchmark (quick runs only count for a quick rendering).

    Older serving files also carry the pipeline's rounds under ``pipeline``.
    """
    found: list[dict[str, Any]] = []
    prefixes = ("serving", "pipeline") if name == "pipeline" else (name,)
    for prefix in prefixes:
        for file in RESULTS_DIR.glob(f"{prefix}-*.json"):
            raw = json.loads(file.read_text())
            raw.setdefault("started", file.stat().st_mtime)
            raw.setdefault("finished", raw["started"])
            if prefix == "serving" and name == "pipeline":
                if "pipeline" not in raw:
                    continue
                keep = ("started", "finished", "command", "git", "machine", "config")
                raw = {**raw["pipeline"], **{k: raw[k] for k in keep if k in raw}}
            if quick or not _is_quick(raw):
                found.append(raw)
    return max(found, key=lambda r: float(r["started"]), default=None)


def render_latest(quick: bool, given: dict[str, Any] | None = None) -> Path:
    """Rewrite RESULTS.md (or the quick one) from the latest raw run of every benchmark."""
    raws = {name: raw for name in BENCHMARKS if (raw := latest(name, quick=quick)) is not None}
    if given is not None:
        raws[_kind(given)] = given
    target = BENCH_DIR / ".work" / "RESULTS-quick.md" if quick else BENCH_DIR / "RESULTS.md"
    write_results(raws, target)
    return target


def _selection(argv: list[str]) -> list[str]:
    chosen = os.environ.get("BENCHMARKS", ",".join(BENCHMARKS))
    if argv[:1] == ["--only"] and len(argv) > 1:
        chosen = argv[1]
    names = [n.strip() for n in chosen.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        choices = ", ".join(BENCHMARKS)
        print(f"unknown benchmark(s) {unknown}; choose from {choices}", file=sys.stderr)
        raise SystemExit(2)
    return names


def run_one(name: str, only: list[str]) -> dict[str, Any]:
    """Run one benchmark; its raw result with provenance."""
    started, git_start = time.time(), git_state()
    config = bench.Config.from_env()
    if name == "serving":
        raw = bench.run(config)
    elif name == "pipeline":
        raw = pipeline_bench.run(1 if config.quick else config.rounds)
        raw["quick"] = config.quick
    elif name == "features":
        raw = features_bench.run()
    elif name == "training":
        raw = training_bench.run(config.quick)
    else:
        raw = validation_bench.run()
    raw["git"] = {"start": git_start, "end": git_state()}
    raw["started"], raw["finished"] = started, time.time()
    raw["machine"] = machine()
    raw["command"] = command(only)
    return raw


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    if sys.argv[1:2] == ["--render"]:
        given = json.loads(Path(sys.argv[2]).read_text()) if len(sys.argv) > 2 else None
        quick = _is_quick(given) if given is not None else False
        print(f"wrote {render_latest(quick, given)}")
        return 0
    only = _selection(sys.argv[1:])
    quick = os.environ.get("QUICK", "") not in ("", "0")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for name in only:
        raw = run_one(name, only)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(raw["started"]))
        (RESULTS_DIR / f"{name}-{stamp}.json").write_text(json.dumps(raw, indent=1))
    print(f"wrote {render_latest(quick)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
