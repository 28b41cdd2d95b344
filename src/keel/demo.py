"""``make demo``: the whole lifecycle on UCI Adult, then a running server.

Scaffolds the adult example in a temporary directory, runs the pipeline, starts ``keel serve``,
sends predictions (one row, then 400 rows of adult.test), prints the monitor report, and leaves
the server running with a ready curl line until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console

from keel.settings import load_settings

console = Console()

SAMPLE = {
    "age": 39,
    "workclass": "State-gov",
    "fnlwgt": 77516,
    "education": "Bachelors",
    "education-num": 13,
    "marital-status": "Never-married",
    "occupation": "Adm-clerical",
    "relationship": "Not-in-family",
    "race": "White",
    "sex": "Male",
    "capital-gain": 2174,
    "capital-loss": 0,
    "hours-per-week": 40,
    "native-country": "United-States",
}


def _free_port(preferred: int = 8000) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def _wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"keel serve exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"keel serve was not ready after {timeout:.0f} s")


def _test_rows(project: Path, count: int) -> list[dict[str, Any]]:
    from keel.config import load_config
    from keel.data.sources import read_source

    config = load_config(project)
    assert config.data.test is not None
    table = read_source(config.data.test, project).drop_columns([config.data.target])
    return list(table.slice(0, count).to_pylist())


def main() -> None:
    """Run the demo; returns when the user presses Ctrl-C."""
    from keel import api
    from keel.cli import _print_run
    from keel.commands.monitor import print_report as _print_monitor

    workdir = Path(tempfile.mkdtemp(prefix="keel-demo-")) / "adult"
    console.rule("1. keel init --example adult")
    api.init(workdir, example="adult")
    console.print(f"project: {workdir}")
    console.rule("2. keel run")
    _print_run(api.run(workdir, console=console))
    console.rule("3. keel serve")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "serve", "--project", str(workdir), "--port", str(port)],
        start_new_session=True,
    )
    try:
        _wait_ready(base, server)
        url = f"{base}/v1/models/adult/predict"
        answer = _post(url, {"instances": [SAMPLE]})
        console.print(
            f"POST {url}\n  {json.dumps({'instances': [SAMPLE]})}\n-> {json.dumps(answer)}"
        )
        rows = _test_rows(workdir, 400)
        for start in range(0, len(rows), 50):
            _post(url, {"instances": rows[start : start + 50]})
        console.print(f"sent {len(rows)} more rows of adult.test in batches of 50")
        time.sleep(1.2)  # the prediction log flushes every 0.5 s
        console.rule("4. keel monitor adult")
        _print_monitor(api.monitor("adult", project=workdir))
        console.rule("server running")
        body = json.dumps({"instances": [SAMPLE]})
        console.print(
            f"curl -s -X POST {url} -H 'Content-Type: application/json' -d '{body}'",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
        console.print(f"metrics: curl -s {base}/metrics    project: {workdir}\nCtrl-C to stop.")
        if load_settings().demo_exit:
            return
        server.wait()
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)


if __name__ == "__main__":
    main()
