"""Feature transforms and the FeaturePipeline shared by training and serving.

The names below are imported on first use: importing a submodule (``keel.features.custom``
for a project's ``@keel.feature`` functions, ``keel.features.store``) does not load the whole
pipeline and its Arrow compute kernels.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.features.custom import feature
    from keel.features.pipeline import FeaturePipeline

__all__ = ["FeaturePipeline", "feature"]

_EXPORTS = {"FeaturePipeline": "keel.features.pipeline", "feature": "keel.features.custom"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keel.features' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
