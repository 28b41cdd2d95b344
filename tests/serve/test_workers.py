"""Scale-out: ``keel serve --workers N`` (a supervisor and N processes on one port) and
``keel serve --ray`` (the same app as a Ray Serve deployment)."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest

from keel.errors import ConfigError
from keel.serve.predlog import read_prediction_log
from keel.serve.ray_serve import RayOptions
from keel.serve.supervisor import Supervisor, max_workers
from tests.serve.conftest import JSON, ROW, copy_project, free_port, keel_serve


def _workers(pid: int) -> dict[int, str]:
    """The supervisor's worker processes: pid -> command line."""
    return {
        child.pid: " ".join(child.cmdline())
        for child in psutil.Process(pid).children()
        if child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    }


def _predict(url: str, timeout: float = 10) -> httpx.Response:
    # a new connection per request: the kernel hands each to one worker's socket
    return httpx.post(f"{url}/v1/models/adult/predict", json={"instances": [ROW]},
                      timeout=timeout)  # fmt: skip


def _seen_workers(url: str, want: set[str], *, deadline_s: float = 60.0) -> set[str]:
    """Predict until every worker id in ``want`` has answered (bounded in count and time)."""
    seen: set[str] = set()
    deadline = time.monotonic() + deadline_s
    for _ in range(5_000):
        response = _predict(url)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"]
        seen.add(response.headers["keel-worker"])
        if want <= seen or time.monotonic() > deadline:
            break
    return seen


def _wait_for(condition: object, deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_two_workers_answer_restart_and_stop(adult_project: Path, tmp_path: Path) -> None:
    root = copy_project(adult_project, tmp_path / "adult")
    with keel_serve(root, "--workers", "2") as served:
        assert "2 workers" in served.log.read_text()
        assert _seen_workers(served.url, {"0", "1"}) == {"0", "1"}
        workers = _workers(served.process.pid)
        assert len(workers) == 2
        assert all("--worker-fd" in line for line in workers.values())

        # a SIGKILLed worker is replaced; no request fails meanwhile: the connections its
        # socket takes wait for the replacement (as long as it takes to start: up to a minute
        # on a loaded CI machine)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        for _ in range(20):
            assert _predict(served.url, timeout=60).status_code == 200
        assert _wait_for(
            lambda: (
                len(_workers(served.process.pid)) == 2
                and victim not in _workers(served.process.pid)
            ),
            60,
        ), served.log.read_text()
        assert _seen_workers(served.url, {"0", "1"}) == {"0", "1"}
        log = served.log.read_text()
        assert f"(pid {victim}) was killed by SIGKILL" in log
        assert "restarting worker" in log

        # SIGTERM to the supervisor stops every worker, gracefully, and it exits 0
        children = [psutil.Process(pid) for pid in _workers(served.process.pid)]
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=40) == 0
        _gone, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, [p.pid for p in alive]
        assert "SIGTERM: stopping 2 workers" in served.log.read_text()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{served.url}/v2/health/live", timeout=2)

    # one prediction log file per process, every line whole
    files = list((root / ".keel" / "predictions" / "adult").glob("*/*.jsonl"))
    assert len({f.name.split("-")[0] for f in files}) >= 2
    records = list(read_prediction_log(root / ".keel" / "predictions", "adult"))
    assert len(records) >= 22  # the 20 sent while a worker was down, and more
    assert all(r["model_version"] == "1" for r in records)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT groups: Linux")
def test_connections_opened_at_once_are_spread_over_the_workers(
    adult_project: Path, tmp_path: Path
) -> None:
    # 64 keep-alive connections opened together, as a load balancer or wrk opens them. On one
    # shared socket whichever worker woke first took the queue (60 of 64 on one of two).
    root = copy_project(adult_project, tmp_path / "adult")
    with keel_serve(root, "--workers", "2") as served:
        assert _seen_workers(served.url, {"0", "1"}) == {"0", "1"}  # both started
        port = int(served.url.rsplit(":", 1)[1])
        connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                       for _ in range(64)]  # fmt: skip
        for connection in connections:
            connection.connect()
        counts: Counter[str] = Counter()
        body = json.dumps({"instances": [ROW]}).encode()
        for connection in connections:
            connection.request("POST", "/v1/models/adult/predict", body, JSON)
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
            counts[answer.getheader("Keel-Worker") or "?"] += 1
        for connection in connections:
            connection.close()
    # by their addresses: each worker's share is binomial(64, 1/2), under 16 once in 30,000
    assert set(counts) == {"0", "1"} and min(counts.values()) >= 16, counts


def test_workers_stop_when_supervisor_is_killed(adult_project: Path, tmp_path: Path) -> None:
    root = copy_project(adult_project, tmp_path / "adult")
    with keel_serve(root, "--workers", "2", "--no-log") as served:
        assert _wait_for(lambda: len(_workers(served.process.pid)) == 2, 30)
        children = [psutil.Process(pid) for pid in _workers(served.process.pid)]
        served.process.send_signal(signal.SIGKILL)
        served.process.wait(timeout=10)
        _gone, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, [p.pid for p in alive]


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def test_supervisor_gives_up_on_a_crash_loop() -> None:
    lines: list[str] = []
    supervisor = Supervisor(
        [sys.executable, "-c", "import sys; sys.exit(3)"],
        _listening(),
        2,
        log=lines.append,
        max_restarts=3,
        window_s=60,
        grace_s=5,
    )
    started = time.monotonic()
    assert supervisor.run() == 1
    assert time.monotonic() - started < 30
    assert supervisor.restarts == 3
    assert sum("exited with status 3" in line for line in lines) == 4
    assert "giving up" in lines[-1]


def test_supervisor_passes_the_socket_and_worker_id(tmp_path: Path) -> None:
    """Each worker gets the listening socket's descriptor and its index; a stop is graceful."""
    out = tmp_path / "seen"
    out.mkdir()
    script = (
        "import os, signal, socket, sys, time\n"
        "fd = int(sys.argv[sys.argv.index('--worker-fd') + 1])\n"
        "sock = socket.socket(fileno=fd)\n"
        f"open(os.path.join({str(out)!r}, os.environ['KEEL_WORKER_ID']), 'w').write("
        "str(sock.getsockname()[1]) + ' ' + os.environ['OMP_NUM_THREADS'])\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "time.sleep(60)\n"
    )
    sock = _listening()
    port = sock.getsockname()[1]
    supervisor = Supervisor([sys.executable, "-c", script], sock, 3, log=print, grace_s=10)
    stopper = subprocess.Popen(  # SIGTERM the supervisor (this process) once all three wrote
        [sys.executable, "-c",
         "import os, signal, sys, time\n"
         f"d = {str(out)!r}\n"
         "for _ in range(300):\n"
         "    time.sleep(0.1)\n"
         "    if len(os.listdir(d)) == 3: break\n"
         f"os.kill({os.getpid()}, signal.SIGTERM)\n"],
    )  # fmt: skip
    try:
        assert supervisor.run() == 0
    finally:
        stopper.wait(timeout=40)
    assert sorted(p.name for p in out.iterdir()) == ["0", "1", "2"]
    assert {p.read_text() for p in out.iterdir()} == {f"{port} 1"}
    assert supervisor.restarts == 0


def _keel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("workers", ["0", "-1", str(max_workers() + 1)])
def test_bad_workers_is_a_clear_error(adult_project: Path, workers: str) -> None:
    result = _keel("serve", "--project", str(adult_project), "--workers", workers)
    assert result.returncode == 2, result.stderr
    assert "--workers" in result.stderr and f"1-{max_workers()}" in result.stderr
    assert "serving" not in result.stderr and "Traceback" not in result.stderr


def test_workers_from_keel_yaml_are_checked(adult_project: Path, tmp_path: Path) -> None:
    root = copy_project(
        adult_project, tmp_path / "adult", serve=f"  workers: {max_workers() + 1}\n"
    )
    result = _keel("serve", "--project", str(root))
    assert result.returncode == 2
    assert "serve.workers" in result.stderr and "Traceback" not in result.stderr


def test_replica_options_without_ray_are_refused(adult_project: Path) -> None:
    result = _keel("serve", "--project", str(adult_project), "--replicas", "2")
    assert result.returncode == 2
    assert "--ray only" in result.stderr and "Traceback" not in result.stderr


def test_ray_refuses_a_taken_port_before_starting_ray(adult_project: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        result = _keel("serve", "--project", str(adult_project), "--ray", "--port", port)
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Ray" not in result.stderr.split("cannot listen")[0]  # refused before Ray started
    both = _keel("serve", "--project", str(adult_project), "--ray", "--workers", "2")
    assert both.returncode == 2 and "--replicas, not --workers" in both.stderr


def test_ray_options() -> None:
    assert RayOptions.of(None, None, None).deployment_options() == {"num_replicas": 1}
    assert RayOptions.of(3, None, None).deployment_options() == {"num_replicas": 3}
    scaled = RayOptions.of(None, 1, 4).deployment_options()["autoscaling_config"]
    assert (scaled["min_replicas"], scaled["max_replicas"]) == (1, 4)
    for bad in [(2, 1, 4), (None, 3, 2), (None, -1, 2), (0, None, None)]:
        with pytest.raises(ConfigError):
            RayOptions.of(*bad)


@pytest.mark.skipif(
    importlib.util.find_spec("ray.serve") is None or importlib.util.find_spec("aiohttp") is None,
    reason="Ray Serve is not installed (the 'ray' extra)",
)
def test_ray_serve_deployment(adult_project: Path, tmp_path: Path) -> None:
    """Two Ray Serve replicas on a local Ray (started and stopped by the command, bounded)."""
    root = copy_project(adult_project, tmp_path / "adult")
    port = free_port()
    log = tmp_path / "ray.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keel.cli", "serve", "adult", "--project", str(root),
             "--port", str(port), "--ray", "--replicas", "2", "--no-log"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        assert _wait_for(lambda: process.poll() is not None or "serving" in log.read_text(), 180)
        assert process.poll() is None, log.read_text()
        assert "via Ray Serve (2 replicas" in log.read_text()
        response = httpx.post(
            f"{url}/v1/models/adult/predict", json={"instances": [ROW]}, timeout=30
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == "1" and len(body["predictions"]) == 1
        assert response.headers["keel-model-version"] == "1"
        refused = httpx.post(
            f"{url}/v1/models/adult/predict", content=b"{}", headers={"content-type": "text/plain"}
        )
        assert refused.status_code == 415  # the same middleware as keel serve
        assert httpx.get(f"{url}/v2/health/ready", timeout=10).json()["ready"] is True
        descendants = psutil.Process(process.pid).children(recursive=True)
        assert descendants
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0, log.read_text()
        _gone, alive = psutil.wait_procs(descendants, timeout=30)
        assert not alive, [(p.pid, p.name()) for p in alive]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_env_token(adult_project: Path, tmp_path: Path) -> None:
    """KEEL_SERVE_TOKEN is accepted (predict and read scopes) with auth required; a short one
    is refused before anything is served."""
    root = copy_project(adult_project, tmp_path / "adult", serve="  auth: required\n")
    secret = "k" * 40
    os.environ["KEEL_SERVE_TOKEN"] = secret
    try:
        with keel_serve(root, "--workers", "2", "--no-log") as served:
            assert _predict(served.url).status_code == 401
            authorized = httpx.post(
                f"{served.url}/v1/models/adult/predict",
                json={"instances": [ROW]},
                headers={**JSON, "authorization": f"Bearer {secret}"},
                timeout=10,
            )
            assert authorized.status_code == 200, authorized.text
        os.environ["KEEL_SERVE_TOKEN"] = "short"
        result = _keel("serve", "--project", str(root), "--port", str(free_port()))
        assert result.returncode == 2 and "KEEL_SERVE_TOKEN" in result.stderr
        assert "serving" not in result.stderr
    finally:
        del os.environ["KEEL_SERVE_TOKEN"]
