"""The base of every keel.yaml section: frozen, unknown keys forbidden."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Frozen", "dotted"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


def dotted(loc: tuple[str | int, ...]) -> str:
    """A validation error's location as ``model.params.num_leaves``."""
    return ".".join(str(part) for part in loc)
