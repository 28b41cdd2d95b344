"""Column names compared for a likely rename: what a file's or a request's name probably meant
('temperature' for the input 'temp'). Used by request coercion (:mod:`keel.validate.coerce`)
and a file's missing-column hints (:mod:`keel.data.columns`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["name_key", "name_within"]


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
