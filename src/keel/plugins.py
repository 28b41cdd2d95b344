"""Extension points: what Keel looks up by name, built-ins and installed plug-ins alike.

Each :class:`Registry` is a table of lazy ``"module:attr"`` paths (Keel's own implementations,
imported only when chosen) merged with the Python entry points of one group, so a package adds
a trainer flavor, a task, an online store, an executor or an alert sink without editing Keel:

* ``keel.trainers``: ``model.flavor`` -> a :class:`keel.train.Trainer` class;
* ``keel.tasks``: ``model.task`` -> a :class:`keel.train.Task` (an object, or a class to make one);
* ``keel.online_stores``: the URL scheme of ``KEEL_ONLINE_STORE`` -> a class
  ``(url, *, namespace)`` following :class:`keel.features.online.OnlineStore`;
* ``keel.executors``: ``executor`` / ``KEEL_EXECUTOR`` -> an executor;
* ``keel.alert_sinks``: an alert sink type -> a sink class (for monitoring).

A plug-in declares them in its ``pyproject.toml``::

    [project.entry-points."keel.trainers"]
    ridge = "keel_example_plugin.ridge:RidgeTrainer"

    [project.entry-points."keel.tasks"]
    ordinal = "keel_example_plugin.ordinal:OrdinalTask"

A built-in name cannot be taken over by a plug-in (the built-in wins). Names are checked when
keel.yaml is loaded (only the table and the entry points' names are read, nothing is imported);
the implementation is imported on first use. ``keel.testing`` has contract suites that prove a
trainer or a task plug-in right.

Data source formats are not an entry-point group yet: every format is one DuckDB scan that also
gives bad-row quarantine with file and line, incremental watermarks pushed into the query, and
content fingerprints for caching, and ``SourceConfig`` has no place for a plug-in's options. A
source plug-in needs that narrower seam first (a reader of Arrow record batches plus options).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = [
    "ALERT_SINKS",
    "EXECUTORS",
    "ONLINE_STORES",
    "REGISTRIES",
    "TASKS",
    "TRAINERS",
    "Registry",
]


@dataclass(frozen=True)
class Registry:
    """Names -> implementations: a built-in table plus the entry points of ``group``.

    Attributes:
        group: The entry-point group plug-ins declare (``keel.trainers``).
        setting: Where a name is chosen, for messages (``model.flavor``).
        noun: What one implementation is called, for messages (``flavor``).
        builtins: Name -> lazy ``"module:attr"`` path of Keel's own implementations.
        extras: Name -> the Keel extra that installs what a built-in imports.
    """

    group: str
    setting: str
    noun: str
    builtins: Mapping[str, str]
    extras: Mapping[str, str] = field(default_factory=dict)

    def names(self) -> tuple[str, ...]:
        """Every registered name: the built-ins in table order, then plug-ins sorted."""
        plugins = sorted(
            n for n in _entry_points(self.group, tuple(sys.path)) if n not in self.builtins
        )
        return (*self.builtins, *plugins)

    def plugins(self) -> dict[str, str]:
        """Installed plug-ins: name -> ``"module:attr"`` (their entry point's value)."""
        found = _entry_points(self.group, tuple(sys.path))
        return {n: ep.value for n, ep in sorted(found.items()) if n not in self.builtins}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            name in self.builtins or name in _entry_points(self.group, tuple(sys.path))
        )

    def unknown(self, name: str, *, also: tuple[str, ...] = ()) -> str:
        """The message for a name nobody registered: the choices and how to add one."""
        choices = ", ".join((*self.names(), *also))
        installed = ", ".join(self.plugins()) or "none"
        return (
            f"'{name}' is not a registered {self.noun}; use one of {choices}. A plug-in "
            f"package adds one through the '{self.group}' entry-point group: install it into "
            f"this environment (plug-ins found: {installed})"
        )

    def load(self, name: str) -> Any:
        """The implementation registered as ``name``, imported now.

        Raises:
            ConfigError: The name is unknown (the message lists the choices), the built-in's
                extra is not installed, or the plug-in fails to import (names its package).
        """
        path = self.builtins.get(name)
        if path is not None:
            return _import(path, name, self)
        found = _entry_points(self.group, tuple(sys.path)).get(name)
        if found is None:
            raise ConfigError(f"{self.setting} {self.unknown(name)}.", field=self.setting)
        try:
            return found.load()
        except Exception as exc:  # a broken plug-in is the user's to fix, not a crash
            package = found.dist.name if found.dist is not None else found.value
            msg = (
                f"{self.setting} '{name}': the plug-in '{package}' ({found.value}, entry point "
                f"group {self.group}) failed to load: {type(exc).__name__}: {exc}. Fix or "
                "reinstall that package."
            )
            raise ConfigError(msg, field=self.setting) from exc


def _import(path: str, name: str, registry: Registry) -> Any:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            exc.name == module_name or module_name.startswith(exc.name + ".")
        ):
            raise  # Keel's own module is missing: a broken install, not a user mistake
        extra = registry.extras.get(name, name)
        msg = (
            f"{registry.setting} '{name}' needs the '{extra}' extra ({exc.name} is not "
            f"installed). Install it with: pip install 'keel[{extra}]'."
        )
        raise ConfigError(msg, field=registry.setting) from exc
    return getattr(module, attribute)


@cache
def _entry_points(group: str, path: tuple[str, ...]) -> dict[str, EntryPoint]:
    """The group's entry points, once per ``sys.path`` (a directory added later is seen)."""
    from importlib.metadata import entry_points

    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=group):
        found.setdefault(entry.name, entry)  # the first on sys.path wins, as for imports
    return found


TRAINERS = Registry(
    group="keel.trainers",
    setting="model.flavor",
    noun="flavor",
    builtins={
        "lightgbm": "keel.train.lightgbm:LightGBMTrainer",
        "xgboost": "keel.train.xgboost:XGBoostTrainer",
        "sklearn": "keel.train.sklearn:SklearnTrainer",
        "mlp": "keel.train.mlp:MLPTrainer",
    },
    extras={"xgboost": "xgboost", "mlp": "torch"},
)

TASKS = Registry(
    group="keel.tasks",
    setting="model.task",
    noun="task",
    builtins={
        "binary": "keel.train.tasks:BinaryTask",
        "multiclass": "keel.train.tasks:MulticlassTask",
        "regression": "keel.train.tasks:RegressionTask",
    },
)

ONLINE_STORES = Registry(
    group="keel.online_stores",
    setting="KEEL_ONLINE_STORE",
    noun="online store scheme",
    builtins={
        "sqlite": "keel.features.online:SQLiteOnlineStore",
        "redis": "keel.features.online:RedisOnlineStore",
        "rediss": "keel.features.online:RedisOnlineStore",
    },
    extras={"redis": "redis", "rediss": "redis"},
)

EXECUTORS = Registry(
    group="keel.executors",
    setting="executor",
    noun="executor",
    builtins={
        "local": "keel.pipeline.executors:LocalExecutor",
        "ray": "keel.pipeline.executors:RayExecutor",
    },
    extras={"ray": "ray"},
)

ALERT_SINKS = Registry(
    group="keel.alert_sinks",
    setting="monitor.alerts",
    noun="alert sink",
    builtins={},
)

#: Every extension point, by entry-point group.
REGISTRIES: dict[str, Registry] = {
    r.group: r for r in (TRAINERS, TASKS, ONLINE_STORES, EXECUTORS, ALERT_SINKS)
}
