"""Keel's environment variables: one typed table, read when asked (at load time), never at import.

Every ``KEEL_*`` variable Keel reads is a field of :class:`Settings` with its variable name and
what it overrides; :func:`load_settings` reads them all from the environment at once. No other
module reads ``os.environ`` for a setting, so this table is the whole list (the keel.yaml
reference renders it)::

    from keel.settings import load_settings

    url = load_settings().db_url or config.store.db_url   # KEEL_DB_URL wins over keel.yaml

Values are trimmed; an empty variable counts as unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.config import KeelConfig

__all__ = [
    "SETTINGS",
    "Setting",
    "Settings",
    "current_actor",
    "environment_variable",
    "executor_settings",
    "load_settings",
]


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, what it does and its default (for the docs)."""

    variable: str
    help: str
    default: str | None = None


def _env(variable: str, help: str, default: str | None = None, kind: type = str) -> Any:
    meta = {"setting": Setting(variable, help, default), "kind": kind}
    return field(default=None, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Every setting an environment variable gives; None where the variable is unset.

    Attributes:
        env: ``KEEL_ENV``, the overlay ``keel.<env>.yaml`` merged over keel.yaml.
        db_url: ``KEEL_DB_URL``, the metadata store URL (overrides ``store.db_url``).
        artifacts: ``KEEL_ARTIFACTS``, the artifact store root (overrides ``store.artifacts``).
        online_store: ``KEEL_ONLINE_STORE``, the online feature store URL.
        executor: ``KEEL_EXECUTOR``, the executor's name (overrides ``executor``).
        ray_address: ``KEEL_RAY_ADDRESS``, the Ray cluster (overrides ``ray_address``).
        duckdb_memory: ``KEEL_DUCKDB_MEMORY``, DuckDB's memory limit for point-in-time joins.
        actor: ``KEEL_ACTOR``, who audited changes are recorded as (default: the OS user).
        demo_exit: ``KEEL_DEMO_EXIT``, ``keel demo`` returns instead of serving until Ctrl-C.
        signing_key: ``KEEL_SIGNING_KEY``, the Ed25519 private key (PEM text or a file path)
            that signs packages when ``registry.sign`` is on.
        serve_token: ``KEEL_SERVE_TOKEN``, a token ``keel serve`` accepts with the ``predict``
            and ``read`` scopes beside the stored ones (a container's secret).
        worker_id: ``KEEL_WORKER_ID``, the index ``keel serve --workers`` gives each worker.
        workers: ``KEEL_WORKERS``, the worker count ``keel serve --workers`` gives each worker.
        fleet_dir: ``KEEL_FLEET_DIR``, where ``keel serve --workers`` workers publish metrics.
    """

    env: str | None = _env(
        "KEEL_ENV", "name of the overlay file keel.<env>.yaml merged over keel.yaml"
    )
    db_url: str | None = _env(
        "KEEL_DB_URL",
        "metadata store URL (any SQLAlchemy URL); overrides store.db_url",
        "sqlite:///<project>/.keel/keel.db",
    )
    artifacts: str | None = _env(
        "KEEL_ARTIFACTS",
        "artifact store root (path or fsspec URL); overrides store.artifacts",
        "<project>/.keel/artifacts",
    )
    online_store: str | None = _env(
        "KEEL_ONLINE_STORE",
        "online feature store URL: sqlite:///path, redis://host:port/db, or a plug-in's scheme",
        "sqlite:///<project>/.keel/online.db",
    )
    executor: str | None = _env(
        "KEEL_EXECUTOR",
        "where search trials and Ray Train fits run: local, ray or a plug-in executor; "
        "overrides executor:",
        "local",
    )
    ray_address: str | None = _env(
        "KEEL_RAY_ADDRESS",
        "Ray cluster address (ray://host:10001, auto); overrides ray_address:",
    )
    duckdb_memory: str | None = _env(
        "KEEL_DUCKDB_MEMORY",
        "DuckDB memory limit of point-in-time feature joins (e.g. 8GB)",
        "4GB",
    )
    actor: str | None = _env(
        "KEEL_ACTOR",
        "who registry changes, approvals and token changes are recorded as in the audit log "
        "(--actor overrides it)",
        "the OS user",
    )
    demo_exit: bool | None = _env(
        "KEEL_DEMO_EXIT",
        "any non-empty value: keel demo returns once the server answers instead of waiting for "
        "Ctrl-C (for scripts and tests)",
        kind=bool,
    )
    signing_key: str | None = _env(
        "KEEL_SIGNING_KEY",
        "Ed25519 private key that signs model packages (registry.sign): the PEM text itself or "
        "the path of a PEM file (keel keys generate); never stored in keel.yaml or the store",
    )
    serve_token: str | None = _env(
        "KEEL_SERVE_TOKEN",
        "a token keel serve accepts with the predict and read scopes beside the stored ones "
        "(at least 32 printable characters; e.g. a Kubernetes Secret, see keel build k8s)",
    )
    worker_id: str | None = _env(
        "KEEL_WORKER_ID",
        "set by keel serve --workers N for each worker process (0..N-1; the Keel-Worker header)",
        "0",
    )
    workers: str | None = _env(
        "KEEL_WORKERS",
        "set by keel serve --workers N for each worker process: N (each token's rate limit is "
        "shared among them)",
    )
    fleet_dir: str | None = _env(
        "KEEL_FLEET_DIR",
        "set by keel serve --workers N for each worker process: where the workers publish their "
        "metrics for /metrics to sum",
    )


#: The table: every environment variable Keel reads, in documentation order.
SETTINGS: tuple[Setting, ...] = tuple(f.metadata["setting"] for f in fields(Settings))

#: The variables Keel sets (never reads) for the programs it starts or writes.
PROVIDED: tuple[Setting, ...] = (
    Setting("KEEL_ALERT_ID", "set for a monitor.alerts command sink: the alert's id"),
    Setting("KEEL_ALERT_RULE", "set for a monitor.alerts command sink: the rule's name"),
    Setting("KEEL_ALERT_SEVERITY", "set for a monitor.alerts command sink: info|warning|critical"),
    Setting(
        "KEEL_REQUIREMENT",
        "build argument of the Dockerfile keel build docker writes: what pip installs Keel from "
        "(default: the Keel wheel under `wheels/` in the context)",
    ),
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every setting from the environment now.

    Args:
        environ: The variables to read (default: ``os.environ``), e.g. a test's own mapping.

    Returns:
        The settings; a variable that is unset or empty is None.
    """
    source = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for item in fields(Settings):
        raw = (source.get(item.metadata["setting"].variable) or "").strip()
        if raw:
            values[item.name] = True if item.metadata["kind"] is bool else raw
    return Settings(**values)


def current_actor(explicit: str | None = None) -> str:
    """Who is acting, for the audit log: ``explicit`` (``--actor``), else ``KEEL_ACTOR``, else
    the OS user (``getpass.getuser()``), else ``"unknown"``."""
    if explicit is not None and explicit.strip():
        return explicit.strip()
    configured = load_settings().actor
    if configured:
        return configured
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no such user in the password database (containers)
        return "unknown"


def environment_variable(name: str) -> str | None:
    """A variable keel.yaml interpolates as ``${NAME}`` (any name, the user's own), read now."""
    return os.environ.get(name)


def executor_settings(config: KeelConfig) -> tuple[str, str | None]:
    """``(executor, ray_address)`` from keel.yaml, overridden by ``KEEL_EXECUTOR`` and
    ``KEEL_RAY_ADDRESS`` (read now, at use, never at import).

    Raises:
        ConfigError: ``KEEL_EXECUTOR`` names no registered executor (local, ray, plug-ins).
    """
    from keel.errors import ConfigError
    from keel.plugins import EXECUTORS

    settings = load_settings()
    executor = settings.executor or config.executor
    if executor not in EXECUTORS:
        raise ConfigError(
            f"KEEL_EXECUTOR={executor!r} is not an executor: {EXECUTORS.unknown(executor)}.",
            field="executor",
        )
    # a plug-in executor runs pipeline steps (keel.pipeline.executors.load_executor); search
    # trials and fits inside a step run on Ray only with executor: ray, else locally
    return executor, settings.ray_address or config.ray_address
