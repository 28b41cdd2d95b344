"""Statistics + 15 checks on 1M and 10M Adult rows: Keel vs Great Expectations vs pandera vs the
DuckDB floor, each tool in its own process; and Keel ingesting the 10M-row CSV.

usage: .venv/bin/python benchmarks/validation/bench.py   (or benchmarks/run.py --only validation)

Each runner (``run_<tool>.py``) is a separate process started by this harness: the process wall
clock (start to exit: interpreter, imports, reading the Parquet, validating) is measured here,
peak RSS comes from that child's rusage (os.wait4), and the runner itself reports its phase times
and which checks failed. Medians over rounds; the tool order rotates per round. Knobs (env):
``VALIDATION_SIZES`` (1m,10m), ``VALIDATION_ROUNDS_1M`` (5), ``VALIDATION_ROUNDS_10M`` (3),
``VALIDATION_TOOLS`` (keel,gx,pandera,floor,floor_stats), ``INGEST_ROUNDS`` (3, 0 = skip),
``VALIDATION_TIMEOUT`` (300 s per process), ``QUICK=1`` (1 round per size, 1 ingest).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH_DIR = HERE.parent
ROOT = BENCH_DIR.parent
WORK = BENCH_DIR / ".work" / "validation"
LOGS = WORK / "logs"
KEEL_PYTHON = Path(sys.executable)
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(BENCH_DIR / "serving"))

import make_data  # noqa: E402
import peers as serving_peers  # noqa: E402
from checks import CHECKS, EXPECTED_FAILING  # noqa: E402

VENVS = {
    "gx": serving_peers.VenvSpec(
        "gx",
        ("great_expectations==1.24.1", "pandas", "pyarrow"),
        "import great_expectations, pandas, pyarrow",
    ),
    "pandera": serving_peers.VenvSpec(
        "pandera",
        ("pandera==0.35.0", "pandas", "pyarrow"),
        "import pandera.pandas, pandas, pyarrow",
    ),
}
# tool -> (venv or None for Keel's, script, extra args); keel_cli runs `keel validate` itself
TOOLS: dict[str, tuple[str | None, str, tuple[str, ...]]] = {
    "keel": (None, "run_keel.py", ()),
    "keel_cli": (None, "", ()),
    "gx": ("gx", "run_gx.py", ()),
    "pandera": ("pandera", "run_pandera.py", ()),
    "floor": (None, "run_floor.py", ("checks",)),
    "floor_stats": (None, "run_floor.py", ("stats",)),
}
VERSION_PROBE = (
    "import json, importlib.metadata as m\n"
    "names = ['great_expectations', 'pandera', 'pandas', 'pyarrow', 'numpy', 'duckdb', 'keel']\n"
    "found = {}\n"
    "for n in names:\n"
    "    try: found[n] = m.version(n)\n"
    "    except m.PackageNotFoundError: pass\n"
    "print(json.dumps(found))\n"
)


@dataclass(frozen=True)
class Config:
    sizes: tuple[str, ...]
    rounds: dict[str, int]
    tools: tuple[str, ...]
    ingest_rounds: int
    timeout_s: float
    quick: bool

    @classmethod
    def from_env(cls) -> Config:
        quick = os.environ.get("QUICK", "") not in ("", "0")
        sizes = tuple(os.environ.get("VALIDATION_SIZES", "1m,10m").split(","))
        rounds = {
            "1m": int(os.environ.get("VALIDATION_ROUNDS_1M", "5")),
            "10m": int(os.environ.get("VALIDATION_ROUNDS_10M", "3")),
        }
        if quick:
            rounds = dict.fromkeys(rounds, 1)
        tools = tuple(os.environ.get("VALIDATION_TOOLS", ",".join(TOOLS)).split(","))
        unknown = [t for t in (*tools, *sizes) if t not in TOOLS and t not in make_data.SIZES]
        if unknown:
            raise SystemExit(f"unknown VALIDATION_TOOLS/VALIDATION_SIZES entries: {unknown}")
        ingest = int(os.environ.get("INGEST_ROUNDS", "1" if quick else "3"))
        timeout = float(os.environ.get("VALIDATION_TIMEOUT", "300"))
        return cls(sizes, rounds, tools, ingest, timeout, quick)


def _cli_result(stdout: str) -> dict[str, Any]:
    """``keel validate --format json`` output as a runner RESULT (no in-process phases)."""
    from keel_side import tally

    report = json.loads(stdout)
    results = tally(report["anomalies"], int(report["rows"]))
    failed = sorted(results.pop("failed"))
    results["api"] = "keel validate --schema schema.yaml --format json"
    version = subprocess.run(
        [str(KEEL_PYTHON), "-c", "import keel; print(keel.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.strip()
    return {
        "tool": "keel validate",
        "version": version,
        "rows": report["rows"],
        "phases_s": None,
        "failed": failed,
        "unexpected": results,
    }


def timed(command: list[str], name: str, timeout_s: float, *, cli: bool = False) -> dict[str, Any]:
    """Run one runner process: wall, peak RSS of that process, and its RESULT (or the error).

    With ``cli`` the process is ``keel validate``: exit 1 (blocking anomalies) is expected and
    its JSON report is the result.
    """
    LOGS.mkdir(parents=True, exist_ok=True)
    out_path, err_path = LOGS / f"{name}.out", LOGS / f"{name}.err"
    env = dict(os.environ, GX_ANALYTICS_ENABLED="False", PYTHONDONTWRITEBYTECODE="1")
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=out, stderr=err, env=env, cwd=ROOT, start_new_session=True
        )
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout_s:
                os.killpg(process.pid, signal.SIGKILL)  # the runner's own process group
                os.wait4(process.pid, 0)
                return {"error": f"ran past {timeout_s:.0f} s (killed)"}
            time.sleep(0.002)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text()
    lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    if process.returncode not in ((0, 1) if cli else (0,)) or not (lines or cli):
        tail = err_path.read_text(errors="replace")[-800:].strip()
        return {"error": f"exit {process.returncode}: {tail}"}
    try:
        result = _cli_result(stdout) if cli else json.loads(lines[-1].removeprefix("RESULT "))
    except (ValueError, KeyError) as exc:
        return {"error": f"unreadable output ({exc!r}): {stdout[-300:]}"}
    result["wall_s"] = wall
    result["rss_mb"] = usage.ru_maxrss / 1024
    return result


def prepare(config: Config) -> dict[str, Any]:
    """Data files and peer venvs; a peer whose venv cannot be built is left out (noted)."""
    from keel_side import write_schema_file

    data = {size: {k: str(v) for k, v in make_data.ensure(size).items()} for size in config.sizes}
    schema = str(write_schema_file(WORK / "schema.yaml"))
    pythons: dict[str, str] = {"keel": str(KEEL_PYTHON)}
    notes: dict[str, str] = {}
    for name, spec in VENVS.items():
        if not any(TOOLS[t][0] == name for t in config.tools):
            continue
        serving_peers.SPECS.setdefault(name, spec)
        status = serving_peers.ensure_venv(name)
        notes[name] = status.note
        if status.python is not None:
            pythons[name] = str(status.python)
    versions = {}
    for name, python in pythons.items():
        probe = subprocess.run(
            [python, "-c", VERSION_PROBE], capture_output=True, text=True, timeout=120, check=False
        )
        versions[name] = json.loads(probe.stdout) if probe.returncode == 0 else {}
    return {
        "data": data,
        "schema": schema,
        "pythons": pythons,
        "venv_notes": notes,
        "versions": versions,
    }


def one_round(size: str, index: int, config: Config, env: dict[str, Any]) -> dict[str, Any]:
    """Every tool once on one size, in an order rotated by the round index."""
    parquet = env["data"][size]["parquet"]
    tools = [t for t in config.tools if (TOOLS[t][0] or "keel") in env["pythons"]]
    shift = index % len(tools) if tools else 0
    order = tools[shift:] + tools[:shift]
    result: dict[str, Any] = {"loadavg": os.getloadavg()[0], "order": order, "tools": {}}
    for tool in order:
        venv, script, args = TOOLS[tool]
        python = env["pythons"][venv or "keel"]
        command = [python, str(HERE / script), parquet, *args]
        if tool == "keel_cli":
            keel = KEEL_PYTHON.parent / "keel"
            command = [str(keel), "validate", parquet, "--schema", env["schema"], "-f", "json"]
        name = f"{tool}-{size}-{index}"
        result["tools"][tool] = timed(command, name, config.timeout_s, cli=tool == "keel_cli")
    return result


def ingest_round(index: int, config: Config, env: dict[str, Any]) -> dict[str, Any]:
    """Keel ingesting the largest CSV into a snapshot, the DuckDB floor doing the same, and
    ``keel validate`` on the CSV itself (streamed, no snapshot)."""
    size = max(
        (s for s in config.sizes if s in make_data.CSV_SIZES), key=lambda s: make_data.SIZES[s]
    )
    csv = env["data"][size]["csv"]
    outcome: dict[str, Any] = {"size": size, "loadavg": os.getloadavg()[0], "tools": {}}
    tools = ("keel", "floor", "validate_csv")
    for tool in tools[index % 3 :] + tools[: index % 3]:
        name = f"ingest-{tool}-{size}-{index}"
        if tool == "validate_csv":
            keel = KEEL_PYTHON.parent / "keel"
            command = [str(keel), "validate", csv, "--schema", env["schema"], "-f", "json"]
            outcome["tools"][tool] = timed(command, name, config.timeout_s, cli=True)
            continue
        work = WORK / f"ingest-{tool}"
        command = [str(KEEL_PYTHON), str(HERE / "run_ingest.py"), csv, str(work), tool]
        outcome["tools"][tool] = timed(command, name, config.timeout_s)
        shutil.rmtree(work, ignore_errors=True)
    return outcome


def run(config: Config | None = None) -> dict[str, Any]:
    """All rounds, raw (JSON-able)."""
    config = config or Config.from_env()
    started = time.time()
    env = prepare(config)
    raw: dict[str, Any] = {"config": asdict(config), **env, "rounds": {}, "ingest": []}
    raw["checks"] = [list(c[:2]) for c in CHECKS]
    raw["expected_failing"] = EXPECTED_FAILING
    for size in config.sizes:
        raw["rounds"][size] = []
        for index in range(config.rounds.get(size, 1)):
            raw["rounds"][size].append(one_round(size, index, config, env))
            print(f"[validation] {size} round {index + 1} done", flush=True)
    if any(s in make_data.CSV_SIZES for s in config.sizes):
        for index in range(config.ingest_rounds):
            raw["ingest"].append(ingest_round(index, config, env))
            print(f"[validation] ingest round {index + 1} done", flush=True)
    raw["started"], raw["finished"] = started, time.time()
    return raw


if __name__ == "__main__":
    from render import render

    outcome = run()
    target = WORK / "raw.json"
    target.write_text(json.dumps(outcome, indent=1))
    print(render(outcome))
    print(f"raw: {target}")
