"""Webhooks: a real HTTP server on 127.0.0.1 receives signed registry events; a failing
receiver is retried with backoff, and the delivery state survives a restart."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from keel.config.registry import RegistryConfig
from keel.registry.registry import Registry
from keel.registry.webhooks import deliver_pending, list_deliveries
from keel.store import MetadataStore
from keel.store.tables import utc_now

SECRET = "s3cret-for-tests"


class Receiver:
    """An HTTP server that records each POST and answers with the next scripted status."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.received.append({"headers": dict(self.headers), "body": body})
                status = owner.statuses.pop(0) if owner.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    with MetadataStore(f"sqlite:///{tmp_path}/keel.db") as opened:
        yield opened


def _registry(store: MetadataStore, url: str, events: list[str]) -> Registry:
    config = RegistryConfig.model_validate(
        {"webhooks": [{"url": url, "events": events, "secret_env": "KEEL_TEST_HOOK_SECRET"}]}
    )
    return Registry(store.database, config, actor="alice")


def test_signed_delivery_of_the_subscribed_events(
    store: MetadataStore, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_TEST_HOOK_SECRET", SECRET)
    reg = _registry(store, receiver.url, ["alias_moved"])
    reg.register("m", package_sha256="a" * 64, run_id=None, metrics={})
    reg.promote("m", 1, alias="production", reason="ship")
    report = deliver_pending(store.database, timeout=5)
    assert (report.delivered, report.retrying, report.failed) == (1, 0, 0)
    assert len(receiver.received) == 1  # model_registered was not subscribed
    got = receiver.received[0]
    body = got["body"]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got["headers"]["Keel-Signature"], expected)
    event = json.loads(body)
    assert got["headers"]["Keel-Event-Id"] == str(event["id"])
    assert event["kind"] == "alias_moved" and event["subject"] == "m"
    assert event["payload"]["version"] == 1 and event["payload"]["actor"] == "alice"
    assert deliver_pending(store.database).attempted == 0  # delivered once, not again
    assert list_deliveries(store.database)[0].status == "delivered"


def test_failures_are_retried_with_backoff_and_survive_a_restart(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_TEST_HOOK_SECRET", SECRET)
    url = f"sqlite:///{tmp_path}/keel.db"
    receiver.statuses = [500, 503]
    with MetadataStore(url) as store:
        reg = _registry(store, receiver.url, [])
        reg.register("m", package_sha256="a" * 64, run_id=None, metrics={})
        first = deliver_pending(store.database, base_delay=60)
        assert first.retrying == 1
        pending = list_deliveries(store.database)[0]
        assert (pending.status, pending.attempts, pending.last_status_code) == ("pending", 1, 500)
        wait = pending.next_attempt_at - utc_now()
        assert timedelta(seconds=55) < wait <= timedelta(seconds=60)
        assert deliver_pending(store.database).attempted == 0  # not due yet
    # a new process (store) later: the state is in the database
    with MetadataStore(url) as store:
        later = utc_now() + timedelta(seconds=61)
        assert deliver_pending(store.database, base_delay=60, now=later).retrying == 1
        second = list_deliveries(store.database)[0]
        wait = second.next_attempt_at - utc_now()
        assert timedelta(seconds=115) < wait <= timedelta(seconds=120)  # doubled
        much_later = utc_now() + timedelta(seconds=121)
        assert deliver_pending(store.database, now=much_later).delivered == 1
    assert len(receiver.received) == 3
    ids = {r["headers"]["Keel-Event-Id"] for r in receiver.received}
    assert len(ids) == 1  # the same event each time: receivers deduplicate on it


def test_gives_up_after_max_attempts_and_reports_a_missing_secret(
    store: MetadataStore, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEEL_TEST_HOOK_SECRET", raising=False)
    reg = _registry(store, receiver.url, [])
    reg.register("m", package_sha256="a" * 64, run_id=None, metrics={})
    report = deliver_pending(store.database, max_attempts=1)
    assert report.failed == 1
    failed = list_deliveries(store.database, status="failed")[0]
    assert "KEEL_TEST_HOOK_SECRET" in (failed.last_error or "")
    assert receiver.received == []  # never sent unsigned


def test_an_unreachable_url_is_retried(store: MetadataStore) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = RegistryConfig.model_validate({"webhooks": [{"url": f"http://127.0.0.1:{port}/"}]})
    reg = Registry(store.database, config, actor="alice")
    reg.register("m", package_sha256="a" * 64, run_id=None, metrics={})
    assert deliver_pending(store.database, timeout=2).retrying == 1
    assert "Error" in (list_deliveries(store.database)[0].last_error or "")


def test_webhook_config_is_checked() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must start with http"):
        RegistryConfig.model_validate({"webhooks": [{"url": "ftp://x"}]})
    with pytest.raises(ValidationError, match="unknown webhook event"):
        RegistryConfig.model_validate({"webhooks": [{"url": "http://x", "events": ["nope"]}]})
    with pytest.raises(ValidationError, match="not an environment variable name"):
        RegistryConfig.model_validate({"webhooks": [{"url": "http://x", "secret_env": "a b"}]})
    with pytest.raises(ValidationError, match="approvals key"):
        RegistryConfig.model_validate({"approvals": {"latest": 1}})


def test_the_scheduler_delivers_while_it_leads(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.pipeline.scheduler import Scheduler
    from keel.store.schedules import ScheduleStore

    monkeypatch.setenv("KEEL_TEST_HOOK_SECRET", SECRET)
    url = f"sqlite:///{tmp_path}/keel.db"
    with MetadataStore(url) as store:
        reg = _registry(store, receiver.url, ["model_registered"])
        reg.register("m", package_sha256="a" * 64, run_id=None, metrics={"auc": float("nan")})
        assert reg.show("m", 1).metrics == {"auc": None}  # NaN stored as null
    lines: list[str] = []
    with ScheduleStore(url) as schedules:
        scheduler = Scheduler(schedules, lambda request: {}, root=tmp_path, log=lines.append)
        scheduler.run_due(generation=1)
    assert len(receiver.received) == 1
    assert json.loads(receiver.received[0]["body"])["kind"] == "model_registered"
    assert any("1 delivered" in line for line in lines)
