"""A California housing project with two registered versions, for the deployment trials' tests
(read from ../shared/data; the tests skip where it is not there)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml
from starlette.testclient import TestClient

import keel
from keel.commands.init import init_from_file

HOUSING = Path("/work/shared/data/california-housing/housing.csv")
FAST = {"n_estimators": 30, "learning_rate": 0.2, "num_leaves": 8}

needs_housing = pytest.mark.skipif(not HOUSING.exists(), reason="needs /work/shared/data")


def two_versions(root: Path, seed: int) -> Path:
    """2,000 housing rows (sampled with ``seed``), ``keel init --from``, two runs: version 1
    with 8 leaves, version 2 with 16, which holds production. Returns the project."""
    pd.read_csv(HOUSING).sample(n=2000, random_state=seed).to_csv(root / "h.csv", index=False)
    made = init_from_file(root / "housing", root / "h.csv", "median_house_value")
    path = made.directory / "keel.yaml"
    for leaves in (8, 16):
        config = yaml.safe_load(path.read_text())
        config["model"]["params"] = {**FAST, "num_leaves": leaves}
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        keel.run(made.directory)
    return made.directory


@contextmanager
def admin_client(root: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The project's server in a test client (no hot reload) and an admin token's header."""
    from keel.project import Project
    from keel.serve.app import create_app
    from keel.store.tokens import create_token

    with Project(root) as project:
        _, secret = create_token(project.metadata.database, "ops", ["admin"], created_by="t")
        with TestClient(create_app(project, reload=False)) as client:
            yield client, {"authorization": f"Bearer {secret}"}
