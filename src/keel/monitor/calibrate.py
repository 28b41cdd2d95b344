"""The calibration CBPE uses for a binary classifier: fitted once per model version on its test
set, then read from a small cache.

The model's test snapshot (named in the package's lineage) is scored by the model and a
calibration fitted to its labels (:func:`keel.monitor.cbpe.fit_calibration`: beta or isotonic,
whichever has the lower out-of-fold log loss). The result, or the decision that there is nothing
to calibrate, is cached in ``.keel/monitor/<package sha256>/calibration.json``, so only the
first ``keel monitor`` of a version loads the model (LightGBM and all); later ones read the
cache. A package without a test snapshot, or a target that is not the model's two classes,
gives None: the scores are taken as calibrated and the report says so.

A cache written before beta calibration existed holds an isotonic map without a ``method``; it
is still read as isotonic, never refitted: the score sketches already compacted for that version
summed its probabilities, and a version's windows must all be estimated with one map.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

from keel.monitor.cbpe import Calibration, fit_calibration
from keel.monitor.counts import booleans, strings

if TYPE_CHECKING:
    from keel.project import Project

__all__ = ["calibration_for"]


def calibration_for(
    project: Project, sha256: str, target: str | None, classes: tuple[str, ...]
) -> Calibration | None:
    """The cached calibration of a binary classifier's package (fitted on first use)."""
    if target is None or len(classes) != 2:
        return None
    cache = project.state_dir / "monitor" / sha256 / "calibration.json"
    if cache.exists():
        return _read(cache)
    calibration = _fit(project, sha256, target, classes)
    cache.parent.mkdir(parents=True, exist_ok=True)
    body: dict[str, object] = {"calibrated": calibration is not None}
    if calibration is not None:
        body |= calibration.to_json()
    temporary = cache.with_suffix(".tmp")
    temporary.write_bytes(orjson.dumps(body))
    temporary.replace(cache)
    return calibration


def _read(cache: Path) -> Calibration | None:
    try:
        body = orjson.loads(cache.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(body, dict) or not body.get("calibrated"):
        return None
    try:
        return Calibration.from_json(body)
    except (KeyError, TypeError, ValueError):
        return None  # unreadable: estimated uncalibrated rather than not at all


def _fit(
    project: Project, sha256: str, target: str, classes: tuple[str, ...]
) -> Calibration | None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from keel.registry.verify import load_package

    manifest = orjson.loads(project.artifacts.get(sha256))
    snapshot = manifest.get("lineage", {}).get("artifacts", {}).get("test_snapshot")
    if snapshot is None:
        return None
    table = pq.read_table(project.artifacts.local_path(snapshot))
    if target not in table.column_names or table.num_rows < 100:
        return None
    labels = table.column(target)
    if labels.null_count:
        keep = pc.is_valid(labels)
        table, labels = table.filter(keep), labels.filter(keep)
    if pa.types.is_floating(labels.type) and pc.all(pc.equal(labels, pc.round(labels))).as_py():
        labels = labels.cast(pa.int64())  # 1.0 is the class "1"
    text = labels.cast(pa.string())
    known = pc.is_in(text, value_set=strings(list(classes)))
    positive = booleans(pc.equal(text, strings([classes[1]])[0]))
    if not booleans(known).all() or not positive.any() or positive.all():
        return None  # not the model's two classes: nothing to calibrate against
    package = load_package(project, sha256)
    scores = np.asarray(package.predict_proba(table.drop_columns([target])), dtype=np.float64)
    return fit_calibration(scores, positive.astype(np.float64))
