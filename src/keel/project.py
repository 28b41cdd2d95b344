"""A Keel project: the directory holding keel.yaml, its configuration and its stores."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from keel.config import CONFIG_FILE, KeelConfig, load_config
from keel.errors import ConfigError
from keel.store.artifacts import ArtifactStore
from keel.store.database import anchor_sqlite_url
from keel.store.metadata import MetadataStore

__all__ = ["Project", "find_project"]

STATE_DIR = ".keel"


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

    @property
    def state_dir(self) -> Path:
        """``.keel/`` beside keel.yaml (created on demand)."""
        path = self.root / STATE_DIR
        path.mkdir(exist_ok=True)
        return path

    @cached_property
    def artifacts(self) -> ArtifactStore:
        """The content-addressed artifact store (a relative local path is the project's)."""
        root = os.environ.get("KEEL_ARTIFACTS") or self.config.store.artifacts
        if root and "://" not in root:
            root = str(self.root / Path(root).expanduser())
        return ArtifactStore(root or str(self.state_dir / "artifacts"))

    @cached_property
    def metadata(self) -> MetadataStore:
        """The metadata store (runs, lineage, registry, audit).

        A relative ``sqlite:///path`` (``KEEL_DB_URL`` or ``store.db_url``) is a path in the
        project directory, wherever the command runs.
        """
        url = os.environ.get("KEEL_DB_URL") or self.config.store.db_url
        if url:
            return MetadataStore(anchor_sqlite_url(url, self.root))
        return MetadataStore(f"sqlite:///{self.state_dir / 'keel.db'}")

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
