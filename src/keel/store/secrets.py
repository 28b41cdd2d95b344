"""The project secret and the keyed hash that hides personal data.

The project keeps one random key in ``.keel/secret.key`` (hex, mode 0600, created once). The
prediction log replaces personal data inputs by :func:`keyed_hash` (HMAC-SHA256, hex) with it
(:mod:`keel.serve.predlog`), and monitoring hashes the training categories of those inputs the
same way (:mod:`keel.monitor.hashed`), so logged and training values compare like with like
without either side holding the values in clear.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import orjson

from keel.errors import ConfigError

__all__ = ["SECRET_FILE", "existing_secret", "keyed_hash", "project_secret"]

SECRET_FILE = "secret.key"  # under .keel/: the project's HMAC key, 0600, created once
_SECRET_BYTES = 32


def keyed_hash(key: bytes, value: Any) -> str | None:
    """A value's HMAC-SHA256 (hex); None stays None. Text is hashed as its UTF-8 bytes, any
    other value as its JSON (``3`` and ``"3"`` hash alike, ``true`` as ``"true"``)."""
    if value is None:
        return None
    data = value.encode() if isinstance(value, str) else orjson.dumps(value)
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def existing_secret(state_dir: Path) -> bytes | None:
    """The project's secret key, or None when there is none yet (nothing was hashed with it).

    Raises:
        ConfigError: The file exists but is unreadable, too short, or readable by others.
    """
    return project_secret(state_dir) if (state_dir / SECRET_FILE).exists() else None


def project_secret(state_dir: Path) -> bytes:
    """The project's secret key (``<state_dir>/secret.key``), created once with mode 0600.

    Raises:
        ConfigError: The file exists but is unreadable, too short, or readable by others.
    """
    path = state_dir / SECRET_FILE
    if not path.exists():
        # written whole to a private file, then linked in: a server process starting beside
        # this one (serve --workers) sees no file or the whole key, never a partial one
        draft = state_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as handle:  # hex text: copyable
                handle.write(secrets.token_hex(_SECRET_BYTES))
            with contextlib.suppress(FileExistsError):  # another process won: use its key
                os.link(draft, path)
        finally:
            draft.unlink()
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the project secret ({exc}).") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); run "
            f"'chmod 600 {path}'.",
            field="secret",
        )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ConfigError(
            f"{path} does not hold a hex key of at least 16 bytes; delete it to create a new "
            "one (hashes logged before will no longer match).",
            field="secret",
        )
    return key
