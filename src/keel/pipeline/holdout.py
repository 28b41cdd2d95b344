"""The ``split`` step: without ``data.test``, hold out a test split of the training snapshot.

The ``split:`` section of keel.yaml says how: ``auto`` is stratified on the target for
classification (each class keeps its share on both sides) and random for regression; ``time``
holds out the latest rows by ``split.column`` (every test row later than every training row);
``group`` keeps each value of ``split.column`` on one side. ``split.test_fraction`` of the rows
(or groups) go to the test side, drawn with ``split.seed``: the same data, settings and seed give
the same rows, and so the same snapshot hashes.

Both sides are written as Parquet ``snapshot`` artifacts (rows in their original order) that
replace ``train_snapshot`` and add ``test_snapshot`` for the later steps; the run records the
method, fraction, column, seed and row counts, and each snapshot's metadata names its parent.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError
from keel.pipeline.declare import step
from keel.pipeline.runner import StepContext
from keel.project import Project
from keel.types import Artifact

if TYPE_CHECKING:  # imported where used: declaring the step must not load NumPy and Arrow
    import numpy as np
    import pyarrow as pa

__all__ = ["holdout_rows", "split"]


def _section(project: Project) -> dict[str, Any]:
    cfg = project.config
    return {
        "method": cfg.split.method,
        "column": cfg.split.column,
        "test_fraction": cfg.split.test_fraction,
        "seed": cfg.split.seed,
        "target": cfg.data.target,
        "task": cfg.model.task,
    }


@step(
    name="split",
    inputs={"train_snapshot": "snapshot"},
    outputs={"train_snapshot": "snapshot", "test_snapshot": "snapshot"},
    section=lambda p: _section(p),
)
def split(ctx: StepContext) -> dict[str, Artifact]:
    """Hold out ``split.test_fraction`` of the training snapshot as the test split."""
    from keel.data import read_snapshot

    project = ctx.project
    parent = ctx.inputs["train_snapshot"]
    table = read_snapshot(project.artifacts, parent)
    train_rows, test_rows, method = holdout_rows(table, project)
    cfg = project.config.split
    facts: dict[str, Any] = {
        "method": method,
        "test_fraction": cfg.test_fraction,
        "seed": cfg.seed,
        **({"column": cfg.column} if method in ("time", "group") else {}),
        **({"stratified_on": project.config.data.target} if method == "stratified" else {}),
        "train_rows": len(train_rows),
        "test_rows": len(test_rows),
    }
    ctx.facts.update(facts, params={k: v for k, v in facts.items() if not k.endswith("_rows")})
    return {
        f"{side}_snapshot": _put_side(project, table.take(rows), side, parent, facts)
        for side, rows in (("train", train_rows), ("test", test_rows))
    }


def holdout_rows(table: pa.Table, project: Project) -> tuple[np.ndarray, np.ndarray, str]:
    """Training and test row indices (each in row order) and the method that made them.

    Raises:
        ConfigError: ``split.column`` or the target is not a column, or the method cannot
            apply (stratified regression, time or group without a column).
        DataValidationError: Too few rows, classes, timestamps or groups to split.
    """
    import numpy as np

    from keel.train.splits import resolve_method, validation_split

    cfg, data, task = project.config.split, project.config.data, project.config.model.task
    method = resolve_method(cfg.method, task, cfg.column)
    values = _values(table, cfg.column, "split.column") if method in ("time", "group") else None
    if method == "stratified":
        import pandas as pd

        target = _values(table, data.target, "data.target")
        y = np.asarray(pd.factorize(target, use_na_sentinel=False)[0], dtype=np.int64)
    else:
        y = np.zeros(table.num_rows, dtype=np.int64)
    train, test = validation_split(
        y,
        task=task,
        fraction=cfg.test_fraction,
        seed=cfg.seed,
        method=method,
        values=values,
        column=cfg.column,
        purpose="test",
    )
    return np.sort(train), np.sort(test), method


def _values(table: pa.Table, column: str | None, field: str) -> np.ndarray:
    if column is None or column not in table.column_names:
        import difflib

        names = table.column_names
        more = f", ... ({len(names) - 30} more)" if len(names) > 30 else ""
        close = {n.lower(): n for n in names}.get(str(column).lower()) or next(
            iter(difflib.get_close_matches(str(column), names, n=1, cutoff=0.6)), None
        )
        hint = f" Did you mean '{close}'?" if close else ""
        raise ConfigError(
            f"{field}: column '{column}' is not in the training data (columns: "
            f"{', '.join(names[:30])}{more}).{hint} Name one of them in keel.yaml.",
            field=field,
        )
    values: np.ndarray = table.column(column).to_numpy()
    return values


def _put_side(
    project: Project, table: pa.Table, side: str, parent: Artifact, facts: dict[str, Any]
) -> Artifact:
    import pyarrow.parquet as pq

    from keel.data.snapshots import ROW_GROUP_ROWS, schema_fingerprint

    with tempfile.TemporaryDirectory(prefix="keel-split-") as tmp:
        path = Path(tmp) / f"{side}.parquet"
        pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, compression="zstd")
        metadata = {
            "rows": table.num_rows,
            "columns": table.column_names,
            "schema_fingerprint": schema_fingerprint(table.schema),
            "split": side,
            "source": parent.metadata.get("source"),
            "parent": parent.sha256,
            "holdout": facts,
        }
        return project.artifacts.put(path, kind="snapshot", metadata=metadata)
