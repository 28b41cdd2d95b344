"""Turning caller values into what the metadata store keeps: sha256 text, plain JSON."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from keel.errors import ConfigError

__all__ = ["check_sha", "to_json"]

_HEX = re.compile(r"[0-9a-f]+")


def check_sha(value: str, field: str) -> str:
    """``value`` lower-cased; ConfigError naming ``field`` unless it is 64 hex digits."""
    sha = value.lower() if isinstance(value, str) else ""
    if len(sha) != 64 or not _HEX.fullmatch(sha):
        msg = f"{field} {value!r} is not a sha256: expected 64 hex digits"
        raise ConfigError(msg, field=field)
    return sha


def to_json(value: Mapping[str, Any], field: str) -> dict[str, Any]:
    """A plain-JSON copy: numpy scalars become numbers, NaN and infinities become null."""
    try:
        text = json.dumps(_finite(value), default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        msg = f"{field} must be JSON-serialisable (str, number, bool, None, list, dict): {exc}"
        raise ConfigError(msg, field=field) from exc
    result = json.loads(text)
    if not isinstance(result, dict):
        raise ConfigError(f"{field} must be a mapping, got {type(value).__name__}", field=field)
    return result


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):
        # numpy scalars and arrays.
        return _finite(value.tolist())
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
