"""`keel models verify|sign|export|import`: check a package without loading it, sign one, and
move one between registries as a single verified archive."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from keel.commands.output import Format, FormatOpt, ProjectOpt, emit_json, err, out

__all__ = ["register"]


def register(models_app: typer.Typer) -> None:
    """Add verify, sign, export and import to the `keel models` app."""
    models_app.command("verify")(verify)
    models_app.command("sign")(sign)
    models_app.command("export")(export)
    models_app.command("import")(import_)


def verify(
    ref: Annotated[
        str, typer.Argument(help="NAME@VERSION (or an alias), or an export archive / directory.")
    ],
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Check hashes, signature and model-file types without loading anything (exit 1: failed)."""
    from keel.registry.verify import describe, verify_package

    report = verify_package(ref, project=project)
    if fmt is Format.json:
        emit_json(report.to_dict())
    else:
        for line in describe(report):
            out.print(escape(line), highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


def sign(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS to sign.")],
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Sign a registered version's manifest with KEEL_SIGNING_KEY (Ed25519)."""
    from keel.registry.signing import sign_version

    key = sign_version(ref, project=project)
    if fmt is Format.json:
        emit_json({"ref": ref, "key_id": key})
        return
    out.print(f"signed {escape(ref)} with key {key}")


def export(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS to export.")],
    file: Annotated[Path, typer.Argument(help="The archive to write (a .tar; not overwritten).")],
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Write one tar archive: manifest, signature, lineage summary and files."""
    from keel.registry.exchange import export_package

    path = export_package(ref, file, project=project)
    if fmt is Format.json:
        emit_json({"file": str(path), "size": path.stat().st_size})
        return
    out.print(f"exported {escape(ref)} to {escape(str(path))} ({path.stat().st_size} bytes)")


def import_(
    file: Annotated[Path, typer.Argument(help="An archive written by keel models export.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Register under this name (default: its own).")
    ] = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Verify an export archive, then register it here as a new version with its lineage."""
    from keel.registry.exchange import import_package

    version = import_package(file, name=name, project=project)
    if fmt is Format.json:
        emit_json(
            {
                "name": version.name,
                "version": version.version,
                "package_sha256": version.package_sha256,
            }
        )
        return
    out.print(
        f"imported {escape(str(file))} as {version.name}@{version.version} "
        f"(package {version.package_sha256[:12]})"
    )
    if version.aliases:
        err.print(f"aliases: {', '.join(version.aliases)}")
