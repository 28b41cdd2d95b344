"""A Keel project: the directory holding keel.yaml, its configuration and its stores."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from keel.config import CONFIG_FILE, KeelConfig, load_config
from keel.errors import ConfigError, KeelError
from keel.settings import load_settings

if TYPE_CHECKING:  # the stores are imported when first used: SQLAlchemy costs ~0.2 s to load
    from keel.store.artifacts import ArtifactStore
    from keel.store.leases import ReapedRun
    from keel.store.metadata import MetadataStore

__all__ = ["Project", "find_project"]

STATE_DIR = ".keel"
_log = logging.getLogger("keel")


def find_project(start: str | Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (default: cwd) that holds keel.yaml.

    Raises:
        ConfigError: No keel.yaml was found.
    """
    here = Path(start or Path.cwd()).resolve()
    if here.is_file():
        here = here.parent
    for candidate in (here, *here.parents):
        if (candidate / CONFIG_FILE).exists():
            return candidate
    msg = (
        f"no {CONFIG_FILE} in {here} or above. "
        "Run 'keel init --example adult DIR', or pass --project."
    )
    raise ConfigError(msg)


class Project:
    """Configuration plus the artifact and metadata stores of one project.

    Args:
        root: The project directory (or any directory below it).

    Backends come from ``store:`` in keel.yaml, overridden by ``KEEL_DB_URL`` and
    ``KEEL_ARTIFACTS``; the defaults live in ``.keel/`` beside keel.yaml.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = find_project(root)
        self.config: KeelConfig = load_config(self.root)
        self.reaped_runs: tuple[ReapedRun, ...] = ()
        """Runs of dead processes that opening :attr:`metadata` marked failed."""

    @property
    def state_dir(self) -> Path:
        """``.keel/`` beside keel.yaml (created on demand)."""
        path = self.root / STATE_DIR
        path.mkdir(exist_ok=True)
        return path

    @cached_property
    def artifacts(self) -> ArtifactStore:
        """The content-addressed artifact store (a relative local path is the project's)."""
        from keel.store.artifacts import ArtifactStore

        root = load_settings().artifacts or self.config.store.artifacts
        if root and "://" not in root:
            root = str(self.root / Path(root).expanduser())
        return ArtifactStore(root or str(self.state_dir / "artifacts"))

    @cached_property
    def metadata(self) -> MetadataStore:
        """The metadata store (runs, lineage, registry, audit).

        A relative ``sqlite:///path`` (``KEEL_DB_URL`` or ``store.db_url``) is a path in the
        project directory, wherever the command runs. A bare model name resolves to
        ``NAME@<registry.alias>`` (else the newest version). Opening it marks failed the runs whose
        process died (``kill -9``, out of memory): they are in :attr:`reaped_runs`.
        """
        from keel.store import pipeline_runs
        from keel.store.metadata import MetadataStore

        store = MetadataStore(self.db_url, default_alias=self.config.registry.alias)
        try:
            self.reaped_runs = tuple(store.reap_dead_runs())
            pipeline_runs.reap_dead(store.database)
        except KeelError as exc:
            # Not ours to fail on (a read-only database user, say): the next opener reaps them.
            _log.warning("could not mark the runs of dead processes failed: %s", exc)
        return store

    @property
    def db_url(self) -> str:
        """The metadata database URL: ``KEEL_DB_URL``, else ``store.db_url`` (a relative
        ``sqlite:///path`` is in the project directory), else ``.keel/keel.db``."""
        url = load_settings().db_url or self.config.store.db_url
        if url:
            from keel.store.database import anchor_sqlite_url

            return anchor_sqlite_url(url, self.root)
        return f"sqlite:///{self.state_dir / 'keel.db'}"

    @property
    def predictions_dir(self) -> Path:
        """Where the server appends its prediction log."""
        return self.state_dir / "predictions"

    def close(self) -> None:
        """Release database connections."""
        if "metadata" in self.__dict__:
            self.metadata.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
