"""Model packages, versions and aliases: :class:`Registry` (promotion with approvals, rollback,
archive, audit, events and webhooks) and the package format (:mod:`keel.registry.package`).

Names are imported lazily, so importing a submodule does not pay for the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.registry.records import (
        AliasMove,
        AuditEntry,
        Decision,
        ModelSummary,
        PromotionRequest,
        VersionInfo,
    )
    from keel.registry.registry import Registry

__all__ = [
    "AliasMove",
    "AuditEntry",
    "Decision",
    "ModelSummary",
    "PromotionRequest",
    "Registry",
    "VersionInfo",
]

_LAZY = {name: "keel.registry.records" for name in __all__ if name != "Registry"}
_LAZY["Registry"] = "keel.registry.registry"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keel.registry' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
