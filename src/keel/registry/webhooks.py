"""Webhook delivery: POST each registry event to the URLs that asked for it, signed, retried.

The registry writes one ``webhook_deliveries`` row per (event, webhook) in the transaction that
emits the event, so nothing is lost between a change and its notification, and a restarted
deliverer resumes where the last one stopped. :func:`deliver_pending` sends what is due: a JSON
body (the event), headers ``Keel-Event-Id``, ``Keel-Event`` and, when the webhook names a
``secret_env``, ``Keel-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>``. A 2xx
answer delivers; anything else (an error, a timeout, another status) is retried after
``base_delay * 2**(attempts-1)`` seconds (capped at an hour), until ``max_attempts``, when the
delivery is marked failed. ``keel scheduler`` (while leading) and ``keel webhooks deliver``
call it. Delivery is at least once: receivers deduplicate on ``Keel-Event-Id``.

Receivers check the signature as::

    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    hmac.compare_digest(expected, request.headers["Keel-Signature"])
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from keel.settings import environment_variable
from keel.store.database import Database
from keel.store.tables import events, utc_now, webhook_deliveries

__all__ = ["DeliveryReport", "WebhookDelivery", "deliver_pending", "list_deliveries", "sign"]

MAX_DELAY_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one :func:`deliver_pending` pass did."""

    delivered: int
    retrying: int
    failed: int

    @property
    def attempted(self) -> int:
        return self.delivered + self.retrying + self.failed

    def to_json(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "retrying": self.retrying, "failed": self.failed}


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event's delivery to one URL and where it stands."""

    id: int
    event_id: int
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    last_status_code: int | None
    delivered_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_id": self.event_id,
            "url": self.url,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "last_error": self.last_error,
            "last_status_code": self.last_status_code,
            "delivered_at": None if self.delivered_at is None else self.delivered_at.isoformat(),
        }


def sign(secret: str, body: bytes) -> str:
    """The ``Keel-Signature`` header value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver_pending(
    db: Database,
    *,
    limit: int = 50,
    timeout: float = 5.0,
    max_attempts: int = 8,
    base_delay: float = 2.0,
    now: datetime | None = None,
) -> DeliveryReport:
    """Send every pending delivery that is due (at most ``limit``, oldest first).

    Each POST waits at most ``timeout`` seconds, so one pass takes at most about
    ``limit * timeout`` seconds.
    """
    when = now or utc_now()
    query = (
        sa.select(
            webhook_deliveries,
            events.c.kind,
            events.c.subject,
            events.c.payload,
            events.c.created_at.label("event_created_at"),
        )
        .join(events, events.c.id == webhook_deliveries.c.event_id)
        .where(
            webhook_deliveries.c.status == "pending", webhook_deliveries.c.next_attempt_at <= when
        )
        .order_by(webhook_deliveries.c.id)
        .limit(limit)
    )
    with db.read() as conn:
        due = [dict(row) for row in conn.execute(query).mappings()]
    delivered = retrying = failed = 0
    for row in due:
        ok, code, error = _post(row, timeout)
        attempts = int(row["attempts"]) + 1
        values: dict[str, Any] = {"attempts": attempts, "last_status_code": code}
        if ok:
            values.update(status="delivered", delivered_at=utc_now(), last_error=None)
            delivered += 1
        elif attempts >= max_attempts:
            values.update(status="failed", last_error=error)
            failed += 1
        else:
            delay = min(base_delay * 2 ** (attempts - 1), MAX_DELAY_SECONDS)
            values.update(last_error=error, next_attempt_at=utc_now() + timedelta(seconds=delay))
            retrying += 1
        with db.write() as conn:
            conn.execute(
                sa.update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id == row["id"],
                    webhook_deliveries.c.attempts == row["attempts"],
                )
                .values(**values)
            )
    return DeliveryReport(delivered, retrying, failed)


def list_deliveries(
    db: Database, *, status: str | None = None, limit: int = 100
) -> list[WebhookDelivery]:
    """Deliveries newest first (of one status when asked)."""
    query = sa.select(webhook_deliveries)
    if status is not None:
        query = query.where(webhook_deliveries.c.status == status)
    query = query.order_by(webhook_deliveries.c.id.desc()).limit(limit)
    with db.read() as conn:
        return [
            WebhookDelivery(
                id=int(r["id"]),
                event_id=int(r["event_id"]),
                url=r["url"],
                status=r["status"],
                attempts=int(r["attempts"]),
                next_attempt_at=r["next_attempt_at"],
                last_error=r["last_error"],
                last_status_code=r["last_status_code"],
                delivered_at=r["delivered_at"],
            )
            for r in conn.execute(query).mappings()
        ]


def _post(row: dict[str, Any], timeout: float) -> tuple[bool, int | None, str | None]:
    body = orjson.dumps(
        {
            "id": int(row["event_id"]),
            "kind": row["kind"],
            "subject": row["subject"],
            "created_at": row["event_created_at"].isoformat(),
            "payload": row["payload"],
        }
    )
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "keel-webhooks",
        "Keel-Event-Id": str(row["event_id"]),
        "Keel-Event": str(row["kind"]),
    }
    if row["secret_env"]:
        secret = environment_variable(row["secret_env"])
        if not secret:
            return False, None, f"environment variable {row['secret_env']} (secret_env) is not set"
        headers["Keel-Signature"] = sign(secret, body)
    request = urllib.request.Request(row["url"], data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            code = int(answer.status)
    except urllib.error.HTTPError as exc:
        return False, int(exc.code), f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, None, f"{type(exc).__name__}: {reason}"
    return (200 <= code < 300), code, None if 200 <= code < 300 else f"HTTP {code}"
