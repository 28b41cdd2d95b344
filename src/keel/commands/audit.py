"""`keel audit` (the append-only audit log, filtered) and `keel webhooks` (deliver, list)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, out
from keel.errors import ConfigError

__all__ = ["parse_since", "register"]

_AGO = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(app: typer.Typer) -> None:
    """Add `keel audit` and `keel webhooks ...` to the `keel` app."""
    app.command("audit")(audit)
    hooks = typer.Typer(
        help="Registry webhooks: send due deliveries now, list deliveries.",
        no_args_is_help=True,
    )
    hooks.command("deliver")(deliver)
    hooks.command("list")(deliveries)
    app.add_typer(hooks, name="webhooks")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``24h``/``7d``/``30m`` ago, or an ISO date or time (UTC unless it says otherwise)."""
    match = _AGO.match(text)
    current = now or datetime.now(UTC)
    if match is not None:
        return current - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        msg = f"--since {text!r} is neither a duration (24h, 7d) nor an ISO date (2026-01-31)"
        raise ConfigError(msg, field="since") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def audit(
    target: Annotated[
        str | None, typer.Option("--target", help="A model's name, or token:NAME.")
    ] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Who acted.")] = None,
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            help="register, promote, rollback, request_promotion, "
            "approve, reject, archive, restore, delete_version, token_create, ...",
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="24h, 7d, or an ISO date/time (UTC).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many.")] = 50,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """The audit log, newest first: who did what to which model or token, when, and why.

    It is append-only: the database refuses UPDATE and DELETE on it."""
    from keel import api
    from keel.commands.models import describe

    when = parse_since(since) if since is not None else None
    with api.registry(project) as reg:
        found = reg.audit(target=target, actor=actor, action=action, since=when, limit=limit)
    if fmt is Format.json:
        emit_json({"entries": [e.to_json() for e in found]})
        return
    if not found:
        out.print("no audit entries match")
        return
    table = Table(show_edge=False)
    for col in ("id", "at (UTC)", "actor", "action", "target", "details"):
        table.add_column(col)
    for e in found:
        table.add_row(
            str(e.id),
            f"{e.at:%Y-%m-%d %H:%M:%S}",
            escape(e.actor),
            e.action,
            escape(e.target),
            escape(describe(e.details)),
        )
    out.print(table)


def deliver(
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many POSTs.")] = 100,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per POST.")] = 5.0,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Send the webhook deliveries that are due now (keel scheduler does this on its own)."""
    from keel import api
    from keel.registry.webhooks import deliver_pending

    with api.registry(project) as reg:
        report = deliver_pending(reg.database, limit=limit, timeout=timeout)
    if fmt is Format.json:
        emit_json(report.to_json())
        return
    out.print(
        f"webhooks: {report.delivered} delivered, {report.retrying} to retry, "
        f"{report.failed} failed"
    )


def deliveries(
    status: Annotated[
        str | None, typer.Option("--status", help="pending, delivered or failed.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many.")] = 50,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Webhook deliveries, newest first, with attempts and the last error."""
    from keel import api
    from keel.registry.webhooks import list_deliveries

    if status is not None and status not in ("pending", "delivered", "failed"):
        raise ConfigError(f"--status {status!r}: use pending, delivered or failed")
    with api.registry(project) as reg:
        found = list_deliveries(reg.database, status=status, limit=limit)
    if fmt is Format.json:
        emit_json({"deliveries": [d.to_json() for d in found]})
        return
    table = Table(show_edge=False)
    for col in ("id", "event", "url", "status", "attempts", "last error"):
        table.add_column(col)
    for d in found:
        table.add_row(
            str(d.id),
            str(d.event_id),
            escape(d.url),
            d.status,
            str(d.attempts),
            escape(d.last_error or ""),
        )
    out.print(table)
