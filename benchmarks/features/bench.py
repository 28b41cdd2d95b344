"""Feature store benchmark: online lookups and the point-in-time join, Keel vs Feast vs a floor.

usage: .venv/bin/python benchmarks/features/bench.py   (or benchmarks/run.py --only features)

Every measured tool runs in its own process started here (Feast from its venv
``benchmarks/.peers/feast``, created with ``pip install 'feast[redis]'`` when missing); peak RSS
is that child's rusage (os.wait4). Same data for all (feature_data.py).

- Online, in-process: 1 entity x 10 and x 100 features, sequential calls after a warm-up,
  Keel (SQLite, Redis) and Feast (SQLite, Redis online stores), each after materializing the
  same 10,000-entity Parquet view.
- Online over HTTP: ``POST /v1/features`` on Keel's server (the ``keel serve`` app) vs ``feast
  serve``; one keep-alive connection, one request at a time, the same client for both.
- Point-in-time join: 1M entity rows x 10 features from 3 views of 1M rows each (30-day TTL):
  Keel ``historical()``, Feast ``get_historical_features`` (file offline store), and a
  hand-written DuckDB query with three ASOF LEFT JOINs (the floor).

Redis: a redis-server started here on a free port on 127.0.0.1 (skipped when not installed).
Knobs (env): ``FEATURES_CALLS`` (5000 in-process calls per size), ``FEATURES_HTTP_CALLS``
(2000), ``FEATURES_TOOLS`` (keel,feast,floor), ``FEATURES_TIMEOUT`` (300 s per process),
``FEATURES_PIT_ROUNDS`` (3 alternating Keel/floor rounds; Feast's join runs once: minutes),
``QUICK=1`` (500 calls, 1 round, no Feast point-in-time join).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH_DIR = HERE.parent
KEEL_PYTHON = Path(sys.executable)
FEAST_VENV = BENCH_DIR / ".peers" / "feast"
FEAST_PYTHON = FEAST_VENV / "bin" / "python"
sys.path.insert(0, str(HERE))

import feature_data  # noqa: E402


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_child(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run a process to completion; its last JSON line, wall seconds and peak RSS (MB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=HERE, stdout=out, stderr=err, start_new_session=True)
        deadline = time.monotonic() + timeout
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                return {"error": f"timed out after {timeout:.0f} s"}
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        lines = [ln for ln in out.read().decode().splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = err.read().decode()[-600:]
            return {"error": f"exit {proc.returncode}: {tail.strip()}"}
        result: dict[str, Any] = json.loads(lines[-1])
        result["wall_s"] = wall
        result["peak_rss_mb"] = usage.ru_maxrss / 1024 if usage else None
        return result


class Redis:
    """A throwaway redis-server on 127.0.0.1 (a free port), stopped on exit."""

    def __init__(self) -> None:
        self.url: str | None = None
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Redis:
        binary = shutil.which("redis-server")
        if binary is None:
            return self
        self._dir = tempfile.mkdtemp(prefix="keel-bench-redis-")
        port = _free_port()
        self._proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if _wait_port(port, 20):
            self.url = f"redis://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


def _wait_port(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def _ensure_feast() -> str | None:
    """None when Feast's venv is ready, else why not."""
    probe = "import feast, redis"
    if (
        FEAST_PYTHON.exists()
        and subprocess.run(
            [str(FEAST_PYTHON), "-c", probe], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return None
    log = BENCH_DIR / ".peers" / "feast.install.log"
    FEAST_VENV.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        subprocess.run([sys.executable, "-m", "venv", str(FEAST_VENV)], check=False)
        done = subprocess.run(
            [str(FEAST_VENV / "bin" / "pip"), "install", "-q", "feast[redis]"],
            stdout=handle,
            stderr=handle,
            check=False,
            timeout=900,
        )
    if done.returncode != 0:
        return f"pip install 'feast[redis]' failed (see {log})"
    return None


def _serve(cmd: list[str], port: int, timeout: float) -> subprocess.Popen[bytes] | None:
    proc = subprocess.Popen(
        cmd, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    if _wait_port(port, timeout):
        return proc
    _stop(proc)
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _http(tool: str, backend: str, work: Path, calls: int, timeout: float) -> dict[str, Any]:
    port = _free_port()
    if tool == "keel":
        url = _keel_url(backend, work, "http")
        cmd = [str(KEEL_PYTHON), "run_keel.py", "serve", url, str(port)]
        path, body = "/v1/features", '{"features": %s, "entities": [{"user_id": "__KEY__"}]}'
    else:
        repo = work / f"feast-http-{backend.split(':')[0]}"
        setup = run_child(
            [str(FEAST_PYTHON), "run_feast.py", "setup", _feast_backend(backend), str(repo)],
            timeout,
        )
        if "error" in setup:
            return setup
        cmd = [
            str(FEAST_VENV / "bin" / "feast"),
            "-c",
            str(repo),
            "serve",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--no-access-log",
            "--max-requests",
            "1000000",
        ]
        path, body = (
            "/get-online-features",
            '{"features": %s, "entities": {"user_id": ["__KEY__"]}}',
        )
    server = _serve(cmd, port, 120)
    if server is None:
        return {"error": f"{tool} server did not open port {port} within 120 s"}
    try:
        out: dict[str, Any] = {}
        for n in (10, 100):
            refs = json.dumps([f"wide:f{i}" for i in range(n)])
            out[f"x{n}"] = run_child(
                [str(KEEL_PYTHON), "client.py", str(port), path, body % refs, str(calls)], timeout
            )
        return out
    finally:
        _stop(server)


def _keel_url(backend: str, work: Path, tag: str) -> str:
    if backend == "sqlite":
        target = work / f"keel-{tag}.db"
        target.unlink(missing_ok=True)
        return f"sqlite:///{target}"
    return backend + "/0"


def _feast_backend(backend: str) -> str:
    return "sqlite" if backend == "sqlite" else backend + "/1"


def run() -> dict[str, Any]:
    """Every measurement; the raw JSON RESULTS.md is rendered from."""
    quick = os.environ.get("QUICK", "") not in ("", "0")
    calls = _env_int("FEATURES_CALLS", 500 if quick else 5000)
    http_calls = _env_int("FEATURES_HTTP_CALLS", 300 if quick else 2000)
    timeout = float(_env_int("FEATURES_TIMEOUT", 300))
    tools = os.environ.get("FEATURES_TOOLS", "keel,feast,floor").split(",")
    data = feature_data.make()
    work = Path(tempfile.mkdtemp(prefix="keel-bench-features-"))
    raw: dict[str, Any] = {
        "benchmark": "features",
        "quick": quick,
        "config": {
            "calls": calls,
            "http_calls": http_calls,
            "timeout_s": timeout,
            "tools": tools,
            "online_entities": feature_data.N_ONLINE,
            "pit_entities": feature_data.N_ENTITIES,
            "pit_source_rows": feature_data.N_KEYS * feature_data.PER_KEY,
            "pit_views": {k: len(v) for k, v in feature_data.VIEWS.items()},
        },
        "data": str(data),
        "online": {},
        "http": {},
        "pit": {},
        "loadavg_start": os.getloadavg()[0],
    }
    feast_missing = _ensure_feast() if "feast" in tools else "not selected"
    raw["feast_unavailable"] = feast_missing
    raw["versions"] = _versions()
    try:
        with Redis() as redis:
            backends = ["sqlite"] + ([redis.url] if redis.url else [])
            raw["redis"] = "started" if redis.url else "redis-server not installed: skipped"
            for backend in backends:
                label = "sqlite" if backend == "sqlite" else "redis"
                if "keel" in tools:
                    url = _keel_url(backend, work, "inproc")
                    raw["online"][f"keel/{label}"] = run_child(
                        [str(KEEL_PYTHON), "run_keel.py", "online", url, str(calls)], timeout
                    )
                    raw["http"][f"keel/{label}"] = _http("keel", backend, work, http_calls, timeout)
                if "feast" in tools and feast_missing is None:
                    repo = work / f"feast-{label}"
                    raw["online"][f"feast/{label}"] = run_child(
                        [
                            str(FEAST_PYTHON),
                            "run_feast.py",
                            "online",
                            _feast_backend(backend),
                            str(repo),
                            str(calls),
                        ],
                        timeout,
                    )
                    raw["http"][f"feast/{label}"] = _http(
                        "feast", backend, work, http_calls, timeout
                    )
        pit_rounds = _env_int("FEATURES_PIT_ROUNDS", 1 if quick else 3)
        for _ in range(pit_rounds):  # Keel and the floor alternate; medians in the report
            if "keel" in tools:
                raw["pit"].setdefault("keel", []).append(
                    run_child([str(KEEL_PYTHON), "run_keel.py", "pit"], timeout)
                )
            if "floor" in tools:
                raw["pit"].setdefault("floor", []).append(
                    run_child([str(KEEL_PYTHON), "run_floor.py"], timeout)
                )
        if "feast" in tools and feast_missing is None and not quick:
            raw["pit"]["feast"] = [
                run_child(
                    [str(FEAST_PYTHON), "run_feast.py", "pit", str(work / "feast-pit")], timeout
                )
            ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raw["loadavg_end"] = os.getloadavg()[0]
    return raw


def _versions() -> dict[str, str]:
    probe = (
        "import json, importlib.metadata as m\nout = {}\nfor n in ['feast', 'duckdb', "
        "'redis', 'pandas', 'pyarrow', 'dask', 'keel', 'hiredis']:\n    try: out[n] = "
        "m.version(n)\n    except m.PackageNotFoundError: pass\nprint(json.dumps(out))"
    )
    found: dict[str, str] = {}
    for label, python in (("keel venv", KEEL_PYTHON), ("feast venv", FEAST_PYTHON)):
        if not Path(python).exists():
            continue
        done = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            for name, version in json.loads(done.stdout).items():
                found[f"{name} ({label})"] = version
    return found


if __name__ == "__main__":
    started = time.time()
    result = run()
    knobs = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("FEATURES_"))
    result |= {"started": started, "finished": time.time()}
    result["command"] = f"{knobs} .venv/bin/python benchmarks/features/bench.py".strip()
    target = BENCH_DIR / ".work" / "results"
    target.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (target / f"features-{stamp}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
