"""`keel models`: list, show, card, promote, rollback, approve, reject, archive, restore, delete,
history and requests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from keel.commands.card import card
from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, out, print_wrapped

if TYPE_CHECKING:
    from keel.registry.records import AliasMove, PromotionRequest, VersionInfo
    from keel.registry.registry import Registry

__all__ = ["ActorOpt", "register"]

ActorOpt = Annotated[
    str | None,
    typer.Option(
        "--actor", help="Who is acting, for the audit log (default: KEEL_ACTOR, else the OS user)."
    ),
]
NameArg = Annotated[str, typer.Argument(help="The model's name.")]
VersionArg = Annotated[int, typer.Argument(help="The version number.")]
AliasOpt = Annotated[
    str, typer.Option("--alias", "-a", help="The alias (production, staging, any name).")
]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why, for the audit log.")]


def register(app: typer.Typer) -> typer.Typer:
    """Add `keel models ...` to the `keel` app; the group, for others to add commands to."""
    group = typer.Typer(
        help="The model registry: list, show, promote (with approvals), rollback, archive, "
        "history.",
        no_args_is_help=True,
    )
    for name, command in (
        ("list", list_),
        ("show", show),
        ("promote", promote),
        ("rollback", rollback),
        ("approve", approve),
        ("reject", reject),
        ("requests", requests),
        ("archive", archive),
        ("restore", restore),
        ("delete", delete),
        ("history", history),
        ("card", card),
    ):
        group.command(name)(command)
    app.add_typer(group, name="models")
    return group


@contextmanager
def _registry(project: Any, actor: str | None) -> Iterator[Registry]:
    from keel import api

    with api.registry(project, actor=actor) as reg:
        yield reg


def list_(project: ProjectOpt = None, fmt: FormatOpt = Format.text) -> None:
    """Registered models, their latest version and aliases."""
    with _registry(project, None) as reg:
        found = reg.models()
    if fmt is Format.json:
        emit_json({"models": [m.to_json() for m in found]})
        return
    table = Table(show_edge=False)
    for col in ("model", "latest", "versions", "aliases"):
        table.add_column(col)
    for m in found:
        aliases = ", ".join(f"{a}->{v}" for a, v in m.aliases)
        table.add_row(escape(m.name), str(m.latest_version), str(m.versions), escape(aliases))
    out.print(table)


def show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS.")],
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Versions, aliases, metrics and package sha256 of a model (archived versions marked);
    for one version also its slices, gate verdicts, fairness disparities and input-column
    importance."""
    from keel import api

    shown = api.show_model(ref, project=project)
    with _registry(project, None) as reg:
        archived = {v.version: v for v in reg.versions(shown["name"]) if v.archived}
    for v in shown["versions"]:
        v["archived"] = v["version"] in archived
    if fmt is Format.json:
        emit_json(shown)
        return
    aliases = ", ".join(f"{a}->{v}" for a, v in shown["aliases"].items()) or "none"
    out.print(f"[bold]{escape(shown['name'])}[/]  aliases: {escape(aliases)}")
    for v in shown["versions"]:
        mark = "  [yellow]archived[/]" if v["archived"] else ""
        created = v["created_at"][:16].replace("T", " ")  # to the minute, UTC
        out.print(
            f"  v{v['version']}  {created} UTC  sha256={v['package_sha256'][:16]}  "
            f"{escape(' '.join(v['aliases']))}{mark}"
        )
        print_wrapped(_headline(v["metrics"]), indent=6)
        if len(shown["versions"]) == 1:  # one version's details: its metrics per slice too
            _print_slices(v.get("slices") or {})
            _print_gates(v.get("gates") or [])
            _print_fairness(v.get("fairness") or {})
            _print_importance(v.get("importance") or {})


def _print_fairness(fairness: dict[str, Any]) -> None:
    """Each ``data.sensitive`` feature's disparities (rates per group: ``keel models card``)."""
    for feature, audit in fairness.items():
        values = " ".join(
            f"{name}={_short(value) if value is not None else 'undefined'}"
            for name, value in audit.items()
            if name.endswith("_difference") and (value is not None or name in audit["undefined"])
        )
        print_wrapped(f"fairness {feature}: {values}", indent=4, markup=False)


def _print_importance(importance: dict[str, Any], top: int = 10) -> None:
    """The top input columns by permutation importance (mean +/- std drop in the headline
    metric), with mean |SHAP| beside them when stored."""
    shap = importance.get("mean_abs_shap") or {}
    permutation = importance.get("permutation") or {}
    columns = permutation.get("columns") or {}
    # stored JSON has sorted keys: rank by the importance itself, not by name
    order = sorted(columns, key=lambda c: -columns[c]["mean"]) or sorted(
        shap, key=lambda c: -shap[c]
    )
    if not order:
        return
    head = f"drop in {permutation['metric']} +/- std" if columns else ""
    out.print(f"    importance ({head + ', ' if head else ''}mean |SHAP|)", highlight=False)
    for column in order[:top]:
        drop = columns.get(column)
        shown = f"{drop['mean']:.4g} +/- {drop['std']:.2g}" if drop else "-"
        value = shap.get(column)
        out.print(
            f"      {escape(column)}: {shown}  |SHAP| {'-' if value is None else f'{value:.4g}'}",
            highlight=False,
        )


def _print_gates(gates: list[dict[str, Any]]) -> None:
    """Each gate the version was judged by: verdict, value, bound and why."""
    for gate in gates:
        mark = "[green]pass[/]" if gate["passed"] else "[red]FAIL[/]"
        value = "undefined" if gate["value"] is None else f"{gate['value']:.6g}"
        plain = gate["reason"].startswith(f"{gate['path']} = ")  # the numbers say it all
        why = "" if plain else f": {escape(gate['reason'])}"
        out.print(
            f"    gate {escape(gate['gate'])}: {mark} (value {value}, bound {gate['op']} "
            f"{gate['bound']:g}){why}",
            highlight=False,
        )


def promote(
    name: NameArg,
    version: VersionArg,
    alias: AliasOpt = "production",
    reason: ReasonOpt = "",
    expect: Annotated[
        str | None,
        typer.Option(
            "--expect",
            help="The version you expect holds the alias now ('none': "
            "unset); refused if it moved. Default: the holder read just before.",
        ),
    ] = None,
    actor: ActorOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Move an alias to a version, or open a pending request when the alias needs approvals."""
    from keel.errors import ConfigError
    from keel.registry.records import PromotionRequest
    from keel.registry.registry import UNSET

    expected: object = UNSET
    if expect is not None:
        if expect.lower() == "none":
            expected = None
        elif expect.isdigit():
            expected = int(expect)
        else:
            raise ConfigError(f"--expect {expect!r} is not a version number or 'none'")
    with _registry(project, actor) as reg:
        if expected is UNSET:  # --expect none: a new alias on purpose
            _refuse_lookalike(reg, name, alias)
        outcome = reg.promote(name, version, alias=alias, reason=reason, expected=expected)
    if isinstance(outcome, PromotionRequest):
        _print_request(outcome, fmt, headline="promotion awaits approval")
    else:
        _print_move(outcome, fmt)


def _refuse_lookalike(reg: Registry, name: str, alias: str) -> None:
    """A new alias spelt like one the model has (``prodction``) is a typo until shown
    otherwise: the CLI cannot remove an alias, and nothing would follow the new one."""
    import difflib

    from keel.errors import ConfigError

    held = {a for m in reg.models() if m.name == name for a, _ in m.aliases}
    if alias in held:
        return
    close = difflib.get_close_matches(alias, sorted(held | {"production"}), n=1, cutoff=0.75)
    if close:
        msg = (
            f"model {name!r} has no alias {alias!r}; did you mean {close[0]!r}? To create "
            f"a new alias {alias!r} anyway, pass --expect none (no version holds it now)."
        )
        raise ConfigError(msg, field="alias")


def rollback(
    name: NameArg,
    alias: AliasOpt = "production",
    to: Annotated[
        int | None, typer.Option("--to", help="An earlier holder (default: the one before).")
    ] = None,
    reason: ReasonOpt = "",
    actor: ActorOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Move an alias back to its previous holder (or --to an earlier one); no approval needed."""
    with _registry(project, actor) as reg:
        moved = reg.rollback(name, alias=alias, to=to, reason=reason)
    _print_move(moved, fmt)


def approve(
    request_id: Annotated[str, typer.Argument(help="The request's id (keel models requests).")],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why you approve.")] = "",
    actor: ActorOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Approve a pending promotion (not your own); the last approval needed applies it."""
    with _registry(project, actor) as reg:
        done = reg.approve(request_id, comment=comment)
    headline = "applied" if done.status == "applied" else "approved, still pending"
    _print_request(done, fmt, headline=headline)


def reject(
    request_id: Annotated[str, typer.Argument(help="The request's id (keel models requests).")],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why (required).")],
    actor: ActorOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Reject a pending promotion with a comment."""
    with _registry(project, actor) as reg:
        done = reg.reject(request_id, comment=comment)
    _print_request(done, fmt, headline="rejected")


def requests(
    pending: Annotated[bool, typer.Option("--pending", help="Only pending requests.")] = False,
    model: Annotated[str | None, typer.Option("--model", help="Only this model's.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many.")] = 50,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Promotion requests, newest first, with their approvals."""
    with _registry(project, None) as reg:
        found = reg.requests(pending=pending, name=model, limit=limit)
    if fmt is Format.json:
        emit_json({"requests": [r.to_json() for r in found]})
        return
    if not found:
        out.print("no promotion requests" + (" pending" if pending else ""))
        return
    table = Table(show_edge=False)
    for col in ("id", "model", "alias", "move", "status", "approvals", "requested by", "at"):
        table.add_column(col)
    for r in found:
        table.add_row(
            r.id,
            escape(r.name),
            escape(r.alias),
            f"{_v(r.from_version)} -> {r.version}",
            r.status,
            f"{r.approvals}/{r.required_approvals}",
            escape(r.requested_by),
            f"{r.created_at:%Y-%m-%d %H:%M}",
        )
    out.print(table)


def archive(
    name: NameArg,
    version: VersionArg,
    reason: ReasonOpt = "",
    actor: ActorOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Archive a version: kept, but it cannot take an alias or be loaded until restored."""
    with _registry(project, actor) as reg:
        done = reg.archive(name, version, reason=reason)
    _print_version(done, fmt, "archived")


def restore(
    name: NameArg,
    version: VersionArg,
    reason: ReasonOpt = "",
    actor: ActorOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Restore an archived version."""
    with _registry(project, actor) as reg:
        done = reg.restore(name, version, reason=reason)
    _print_version(done, fmt, "restored")


def delete(
    name: NameArg,
    version: VersionArg,
    reason: ReasonOpt = "",
    actor: ActorOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Delete a version no alias points at. Its package stays in the content-addressed
    artifact store (its run still names it; `keel doctor --fix` removes only blobs nothing
    refers to); its audit trail stays."""
    with _registry(project, actor) as reg:
        done = reg.delete(name, version, reason=reason)
    _print_version(done, fmt, "deleted (package kept in the artifact store)")


def history(
    name: NameArg,
    alias: Annotated[
        str | None, typer.Option("--alias", "-a", help="Only this alias's moves.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many.")] = 50,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """A model's audit trail (registrations, moves, approvals, archive), or one alias's moves."""
    with _registry(project, None) as reg:
        if alias is not None:
            moves = reg.alias_history(name, alias, limit=limit)
            entries: list[dict[str, Any]] = [m.to_json() for m in moves]
        else:
            reg.versions(name)  # NotFoundError naming the known models
            entries = [e.to_json() for e in reg.audit(target=name, limit=limit)]
    if fmt is Format.json:
        emit_json({"name": name, "alias": alias, "history": entries})
        return
    if not entries:
        out.print(f"no history for {escape(name)}" + (f"@{escape(alias)}" if alias else ""))
        return
    for e in entries:
        if alias is not None:
            line = (
                f"{e['at'][:19]}  {e['action']:<12} {_v(e['previous_version'])} -> "
                f"{_v(e['version'])}  by {e['actor']}"
            )
            why = e["reason"]
        else:
            line = f"{e['at'][:19]}  {e['action']:<17} by {e['actor']}  {describe(e['details'])}"
            why = ""
        out.print(escape(line + (f"  ({why})" if why else "")), highlight=False)


def describe(details: dict[str, Any]) -> str:
    """An audit row's details in one line: from -> to, alias, request, comment, why."""
    parts = []
    if "alias" in details:
        parts.append(
            f"{details['alias']}: {_v(details.get('previous_version'))} -> "
            f"{_v(details.get('version'))}"
        )
    elif "version" in details:
        parts.append(f"version {details['version']}")
    for key in ("request_id", "approvals", "comment", "reason", "id", "scopes"):
        value = details.get(key)
        if value not in (None, "", []):
            parts.append(f"{key}={value}")
    return "  ".join(parts)


def _v(version: int | None) -> str:
    return "(none)" if version is None else f"v{version}"


def _print_move(moved: AliasMove, fmt: Format) -> None:
    if fmt is Format.json:
        emit_json(moved.to_json())
        return
    out.print(
        f"{escape(moved.name)}@{escape(moved.alias)}: {_v(moved.previous_version)} -> "
        f"{_v(moved.version)} ({moved.action} by {escape(moved.actor)})",
        highlight=False,
    )


def _print_request(request: PromotionRequest, fmt: Format, *, headline: str) -> None:
    if fmt is Format.json:
        emit_json(request.to_json())
        return
    out.print(
        f"{headline}: request {request.id} moves {escape(request.name)}@{escape(request.alias)} "
        f"{_v(request.from_version)} -> {_v(request.version)}; "
        f"{request.approvals}/{request.required_approvals} approval(s)",
        highlight=False,
    )
    for d in request.decisions:
        note = f": {d.comment}" if d.comment else ""
        out.print(escape(f"  {d.decision} by {d.actor}{note}"), highlight=False)
    if request.status == "pending":
        out.print(f"  approve with: keel models approve {request.id} --actor SOMEONE_ELSE")


def _print_version(version: VersionInfo, fmt: Format, what: str) -> None:
    if fmt is Format.json:
        emit_json(version.to_json())
        return
    out.print(f"{escape(version.ref)} {what}", highlight=False)


def _short(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _headline(metrics: dict[str, Any]) -> str:
    names = ("roc_auc", "accuracy", "macro_f1", "log_loss", "rmse", "mae", "r2")
    return " ".join(f"{n}={_short(metrics[n])}" for n in names if metrics.get(n) is not None)


def _print_slices(slices: dict[str, Any]) -> None:
    for column, groups in slices.items():
        out.print(f"    slice [bold]{escape(column)}[/]", highlight=False)
        for value, metrics in groups.items():
            if value == "_gap":
                line = " ".join(f"{n}={_short(v)}" for n, v in metrics.items())
            else:
                line = _headline(metrics)
            out.print(f"      {escape(value)}: {line}", highlight=False)
