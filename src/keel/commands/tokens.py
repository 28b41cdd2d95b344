"""`keel tokens`: create, list and revoke the server's API tokens (each change audited)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from keel.commands.models import ActorOpt
from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, err, out

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add `keel tokens ...` to the `keel` app."""
    group = typer.Typer(
        help="API tokens for keel serve: create (the secret is shown once), list, revoke.",
        no_args_is_help=True,
    )
    group.command("create")(create)
    group.command("list")(list_)
    group.command("revoke")(revoke)
    app.add_typer(group, name="tokens")


def create(
    name: Annotated[str, typer.Argument(help="A name for the token (unique).")],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            "-s",
            help="predict, read or admin (admin implies the others); repeat for several.",
        ),
    ],
    rate_limit: Annotated[
        int | None, typer.Option("--rate-limit", help="Requests per minute it may make.")
    ] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="Lifetime: 30d, 12h, 2w, 90m.")
    ] = None,
    actor: ActorOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Create a token and print its secret: it is shown this once and stored only hashed."""
    from keel.project import Project
    from keel.settings import current_actor
    from keel.store.tokens import create_token, parse_expiry

    lifetime = parse_expiry(expires) if expires is not None else None
    with Project(project) as proj:
        info, secret = create_token(
            proj.metadata.database,
            name,
            scope,
            created_by=current_actor(actor),
            rate_limit_per_minute=rate_limit,
            expires_in=lifetime,
        )
    if fmt is Format.json:
        emit_json({**info.to_json(), "secret": secret})
        return
    expiry = f", expires {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else ""
    out.print(f"token {escape(info.name)} ({info.id}): {', '.join(info.scopes)}{expiry}")
    out.print(secret, highlight=False, markup=False)
    err.print("store the secret now: Keel keeps only its sha256 and cannot show it again")


def list_(project: ProjectOpt = None, fmt: FormatOpt = Format.text) -> None:
    """Every token (never the secrets): scopes, state, expiry, rate limit."""
    from keel.project import Project
    from keel.store.tokens import list_tokens

    with Project(project) as proj:
        found = list_tokens(proj.metadata.database)
    if fmt is Format.json:
        emit_json({"tokens": [t.to_json() for t in found]})
        return
    if not found:
        out.print("no API tokens; create one with `keel tokens create NAME --scope predict`")
        return
    # compact, as `keel deployments list`: at 80 columns the id (what `revoke` takes) and the
    # day it was created stay whole; names, scopes and expiry wrap instead
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=0)
    for col in ("id", "name", "scopes", "state", "created", "by", "expires", "limit"):
        whole = col in ("id", "state", "created", "limit")
        table.add_column(
            col,
            no_wrap=whole,
            overflow="ellipsis" if whole else "fold",
            min_width=10 if col == "expires" else None,  # the day on one line, the time below
        )
    for t in found:
        state = "revoked" if t.revoked_at else ("active" if t.active() else "expired")
        table.add_row(
            t.id,
            escape(t.name),
            ", ".join(t.scopes),
            state,
            f"{t.created_at:%Y-%m-%d}",
            escape(t.created_by),
            f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "-",
            str(t.rate_limit_per_minute or "-"),
        )
    out.print(table)


def revoke(
    token: Annotated[str, typer.Argument(help="The token's name or id.")],
    actor: ActorOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Revoke a token: running servers refuse it within 5 seconds.

    A server trusts a token it verified for 5 seconds (a request costs a lookup,
    not a database query), so the token may still pass for up to that long.
    """
    from keel.project import Project
    from keel.settings import current_actor
    from keel.store.tokens import revoke_token

    with Project(project) as proj:
        info = revoke_token(proj.metadata.database, token, current_actor(actor))
    if fmt is Format.json:
        emit_json(info.to_json())
        return
    out.print(f"revoked token {escape(info.name)} ({info.id})")
    from keel.serve.auth import TRUST_S

    err.print(
        f"running servers refuse it within {TRUST_S:g} s (they trust a checked token that long)"
    )
