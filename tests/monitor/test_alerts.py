"""`keel monitor run` on a trained Adult project whose served rows drift (rows sorted by age):
alerts fire once per window span, `for 2 windows` needs two in a row, cooldown and de-dup hold
on a second run; a webhook on 127.0.0.1 receives signed bodies and a failing one is retried then
marked failed; a command gets the JSON; the `alert` events move the scheduler's trigger."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

import keel
from keel.pipeline.triggers import observe_event
from keel.project import Project
from keel.store.schedules import ScheduleStore

DAY = 86_400
SECRET = "s3cret-for-tests"


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs; /fail answers 500."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, dict(self.headers), body))
                self.send_response(500 if self.path == "/fail" else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        deadline = time.monotonic() + 10
        while True:  # ready when it accepts a connection
            try:
                socket.create_connection(self.server.server_address[:2], timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def today() -> int:
    return int(time.time()) // DAY * DAY


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver, adult_test_table: Any
) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("alerts") / "adult"
    keel.init(root, example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"]["n_estimators"] = 40  # fast; the model's quality is not tested
    config["evaluate"]["gates"] = []
    command_out = root / "command-out.jsonl"
    script = f"import sys; open({str(command_out)!r}, 'ab').write(sys.stdin.buffer.read() + b'\\n')"
    fast = {"attempts": 3, "backoff": 0.05, "timeout": 5}
    config["monitor"]["alerts"] = [
        {"name": "age-drift", "when": "drift.age.psi > 0.2", "cooldown": "0s",
         "sinks": [{"webhook": {"url": f"{receiver.url}/ok", "secret_env": "KEEL_TEST_SECRET",
                                **fast}}]},
        {"name": "age-drift-2", "when": "drift.age.psi > 0.2 for 2 windows", "cooldown": "0s",
         "sinks": [{"command": {"argv": [sys.executable, "-c", script]}}]},
        {"name": "any-drift", "when": "drift.any_feature.psi > 0.2", "cooldown": "2d",
         "severity": "critical",
         "sinks": ["log", {"webhook": {"url": f"{receiver.url}/fail", **fast}}]},
        {"name": "auc", "when": "performance.roc_auc.estimated < 0.01", "cooldown": "0s"},
    ]  # fmt: skip
    (root / "keel.yaml").write_text(yaml.safe_dump(config))
    keel.run(root)
    os.environ["KEEL_TEST_SECRET"] = SECRET
    yield root
    os.environ.pop("KEEL_TEST_SECRET", None)


def write_day(root: Path, rows: list[dict[str, Any]], start: int, name: str = "1-a.jsonl") -> None:
    scores = np.random.default_rng(start % 97).random(len(rows))
    records = [
        {"request_id": f"r{start}-{i}", "time": start + 1 + i // 10, "model": "adult",
         "model_version": "1", "role": "primary", "inputs": rows[i : i + 10],
         "predictions": [">50K" if s >= 0.5 else "<=50K" for s in scores[i : i + 10]],
         "probabilities": scores[i : i + 10].tolist()}
        for i in range(0, len(rows), 10)
    ]  # fmt: skip
    day = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d")
    folder = root / ".keel" / "predictions" / "adult" / day
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / name).open("ab") as handle:
        handle.write(b"".join(orjson.dumps(r) + b"\n" for r in records))


@pytest.fixture(scope="module")
def served(project: Path, adult_test_table: Any, today: int) -> dict[str, int]:
    """Five daily windows ending today (still open): stable, drift, stable, drift, drift."""
    table = adult_test_table.drop_columns(["income"])
    stable = table.slice(0, 6000).to_pylist()
    old = table.sort_by([("age", "descending")]).slice(0, 3000).to_pylist()
    days = {0: stable[:1000], 1: old[:1000], 2: stable[1000:2000], 3: old[1000:2000],
            4: old[2000:3000]}  # fmt: skip
    first = today - 4 * DAY
    for offset, rows in days.items():
        write_day(project, rows, first + offset * DAY)
    return {"first": first}


def day_iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def test_rules_fire_once_per_span_with_cooldown_sinks_and_events(
    project: Path, served: dict[str, int], receiver: Receiver
) -> None:
    first = served["first"]
    with Project(project) as proj, ScheduleStore(proj.db_url) as schedules:
        baseline = observe_event("alert", "adult", project, schedules, None).cursor

    result = keel.monitor_run("adult", window="1d", project=project, patience=30)

    assert result["windows_checked"] == 5 and result["version"] == "1"
    fired = {(a["rule"], a["window_start"], a["window_end"]) for a in result["alerts"]}
    d = [day_iso(first + k * DAY) for k in range(6)]
    assert fired == {
        ("age-drift", d[1], d[2]), ("age-drift", d[3], d[4]), ("age-drift", d[4], d[5]),
        ("age-drift-2", d[3], d[5]),  # two consecutive windows: 3 and 4, not 1 alone
        ("any-drift", d[1], d[2]), ("any-drift", d[3], d[4]),  # 4 is within 2d of 3
    }  # fmt: skip
    assert [s["reason"][:8] for s in result["skipped"]] == ["cooldown"]
    assert result["skipped"][0]["start"] == d[4]
    alert = next(a for a in result["alerts"] if a["rule"] == "age-drift-2")
    values = [w["value"] for w in alert["evidence"]["windows"]]
    assert len(values) == 2 and min(values) > 0.2 and alert["value"] == values[-1]
    assert alert["message"].startswith("drift.age.psi = ") and "2 consecutive" in alert["message"]
    context = alert["evidence"]["context"]  # the quantity in every window up to the span, to plot
    assert [w["start"] for w in context] == d[:5]
    assert context[0]["value"] < 0.2 < context[1]["value"] and context[-1]["value"] == values[-1]
    assert result["checked_until"] == d[4]  # today's window is still open

    # webhook: three signed POSTs to /ok; the failing endpoint got every attempt, then failed
    ok = [(h, b) for p, h, b in receiver.received if p == "/ok"]
    assert len(ok) == 3
    for headers, body in ok:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["Keel-Signature"], expected)
        sent = json.loads(body)
        assert sent["kind"] == "alert" and sent["rule"] == "age-drift"
        assert headers["Keel-Alert-Id"] == str(sent["id"]) and headers["Keel-Event"] == "alert"
    assert len([p for p, _, _ in receiver.received if p == "/fail"]) == 2 * 3
    assert result["deliveries"] == {"delivered": 3 + 1 + 2, "retrying": 0, "failed": 2}
    any_drift = next(a for a in result["alerts"] if a["rule"] == "any-drift")
    shown = keel.get_alert(any_drift["id"], project=project)
    webhook = next(x for x in shown["deliveries"] if x["sink"] == "webhook")
    assert webhook["status"] == "failed" and webhook["attempts"] == 3
    assert webhook["last_error"] == "HTTP 500 Internal Server Error"
    assert next(x for x in shown["deliveries"] if x["sink"] == "log")["status"] == "delivered"

    # command: the alert as JSON on stdin
    lines = (project / "command-out.jsonl").read_bytes().splitlines()
    received = [json.loads(line) for line in lines if line.strip()]
    assert [r["rule"] for r in received] == ["age-drift-2"]
    assert received[0]["evidence"]["for_windows"] == 2

    # each alert recorded an `alert` event about the model: the scheduler's trigger moves
    with Project(project) as proj, ScheduleStore(proj.db_url) as schedules:
        moved = observe_event("alert", "adult", project, schedules, baseline)
        other = observe_event("alert", "income", project, schedules, {"event_id": 0})
        events = schedules.events_after("alert", 0, subject="adult", limit=50)
    assert moved.reason is not None and moved.reason.startswith("alert: adult: drift.")
    assert moved.cursor["event_id"] > baseline["event_id"] and other.reason is None
    assert len(events) == 6 and {e.payload["rule"] for e in events} >= {"age-drift-2"}

    # a second run over the same log: today's open window is checked again, nothing new fires
    again = keel.monitor_run("adult", window="1d", project=project, patience=0)
    assert again["alerts"] == [] and again["windows_checked"] == 1
    reasons = sorted((s["rule"], s["reason"][:9]) for s in again["skipped"])
    assert reasons == [("age-drift", "duplicate"), ("age-drift-2", "duplicate"),
                       ("any-drift", "cooldown:")]  # fmt: skip
    assert len(keel.alerts(model="adult", project=project)) == 6


def test_cli_lists_shows_and_acknowledges(project: Path, served: dict[str, int]) -> None:
    listed = cli("alerts", "list", "--model", "adult", "--status", "open", "--format", "json",
                 cwd=project)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    alerts = json.loads(listed.stdout)
    target = alerts[-1]["id"]
    plot = project / "evidence.svg"
    shown = cli("alerts", "show", str(target), "--plot", str(plot), cwd=project)
    assert shown.returncode == 0 and "evidence" in shown.stdout and "delivery to" in shown.stdout
    svg = plot.read_text()
    assert svg.startswith("<svg") and 'data-chart="alert-evidence"' in svg and "threshold" in svg
    acked = cli("alerts", "ack", str(target), "--actor", "ana", "--format", "json", cwd=project)
    assert acked.returncode == 0, acked.stderr
    state = json.loads(acked.stdout)
    assert state["status"] == "acknowledged" and state["status_by"] == "ana"
    still_open = keel.alerts(model="adult", status="open", project=project)
    assert target not in [a["id"] for a in still_open] and len(still_open) == len(alerts) - 1
    for bad, code, words in ((("alerts", "show", "99999"), 1, "no alert with id 99999"),
                             (("alerts", "list", "--status", "closed"), 2,
                              "unknown alert status 'closed'; expected one of open")):  # fmt: skip
        result = cli(*bad, cwd=project)
        assert result.returncode == code and words in result.stderr
        assert "Traceback" not in result.stderr + result.stdout


def test_monitor_run_cli_loops_and_refuses_bad_rules(project: Path, served: dict[str, int]) -> None:
    looped = cli("monitor", "run", "adult", "--window", "1d", "--every", "1s", "--times", "2",
                 cwd=project)  # fmt: skip
    assert looped.returncode == 0, looped.stderr
    assert looped.stdout.count("checked 1 window(s) of 1d for adult@1") == 2
    assert "not fired: age-drift" in looped.stdout

    config = (project / "keel.yaml").read_text()
    try:
        data = yaml.safe_load(config)
        data["monitor"]["alerts"] = [{"name": "x", "when": "drift.salary.psi > 0.2"}]
        (project / "keel.yaml").write_text(yaml.safe_dump(data))
        bad = cli("monitor", "run", "adult", "--window", "1d", cwd=project)
        assert bad.returncode == 2 and "monitor.alerts[0].when: 'salary'" in bad.stderr
        data["monitor"]["alerts"] = [{"name": "x", "when": "drift.age.psi > > 0.2"}]
        (project / "keel.yaml").write_text(yaml.safe_dump(data))
        bad = cli("monitor", "run", "adult", cwd=project)
        assert bad.returncode == 2 and "monitor.alerts.0.when" in bad.stderr
        assert "Traceback" not in bad.stderr + bad.stdout
    finally:
        (project / "keel.yaml").write_text(config)


def test_report_and_prometheus_from_the_cli(project: Path, served: dict[str, int]) -> None:
    page = project / "report.html"
    result = cli("monitor", "adult", "--window", "1d", "--report", str(page), "--format",
                 "prometheus", cwd=project)  # fmt: skip
    assert result.returncode == 1, result.stderr  # the latest window drifted
    text = page.read_text()
    assert 'id="alerts"' in text and "age-drift-2" in text and "<script" not in text
    assert 'data-chart="drift-heatmap"' in text
    gauges = dict(
        line.rsplit(" ", 1) for line in result.stdout.splitlines() if not line.startswith("#")
    )
    report = keel.monitor("adult", window="1d", project=project)
    latest = report["windows"][-1]
    age = next(c for c in latest["columns"] if c["column"] == "age")
    key = 'keel_monitor_feature_psi{model="adult",version="1",feature="age"}'
    assert float(gauges[key]) == pytest.approx(age["psi"], rel=1e-5)
    assert float(gauges['keel_monitor_window_rows{model="adult",version="1"}']) == latest["rows"]
    assert 'keel_monitor_estimated_roc_auc{model="adult",version="1"}' in gauges
    # the same from Python
    assert key in keel.monitor_metrics("adult", window="1d", project=project)
    again = project / "again.html"
    keel.monitor_report("adult", again, window="1d", project=project)
    assert 'id="estimated-performance"' in again.read_text() and "age-drift-2" in text


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200", "KEEL_TEST_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300, env=env)  # fmt: skip


def test_a_whole_log_window_carries_realised_performance_to_the_rules() -> None:
    from keel.monitor.alerts import _whole, evaluate
    from keel.monitor.rules import AlertRule, parse_condition

    report = {
        "rows": 200,
        "windows": [],
        "realised": {"status": "ok", "metrics": {"accuracy": {"value": 0.9, "low": 0.8}}},
    }
    condition = parse_condition("performance.accuracy.realised < 0.95")
    rule = AlertRule("low", condition, "warning", 0.0, ())
    [firing] = evaluate([rule], [_whole(report)])
    assert firing.value == 0.9
