"""Column names compared for a likely rename: what a file's or a request's name probably meant
('temperature' for the input 'temp'). Used by request coercion (:mod:`keel.validate.coerce`)
and a file's missing-column hints (:mod:`keel.data.columns`)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["likely_names", "name_key", "name_within"]


def name_within(name: str, candidates: Sequence[str]) -> str | None:
    """The one candidate that holds ``name`` whole or that ``name`` holds ('temperature' for
    'temp'), compared without case, spaces, '_' and '-', both at least 3 letters; None when no
    candidate or more than one does (a guess that could be another column is no hint)."""
    key = name_key(name)
    if len(key) < 3:
        return None
    held = [c for c in candidates
            if len(name_key(c)) >= 3 and (name_key(c) in key or key in name_key(c))]  # fmt: skip
    return held[0] if len(held) == 1 else None


def name_key(name: str) -> str:
    """``name`` as compared for a likely rename: lower case, no spaces, '_' or '-'."""
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def likely_names(name: Any, names: Sequence[Any]) -> list[str]:
    """The one name of ``names`` close to ``name`` (difflib, ratio 0.6 or more), else the one
    name that holds it whole or that it holds (:func:`name_within`), or none."""
    if not isinstance(name, str):
        return []
    candidates = [n for n in names if isinstance(n, str)]
    close = difflib.get_close_matches(name, candidates, 1, 0.6)
    if close:
        return close
    held = name_within(name, candidates)
    return [] if held is None else [held]
