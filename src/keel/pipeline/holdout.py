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

**Labelled production rows** (a retraining policy, :mod:`keel.pipeline.retrain`) are added after
this step, never before it: the declared training data is split exactly as in ``keel run``, so
the original test rows are the same in every retrain and versions stay comparable on them.
The holdout rule then applies to the labelled rows too (:func:`labelled_test_side`), each row's
side decided by the row alone, so a row lands on the same side in every retrain (its side never
depends on which other rows came back) and a version trained in one retrain never trained on a
row a later retrain tests on:

- ``stratified`` and ``random``: a seeded 64-bit hash of the row's identity in the prediction log
  (request id and instance) below ``test_fraction`` sends it to the test side (not stratified:
  the hash is uniform, so each class keeps its share in expectation);
- ``group``: a row whose ``split.column`` value is a group of the original split goes to that
  group's side (a group never straddles the split); a new group's side is a seeded hash of its
  value, so all of its rows go together; without the column in the logged rows, by identity;
- ``time``: the latest ``test_fraction`` of the labelled rows by ``split.column`` (when the
  logged rows carry it) go to the test side, so the challenger is judged on the newest production
  rows; as newer rows arrive, a row can move from the test side to training, never back.

The test side so gains production rows: the champion and the challenger are both judged on the
distribution they serve, not only on the declared data's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
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

__all__ = ["holdout_rows", "labelled_test_side", "seeded_uniform", "split"]


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


def labelled_test_side(
    rows: pa.Table,
    identity: pa.Array,
    *,
    train: pa.Table,
    test: pa.Table,
    holdout: Mapping[str, Any],
) -> tuple[np.ndarray, str]:
    """Which labelled ``rows`` join the test side (a boolean mask) and the rule that said so.

    Args:
        rows: The labelled rows, their columns as logged.
        identity: Each row's identity in the prediction log (one text key per row).
        train: The split's training side; ``test``: its test side (groups are read from them).
        holdout: The split as recorded by the ``split`` step (``method``, ``test_fraction``,
            ``seed``, ``column``).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    method = str(holdout.get("method", "random"))
    fraction, seed = float(holdout["test_fraction"]), int(holdout.get("seed", 0))
    column = holdout.get("column")
    present = column is not None and column in rows.column_names and column in test.column_names
    if method == "group" and present:
        # compared as text, the logged values first cast to the split's type (1 and 1.0 agree)
        text = pc.cast(_as_type(rows.column(column), test.schema.field(column).type), pa.string())
        groups = {side: pc.unique(pc.cast(t.column(column), pa.string())) for side, t in
                  (("train", train), ("test", test))}  # fmt: skip
        in_test = _booleans(pc.is_in(text, value_set=groups["test"]))
        seen = in_test | _booleans(pc.is_in(text, value_set=groups["train"]))
        new = ~seen & (seeded_uniform(text, seed) < fraction)
        return in_test | new, f"group of {column}"
    if method == "time" and present:
        values = _as_type(rows.column(column), test.schema.field(column).type)
        known = pc.drop_null(values)  # a row without a time trains
        keep = int(np.ceil(len(known) * (1.0 - fraction)))
        if keep >= len(known):
            return np.zeros(rows.num_rows, dtype=bool), f"latest by {column}"
        cutoff = known.take(pc.sort_indices(known))[keep]  # ties go together
        later = pc.fill_null(pc.greater_equal(values, cutoff), False)
        return _booleans(later), f"latest by {column}"
    return seeded_uniform(identity, seed) < fraction, "request id and instance"


def seeded_uniform(keys: pa.Array, seed: int) -> np.ndarray:
    """A number in [0, 1) per text key, from a 64-bit hash of its bytes mixed with ``seed``
    (murmur3's finaliser): the same key and seed give the same number in every process and on
    every machine; nulls hash like the empty text. Vectorised (no loop over rows)."""
    import numpy as np
    import pyarrow as pa

    from keel.monitor.labelled import key_hashes

    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    hashed, _ = key_hashes(keys)
    mixed = hashed ^ np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        mixed = (mixed ^ (mixed >> np.uint64(33))) * np.uint64(multiplier)
    mixed = mixed ^ (mixed >> np.uint64(33))
    return np.asarray((mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53)


def _as_type(values: Any, wanted: pa.DataType) -> Any:
    """``values`` as ``wanted`` (the test side's type), or as text when that fails."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(values, wanted, safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pc.cast(values, pa.string())


def _booleans(mask: Any) -> np.ndarray:
    import numpy as np

    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)
