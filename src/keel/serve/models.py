"""The models a server holds: a loaded package with the registry version and reference it came from.

:func:`load_served` resolves a reference (``name`` = the project's ``registry.alias``, default
``production``, else the newest version; ``name@alias``; ``name@3``), loads and verifies the
package, and works out what the request path needs beside it: the feature views to fill from
the online store, the feature pipeline's hash (logged with every prediction), and a warm-up row.
:func:`pin_threads` keeps each model call to the configured number of OpenMP threads.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from keel.registry.package import ModelPackage

__all__ = ["LoadedModel", "load_served", "pin_threads", "warm"]

_WARM_VALUES: dict[str, Any] = {"int": 0, "float": 0.0, "string": "", "bool": False}


@dataclass(frozen=True)
class LoadedModel:
    """A package ready to serve, with the registry version it came from.

    Attributes:
        package: The verified model package.
        version: Its registry version (as served in ``model_version``).
        ref: The reference the server follows (``adult``, ``adult@staging``).
        fills: The feature views it was trained with (entity-only requests), or None.
        key_only: Entity keys of those views that are not model inputs (dropped after lookup).
        pipeline_hash: sha256 prefix of the feature pipeline's state (logged per prediction).
        role: The deployment role it answers in (``primary``, ``canary``, ``ab``, ``shadow``),
            logged with each prediction.
    """

    package: ModelPackage
    version: str
    ref: str = ""
    fills: dict[str, Any] | None = None
    key_only: tuple[str, ...] = field(default=())
    pipeline_hash: str = ""
    role: str = "primary"

    @property
    def input_names(self) -> list[str]:
        return [i["name"] for i in self.package.signature["inputs"]]


def load_served(project: Any, ref: str) -> tuple[str, LoadedModel]:
    """Resolve ``ref`` in the registry and load its package: ``(model name, loaded model)``.

    Raises:
        NotFoundError: The reference does not resolve.
    """
    from keel.features.store import training_views
    from keel.registry.verify import load_package

    version = project.metadata.resolve(ref)
    # the one safe load path: the signature when registry.require_signature is on, every
    # file's hash, the allowlisted types; custom feature modules import from the project root
    package = load_package(project, version.package_sha256)
    timed = project.config.monitor.time_column
    if timed is not None:  # logged with the inputs: monitoring's event time
        package.pipeline.coercer().keep([timed])
    used = training_views(project, version.package_sha256)
    key_only: tuple[str, ...] = ()
    if used is not None:
        inputs = {i["name"] for i in package.signature["inputs"]}
        keys = {k for spec in used["views"].values() for k in spec["entities"]}
        key_only = tuple(sorted(keys - inputs))
    state = orjson.dumps(package.manifest["features"], option=orjson.OPT_SORT_KEYS)
    loaded = LoadedModel(
        package=package,
        version=str(version.version),
        ref=ref,
        fills=used,
        key_only=key_only,
        pipeline_hash=hashlib.sha256(state).hexdigest()[:16],
    )
    return version.name, loaded


def warm(model: LoadedModel) -> None:
    """One prediction on a neutral row, so the first real request does not pay for lazy setup.

    A neutral row that the model's checks refuse still warms the path it reached.
    """
    from keel.errors import KeelError

    row = {i["name"]: _WARM_VALUES.get(i["type"]) for i in model.package.signature["inputs"]}
    with contextlib.suppress(KeelError):
        model.package.predict_rows([row], findings=[])


def pin_threads(threads: int) -> None:
    """Limit the calling thread's model calls to ``threads`` OpenMP threads.

    Run in each prediction worker thread (OpenMP's thread count is per calling thread):
    LightGBM's process-wide cap when it has one, and threadpoolctl for OpenMP and BLAS.
    Under CPU contention an unpinned single-row LightGBM call spins up every core's thread and
    takes milliseconds instead of microseconds.
    """
    try:
        import ctypes

        from lightgbm import basic

        setter = getattr(getattr(basic, "_LIB", None), "LGBM_SetMaxThreads", None)
        if setter is not None:
            setter(ctypes.c_int(threads))
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=threads)
