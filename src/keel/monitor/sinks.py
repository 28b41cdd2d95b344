"""Alert sinks: the log, a signed webhook, a command; retried with backoff, state stored.

Every alert has one ``alert_deliveries`` row per sink of its rule, written with the alert.
:func:`deliver_pending` sends the ones that are due:

- ``log``: one line on the ``keel.alerts`` logger (level from the severity); always delivered.
- ``webhook``: a JSON POST of the alert with headers ``Keel-Event: alert``, ``Keel-Alert-Id``,
  ``Keel-Delivery-Id`` and, when the sink names a ``secret_env``, ``Keel-Signature:
  sha256=<hex HMAC-SHA256 of the body>``, exactly as the registry's webhooks
  (:func:`keel.registry.webhooks.sign`); a 2xx answer delivers.
- ``command``: the program runs (no shell) with the alert as JSON on its standard input and
  ``KEEL_ALERT_ID``, ``KEEL_ALERT_RULE``, ``KEEL_ALERT_SEVERITY`` in its environment, for at most
  its ``timeout``; exit status 0 delivers.

A failed attempt is retried after ``backoff * 2**(attempts-1)`` seconds (capped at an hour)
until the sink's ``attempts`` are spent, when the delivery is marked failed with its last error.
Delivery is at least once: receivers deduplicate on ``Keel-Alert-Id``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from keel.registry.webhooks import sign
from keel.settings import environment_variable
from keel.store.alert_store import Alert, AlertDelivery, AlertStore
from keel.store.tables import utc_now

__all__ = ["DeliveryCount", "alert_body", "deliver_pending", "log_line"]

_log = logging.getLogger("keel.alerts")
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}
MAX_DELAY_SECONDS = 3600.0
_OUTPUT_CHARS = 500


@dataclass(frozen=True, slots=True)
class DeliveryCount:
    """What a :func:`deliver_pending` call did."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"delivered": self.delivered, "retrying": self.retrying, "failed": self.failed}


def alert_body(alert: Alert) -> bytes:
    """The JSON a webhook or a command receives."""
    return orjson.dumps({"kind": "alert", **alert.to_dict()})


def log_line(alert: Alert) -> str:
    """The alert in one line."""
    from keel.monitor.window import window_span  # Arrow-backed module: only when logging

    role = f" ({alert.role})" if alert.role else ""
    return (
        f"alert #{alert.id} [{alert.severity}] {alert.rule} on {alert.model}@{alert.version}{role}"
        f", window {window_span(alert.window_start, alert.window_end)}: {alert.message}"
    )


def deliver_pending(store: AlertStore, *, patience: float = 0.0, limit: int = 50) -> DeliveryCount:
    """Send every due delivery; wait for retries that fall due within ``patience`` seconds.

    With ``patience=0`` each due delivery gets one attempt and a failure is left pending for a
    later call; a one-off ``keel monitor run`` waits so that its retries happen before it ends.
    """
    deadline = time.monotonic() + patience
    outcome: dict[int, str] = {}  # each delivery's latest status
    while True:
        for delivery in store.due(utc_now(), limit=limit):
            status = _attempt(store, delivery)
            if status is not None:
                outcome[delivery.id] = status
        upcoming = store.next_due()
        wait = 0.0 if upcoming is None else max((upcoming - utc_now()).total_seconds(), 0.0)
        if upcoming is None or time.monotonic() + wait > deadline:
            statuses = list(outcome.values())
            return DeliveryCount(
                delivered=statuses.count("delivered"),
                retrying=statuses.count("pending"),
                failed=statuses.count("failed"),
            )
        time.sleep(wait)


def _attempt(store: AlertStore, delivery: AlertDelivery) -> str | None:
    """One attempt; its stored status (None: another process attempted it meanwhile)."""
    alert = store.get(delivery.alert_id)
    spec = delivery.spec
    if delivery.sink == "log":
        _log.log(_LEVELS.get(alert.severity, logging.WARNING), "%s", log_line(alert))
        ok, code, error, final = True, None, None, False
    elif delivery.sink == "webhook":
        ok, code, error, final = _post(alert, delivery, spec)
    else:
        ok, code, error, final = _run(alert, spec)
    attempts = delivery.attempts + 1
    if ok:
        status, next_at = "delivered", utc_now()
    elif final or attempts >= int(spec.get("attempts", 1)):
        status, next_at = "failed", utc_now()
    else:
        delay = min(float(spec.get("backoff", 1.0)) * 2 ** (attempts - 1), MAX_DELAY_SECONDS)
        status, next_at = "pending", utc_now() + timedelta(seconds=delay)
    stored = store.attempted(
        delivery, status=status, error=error, code=code, next_attempt_at=next_at
    )
    if not stored:
        return None
    if status == "failed":
        _log.error("alert #%s: %s delivery to %s failed: %s", alert.id, delivery.sink,
                   delivery.target, error)  # fmt: skip
    return status


def _post(
    alert: Alert, delivery: AlertDelivery, spec: Any
) -> tuple[bool, int | None, str | None, bool]:
    """``(ok, status code, error, final)``: final means retrying cannot help."""
    body = alert_body(alert)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "keel-alerts",
        "Keel-Event": "alert",
        "Keel-Alert-Id": str(alert.id),
        "Keel-Delivery-Id": str(delivery.id),
    }
    secret_env = spec.get("secret_env")
    if secret_env:
        secret = environment_variable(secret_env)
        if not secret:
            return False, None, f"environment variable {secret_env} (secret_env) is not set", True
        headers["Keel-Signature"] = sign(secret, body)
    request = urllib.request.Request(spec["url"], data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=float(spec.get("timeout", 5.0))) as answer:
            code = int(answer.status)
    except urllib.error.HTTPError as exc:
        return False, int(exc.code), f"HTTP {exc.code} {exc.reason}", False
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, None, f"{type(exc).__name__}: {reason}", False
    if 200 <= code < 300:
        return True, code, None, False
    return False, code, f"HTTP {code}", False


def _run(alert: Alert, spec: Any) -> tuple[bool, int | None, str | None, bool]:
    argv = [str(a) for a in spec["argv"]]
    env = os.environ | {
        "KEEL_ALERT_ID": str(alert.id),
        "KEEL_ALERT_RULE": alert.rule,
        "KEEL_ALERT_SEVERITY": alert.severity,
    }
    try:
        done = subprocess.run(  # argv from keel.yaml, never a shell
            argv,
            input=alert_body(alert),
            capture_output=True,
            timeout=float(spec.get("timeout", 10.0)),
            env=env,
            check=False,
        )
    except FileNotFoundError:
        return False, None, f"command not found: {argv[0]} (monitor.alerts sinks command)", True
    except PermissionError:
        return False, None, f"command not executable: {argv[0]}", True
    except subprocess.TimeoutExpired:
        return False, None, f"command timed out after {spec.get('timeout', 10.0)} s", False
    if done.returncode == 0:
        return True, 0, None, False
    tail = done.stderr.decode(errors="replace").strip()[-_OUTPUT_CHARS:]
    return False, done.returncode, f"exit status {done.returncode}: {tail}", False
