"""`keel keys generate`: an Ed25519 key pair for signing model packages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from keel.commands.output import Format, FormatOpt, emit_json, out

__all__ = ["register"]

DEFAULT_DIR = Path("~/.keel/keys")


def register(app: typer.Typer) -> None:
    """Add `keel keys` to the `keel` app."""
    group = typer.Typer(help="Signing keys for model packages.", no_args_is_help=True)
    group.command("generate")(generate)
    app.add_typer(group, name="keys")


def generate(
    directory: Annotated[
        Path,
        typer.Option("--out", help="Where to write keel-signing.pem and keel-signing.pub.pem."),
    ] = DEFAULT_DIR,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing key pair there.")
    ] = False,
    fmt: FormatOpt = Format.text,
) -> None:
    """Write an Ed25519 private key (PEM, mode 0600) and its public key."""
    from keel.registry.signing import generate_keys

    pair = generate_keys(directory, overwrite=overwrite)
    if fmt is Format.json:
        emit_json(
            {
                "private_key": str(pair.private_key),
                "public_key": str(pair.public_key),
                "key_id": pair.key_id,
            }
        )
        return
    lines = [
        f"private key: {pair.private_key} (mode 0600; keep it secret)",
        f"public key:  {pair.public_key}",
        f"key id:      {pair.key_id}",
        f"sign with:   KEEL_SIGNING_KEY={pair.private_key} and registry.sign: true",
        f"trust with:  registry.trusted_keys: [{pair.public_key}]",
    ]
    for line in lines:
        out.print(escape(line), highlight=False, soft_wrap=True)
