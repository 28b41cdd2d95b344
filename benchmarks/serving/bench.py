"""Serving benchmark: ``keel serve`` vs ``mlflow models serve`` (same model) vs the HTTP floor.

Steps (``run(config)``; ``benchmarks/run.py`` calls it and writes RESULTS.md):

1. A fresh Keel project in ``benchmarks/.work/serving/project`` via the CLI
   (``keel init --example adult`` + ``keel run``): registers ``adult@production``
   (``REUSE=1``: the project a previous run built is served as it is).
2. Keel's booster exported as text; in MLflow's own venv (``benchmarks/.peers/mlflow``) loaded
   with ``lightgbm.Booster(model_str=...)`` and logged with ``mlflow.lightgbm.log_model`` to a
   local file store. If that venv cannot be built, MLflow is recorded as skipped.
3. Per round: the in-process floor (``floor.py``, pinned to CPU 0), then each server in turn,
   the order rotated every round. A server runs pinned to CPU 0 (``taskset``, one worker),
   must answer a real request with 200 and a sane body (checked against the in-process
   probability), gets a short warm-up, then wrk pinned to CPU 1 (one thread) loads it at each
   connection count for DURATION seconds, bounded in count too (``post.lua``). Servers are
   started in their own session and stopped by process group id, always (try/finally).

``keel_shadow`` (not in the default list: ``SERVERS=keel,keel_shadow``) serves a copy of the
project whose production model is also deployed as its own shadow, for the primary's latency
with and without a shadow; its CPU per request includes the shadow process's.

Only 127.0.0.1 is used. Run directly for the raw JSON: ``python benchmarks/serving/bench.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402

from keel.demo import SAMPLE  # noqa: E402

BENCH_DIR = HERE.parent
WORK = BENCH_DIR / ".work" / "serving"
HOST = "127.0.0.1"
SERVER_CPU, LOAD_CPU = "0", "1"
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0

ROW = dict(SAMPLE)  # the demo's request row


@dataclass(frozen=True)
class Config:
    rounds: int = 3
    duration_s: int = 10
    conns: tuple[int, ...] = (1, 8, 64)
    max_requests: int = 2_000_000
    warmup_s: int = 2
    floor_calls: int = 1000
    servers: tuple[str, ...] = (
        "keel",
        "keel_auth",
        "keel_bare",
        "keel_base",
        "keel_nolog",
        "mlflow",
        "http_floor",
    )
    quick: bool = False
    reuse: bool = False  # REUSE=1: serve the project a previous run built (no keel run)

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        quick = env.get("QUICK", "") not in ("", "0")
        base = cls(rounds=1, duration_s=3, warmup_s=1, quick=True) if quick else cls()
        return cls(
            rounds=int(env.get("ROUNDS", base.rounds)),
            duration_s=int(env.get("DURATION", base.duration_s)),
            conns=tuple(int(c) for c in env.get("CONNS", "1,8,64").split(",") if c.strip()),
            max_requests=int(env.get("WRK_MAX_REQ", base.max_requests)),
            warmup_s=base.warmup_s,
            floor_calls=int(env.get("FLOOR_CALLS", base.floor_calls)),
            servers=tuple(s for s in env.get("SERVERS", ",".join(base.servers)).split(",") if s),
            quick=quick,
            reuse=env.get("REUSE", "") not in ("", "0"),
        )


@dataclass
class Server:
    """One server under test: how to start it, what to send, how to check the answer."""

    key: str
    label: str
    cmd: list[str]
    path: str
    body_file: Path
    check: Callable[[bytes], str | None]  # None if the body is sane, else what is wrong
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = HERE
    before_start: Callable[[], None] | None = None
    after_stop: Callable[[], dict[str, Any]] | None = None
    token: str | None = None  # sent as "Authorization: Bearer" (keel serve --auth required)
    before_stop: Callable[[str], dict[str, Any]] | None = None  # given the server's base URL
    after_ready: Callable[[int], dict[str, Any]] | None = None  # given the server's pid


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it leads its own session), then SIGKILL if needed."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # children that outlived the leader (e.g. mlflow's uvicorn) share the group id
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(server: Server, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, **server.env)
    env.pop("QUICK", None)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(server.cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *server.cmd],
            cwd=server.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_group(proc)


def tree_rss_mb(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return float("nan")
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


def tree_cpu_s(pid: int, *, own: bool = False) -> float:
    """User + system CPU seconds of the server's process tree so far (``own``: of the
    server's process alone, without its children)."""
    try:
        root = psutil.Process(pid)
        procs = [root] if own else [root, *root.children(recursive=True)]
    except psutil.Error:
        return float("nan")
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def post(
    url: str, body: bytes, timeout: float = 5.0, token: str | None = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_ready(proc: subprocess.Popen[bytes], server: Server, url: str, started: float) -> float:
    """Poll with the real request until it answers 200 and a sane body; seconds since start."""
    body = server.body_file.read_bytes()
    last = "no answer"
    while time.monotonic() - started < READY_TIMEOUT_S:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.key} exited with code {proc.returncode} before ready")
        try:
            status, answer = post(url, body, timeout=2.0, token=server.token)
        except (OSError, urllib.error.URLError) as exc:
            last = repr(exc)
        else:
            if status == 200:
                problem = server.check(answer)
                if problem:
                    raise RuntimeError(f"{server.key} answered 200 but {problem}: {answer[:300]!r}")
                return time.monotonic() - started
            last = f"HTTP {status}: {answer[:300]!r}"
        time.sleep(0.02)
    raise RuntimeError(f"{server.key} not ready in {READY_TIMEOUT_S:.0f} s (last: {last})")


def wrk(
    config: Config, url: str, body_file: Path, conns: int, seconds: int, token: str | None = None
) -> dict[str, Any]:
    env = dict(os.environ, BODY_FILE=str(body_file), MAX_REQUESTS=str(config.max_requests))
    env["AUTH_TOKEN"] = token or ""
    cmd = [
        "taskset",
        "-c",
        LOAD_CPU,
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(HERE / "post.lua"),
        url,
    ]
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            result["rps"] = result["requests"] / max(result["duration_us"] / 1e6, 1e-9)
            result["errors"] = sum(
                result[k] for k in ("err_connect", "err_read", "err_write", "err_timeout")
            )
            result["hit_count_bound"] = result["requests"] >= config.max_requests
            return result
    raise RuntimeError(f"wrk gave no result (rc={done.returncode}): {done.stdout}{done.stderr}")


def measure(config: Config, server: Server, log: Path) -> dict[str, Any]:
    """Start, verify, warm up, load at each connection count, stop. Never raises."""
    port = free_port()
    url = f"http://{HOST}:{port}{server.path}"
    cmd = [part.replace("{port}", str(port)) for part in server.cmd]
    record: dict[str, Any] = {"loadavg_before": os.getloadavg()[0]}
    if server.before_start:
        server.before_start()
    started = time.monotonic()
    try:
        with running(replace(server, cmd=cmd), port, log) as proc:
            record["startup_s"] = wait_ready(proc, server, url, started)
            if server.after_ready:
                record.update(server.after_ready(proc.pid))
            record["rss_idle_mb"] = tree_rss_mb(proc.pid)
            wrk(config, url, server.body_file, 8, config.warmup_s, server.token)
            record["loads"] = {}
            for conns in config.conns:
                cpu_before, own_before = tree_cpu_s(proc.pid), tree_cpu_s(proc.pid, own=True)
                load = wrk(config, url, server.body_file, conns, config.duration_s, server.token)
                cpu = tree_cpu_s(proc.pid) - cpu_before
                load["server_cpu_us_per_req"] = cpu / max(load["requests"], 1) * 1e6
                own = tree_cpu_s(proc.pid, own=True) - own_before  # e.g. without its shadow
                load["server_process_cpu_us_per_req"] = own / max(load["requests"], 1) * 1e6
                record["loads"][str(conns)] = load
            record["rss_mb"] = tree_rss_mb(proc.pid)
            if server.before_stop:
                record.update(server.before_stop(f"http://{HOST}:{port}"))
            if proc.poll() is not None:
                raise RuntimeError(f"{server.key} died under load (code {proc.returncode})")
    except Exception as exc:  # recorded; the benchmark goes on with the next server
        record["error"] = f"{type(exc).__name__}: {exc}"
    if server.after_stop:
        record.update(server.after_stop())
    record["loadavg_after"] = os.getloadavg()[0]
    return record


# --- preparation ----------------------------------------------------------------------------


def keel_bin(program: str) -> str:
    return str(Path(sys.executable).parent / program)


def make_project(work: Path, log: Path) -> Path:
    project = work / "project"
    if project.exists():
        shutil.rmtree(project)
    with log.open("ab") as out:
        for cmd, cwd in (
            ([keel_bin("keel"), "init", "--example", "adult", str(project)], work),
            ([keel_bin("keel"), "run"], project),
        ):
            subprocess.run(
                cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=900, check=True
            )
    return project


def export_model(project: Path, work: Path) -> dict[str, Any]:
    """Keel's booster as text + the transformed request row, for the MLflow venv."""
    import keel

    package = keel.load_model("adult@production", project=project).package
    x = package.pipeline.transform_row(ROW)
    (work / "model.txt").write_text(package.booster.model_to_string())
    columns = package.pipeline.feature_names()
    row = [float(v) for v in x[0]]
    (work / "features.json").write_text(json.dumps({"columns": columns, "row": row}))
    body = {"dataframe_split": {"columns": columns, "data": [row]}}
    (work / "body_mlflow.json").write_text(json.dumps(body))
    return {
        "probability": float(package.booster.predict(x)[0]),
        "n_features": len(columns),
        "n_trees": int(package.booster.num_trees()),
        "classes": list(package.classes),
    }


def log_to_mlflow(work: Path, log: Path) -> tuple[dict[str, Any] | None, str]:
    status = peers.ensure_venv("mlflow")
    if status.python is None:
        return None, f"MLflow skipped: {status.note}"
    with log.open("ab") as out:
        done = subprocess.run(
            [str(status.python), str(HERE / "mlflow_export.py"), str(work)],
            stdout=subprocess.PIPE,
            stderr=out,
            timeout=600,
            check=False,
        )
    if done.returncode != 0:
        return None, f"MLflow skipped: logging the model failed (see {log})"
    info: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    info["bin"] = str(status.bin("mlflow"))
    return info, f"MLflow venv ({peers.PEERS_DIR / 'mlflow'}): {status.note}"


def close_to(a: Any, b: float) -> bool:
    return isinstance(a, int | float) and abs(float(a) - b) < 1e-9


def build_servers(
    config: Config, project: Path, work: Path, model: dict[str, Any], mlflow: dict[str, Any] | None
) -> list[Server]:
    p = model["probability"]
    keel_body = work / "body_keel.json"
    keel_body.write_text(json.dumps({"instances": [ROW]}))
    predictions = project / ".keel" / "predictions"

    def keel_check(raw: bytes) -> str | None:
        got = json.loads(raw)
        if got.get("predictions") != [model["classes"][int(p >= 0.5)]]:
            return "wrong predictions"
        if not (
            isinstance(got.get("probabilities"), list) and close_to(got["probabilities"][0], p)
        ):
            return f"probability differs from in-process {p}"
        if got.get("model_version") != "1" or not got.get("request_id"):
            return "no model_version/request_id"
        return None

    def clear_log() -> None:
        shutil.rmtree(predictions, ignore_errors=True)

    def count_log() -> dict[str, Any]:
        lines = 0
        for path in predictions.glob("*/*/*.jsonl"):
            with path.open("rb") as handle:
                lines += sum(1 for _ in handle)
        return {"prediction_log_lines": lines}

    def mlflow_check(raw: bytes) -> str | None:
        got = json.loads(raw).get("predictions")
        if not (isinstance(got, list) and len(got) == 1 and close_to(got[0], p)):
            return f"prediction differs from Keel's in-process probability {p}"
        return None

    def floor_check(raw: bytes) -> str | None:
        return None if raw.startswith(b'{"predictions"') else "unexpected constant"

    keel_serve = [keel_bin("keel"), "serve", "--project", str(project), "--host", HOST]
    keel_serve_threaded = [*keel_serve]
    if "keel_threaded" in config.servers:  # a fresh copy of the project that never inlines
        threaded = work / "project_threaded"
        shutil.rmtree(threaded, ignore_errors=True)
        shutil.copytree(project, threaded, ignore=shutil.ignore_patterns("predictions"))
        yaml = threaded / "keel.yaml"
        yaml.write_text(yaml.read_text().replace("serve:\n", "serve:\n  inline_max_us: 0\n", 1))
        keel_serve_threaded[3] = str(threaded)
    keel_serve_shadow = [*keel_serve]
    shadow_log = work / "project_shadow" / ".keel" / "predictions"
    if "keel_shadow" in config.servers:  # a copy with the same model deployed as its shadow
        keel_serve_shadow[3] = str(shadow_project(project, work / "project_shadow"))

    def clear_shadow_log() -> None:
        shutil.rmtree(shadow_log, ignore_errors=True)

    def count_shadow_log() -> dict[str, Any]:
        roles: dict[str, int] = {}
        for path in shadow_log.glob("*/*/*.jsonl"):
            with path.open("rb") as handle:
                for line in handle:
                    role = json.loads(line).get("role", "primary")
                    roles[role] = roles.get(role, 0) + 1
        return {"prediction_log_lines": sum(roles.values()), "log_lines_by_role": roles}

    uvicorn = [sys.executable, "-m", "uvicorn"]
    uvicorn_flags = ["--workers", "1", "--loop", "uvloop", "--http", "httptools"]
    uvicorn_flags += ["--no-access-log", "--log-level", "warning"]
    bare = [sys.executable, str(HERE / "keel_bare.py"), str(project), "{port}"]
    servers = {
        "keel": Server(
            key="keel",
            label="keel serve (prediction log on)",
            cmd=[*keel_serve, "--port", "{port}"],
            path="/v1/models/adult/predict",
            body_file=keel_body,
            check=keel_check,
            before_start=clear_log,
            after_stop=count_log,
        ),
        "keel_nolog": Server(
            key="keel_nolog",
            label="keel serve --no-log (diagnostic)",
            cmd=[*keel_serve, "--port", "{port}", "--no-log"],
            path="/v1/models/adult/predict",
            body_file=keel_body,
            check=keel_check,
        ),
        "keel_auth": Server(
            key="keel_auth",
            label="keel serve --auth required (token checked per request, log on)",
            cmd=[*keel_serve, "--port", "{port}", "--auth", "required"],
            path="/v1/models/adult/predict",
            body_file=keel_body,
            check=keel_check,
            before_start=clear_log,
            token=bench_token(project),
        ),
        "keel_threaded": Server(
            key="keel_threaded",
            label="keel serve --auth required, serve.inline_max_us: 0 (every request threaded)",
            cmd=[*keel_serve_threaded, "--port", "{port}", "--auth", "required"],
            path="/v1/models/adult/predict",
            body_file=keel_body,
            check=keel_check,
            token=bench_token(Path(keel_serve_threaded[3])),
        ),
        "keel_shadow": Server(
            key="keel_shadow",
            label="keel serve (log on), the same model as a shadow deployment (every answer "
            "mirrored to the shadow process)",
            cmd=[*keel_serve_shadow, "--port", "{port}"],
            path="/v1/models/adult/predict",
            body_file=keel_body,
            check=keel_check,
            before_start=clear_shadow_log,
            before_stop=shadow_metrics,
            after_ready=shadow_ready,
            after_stop=count_shadow_log,
        ),
        "keel_bare": Server(
            key="keel_bare",
            label="same server, hardening off (no auth, content-type check or guards; request "
            "ids, metrics, access log kept)",
            cmd=bare,
            path="/v1/models/adult/predict",
            body_file=keel_body,
            check=keel_check,
            before_start=clear_log,
        ),
        "keel_none": Server(
            key="keel_none",
            label="same server, every middleware step off (no auth, guards, request id, "
            "metrics, access log)",
            cmd=[*bare, "--steps", "none"],
            path="/v1/models/adult/predict",
            body_file=keel_body,
            check=keel_check,
            before_start=clear_log,
        ),
        "http_floor": Server(
            key="http_floor",
            label="HTTP floor (bare ASGI on uvicorn, constant answer)",
            cmd=[*uvicorn, "http_floor:app", "--host", HOST, "--port", "{port}", *uvicorn_flags],
            path="/predict",
            body_file=keel_body,
            check=floor_check,
        ),
    }
    base = os.environ.get("BASE_SRC")  # another checkout's src/: the server before a change
    if base:
        servers["keel_base"] = Server(
            key="keel_base",
            label=f"keel serve from {base} (before)",
            cmd=[
                sys.executable,
                "-m",
                "keel.cli",
                "serve",
                "--project",
                str(project),
                "--host",
                HOST,
                "--port",
                "{port}",
            ],
            path="/v1/models/adult/predict",
            body_file=keel_body,
            check=keel_check,
            before_start=clear_log,
            env={"PYTHONPATH": base},
        )
    if mlflow is not None:
        mlflow_serve = [mlflow["bin"], "models", "serve", "-m", mlflow["model_uri"]]
        mlflow_serve += ["--env-manager", "local"]
        servers["mlflow"] = Server(
            key="mlflow",
            label=f"mlflow models serve {mlflow['mlflow']} (same booster)",
            cmd=[*mlflow_serve, "-h", HOST, "-p", "{port}", "-w", "1"],
            path="/invocations",
            body_file=work / "body_mlflow.json",
            check=mlflow_check,
            env={
                "MLFLOW_TRACKING_URI": mlflow["tracking_uri"],
                "MLFLOW_ALLOW_FILE_STORE": "true",
                # as if its venv were activated: mlflow starts uvicorn by name
                "PATH": f"{Path(mlflow['bin']).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            },
            cwd=work,
        )
    return [servers[k] for k in config.servers if k in servers]


def shadow_project(project: Path, target: Path) -> Path:
    """A fresh copy of the project whose v1 (production) is also registered as v2, deployed
    as v1's shadow: every answered request is mirrored to the shadow process."""
    import keel
    from keel.project import Project
    from keel.registry.registry import Registry

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(project, target, ignore=shutil.ignore_patterns("predictions"))
    with Project(target) as proj:
        registry = Registry(proj.metadata.database, actor="bench")
        package = registry.resolve("adult@production").package_sha256
        version = registry.register("adult", package_sha256=package, run_id=None, metrics={})
    keel.deploy("adult", shadow=int(version.version), project=target)
    return target


def shadow_ready(pid: int, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
    """Wait until the server's shadow process has loaded its version and scores (it then runs
    at idle priority): measured only once the shadow is up."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(psutil.Error, OSError):
            for child in psutil.Process(pid).children():
                scoring = os.sched_getscheduler(child.pid) == os.SCHED_IDLE
                if scoring and "keel.serve.shadow_worker" in child.cmdline():
                    return {"shadow_ready_s": round(time.monotonic() - started, 2)}
        time.sleep(0.1)
    raise RuntimeError(f"no shadow process scoring in {timeout_s:.0f} s")


def shadow_metrics(base: str) -> dict[str, Any]:
    """The shadow counters of a server's ``/metrics`` (copies dropped and shed)."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith(("keel_shadow_dropped", "keel_shadow_shed")):
            name, value = line.split()[:2]
            found[name] = float(value)
    return found


def bench_token(project: Path) -> str:
    """A fresh predict token in the project's registry (for the auth-on server)."""
    import uuid

    from keel.project import Project
    from keel.store.tokens import create_token

    with Project(project) as proj:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        _, secret = create_token(proj.metadata.database, name, ["predict"], created_by="bench")
    return secret


def run_floor(config: Config, project: Path, body: Path) -> dict[str, Any]:
    cmd = ["taskset", "-c", SERVER_CPU, sys.executable, str(HERE / "floor.py")]
    done = subprocess.run(
        [*cmd, str(project), str(body), str(config.floor_calls)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the benchmark --------------------------------------------------------------------------


def run(config: Config, say: Callable[[str], None] = print) -> dict[str, Any]:
    peers.ensure_wrk()
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "servers.log"
    log.write_bytes(b"")
    say(f"[serving] config {asdict(config)}")
    project = WORK / "project"
    if config.reuse and (project / ".keel" / "keel.db").exists():
        say(f"[serving] reusing the Keel project {project}")
    else:
        say("[serving] creating the Keel project (keel init --example adult && keel run)")
        project = make_project(WORK, log)
    model = export_model(project, WORK)
    notes: list[str] = []
    mlflow: dict[str, Any] | None = None
    if "mlflow" in config.servers:
        say("[serving] MLflow venv + logging Keel's booster to MLflow")
        mlflow, note = log_to_mlflow(WORK, log)
        notes.append(note)
        if mlflow is not None and not close_to(mlflow["probability"], model["probability"]):
            notes.append(
                f"MLflow's booster gives {mlflow['probability']} vs Keel's {model['probability']}"
            )
    servers = build_servers(config, project, WORK, model, mlflow)
    rounds: list[dict[str, Any]] = []
    for index in range(config.rounds):
        say(f"[serving] round {index + 1}/{config.rounds}: in-process floor")
        current: dict[str, Any] = {
            "round": index,
            "loadavg": os.getloadavg()[0],
            "floor": run_floor(config, project, WORK / "body_keel.json"),
            "servers": {},
        }
        k = index % len(servers)
        for server in servers[k:] + servers[:k]:
            say(f"[serving] round {index + 1}/{config.rounds}: {server.key}")
            result = measure(config, server, log)
            current["servers"][server.key] = result
            say("           " + summary_line(result))
        rounds.append(current)
    return {
        "config": asdict(config),
        "model": model,
        "mlflow": mlflow,
        "notes": notes,
        "servers": {s.key: {"label": s.label, "path": s.path} for s in servers},
        "rounds": rounds,
        "log": str(log),
    }


def summary_line(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    parts = [f"startup {result['startup_s']:.2f}s rss {result['rss_mb']:.0f}MB"]
    for conns, load in result["loads"].items():
        parts.append(
            f"c={conns}: p50 {load['p50_us'] / 1e3:.2f}ms p99 {load['p99_us'] / 1e3:.2f}ms "
            f"{load['rps']:.0f} rps cpu/req {load['server_cpu_us_per_req']:.0f}us "
            f"non2xx {load['not_2xx']} err {load['errors']}"
        )
    if "prediction_log_lines" in result:
        parts.append(f"log lines {result['prediction_log_lines']}")
    return " | ".join(parts)


if __name__ == "__main__":
    print(json.dumps(run(Config.from_env(), say=lambda s: print(s, file=sys.stderr)), indent=1))
