"""The model package: a manifest (``keel-model.json``) plus model files in safe formats.

Each file is a content-addressed artifact; the manifest lists every file's sha256 and is itself
the package artifact, so one hash pins the whole package. Loading re-hashes every file and never
unpickles anything: the LightGBM model is its text format, the feature pipeline is JSON state.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from keel.errors import IntegrityError
from keel.features.pipeline import FeaturePipeline
from keel.store.artifacts import ArtifactStore
from keel.types import Artifact

__all__ = ["MANIFEST", "ModelPackage", "build_package"]

MANIFEST = "keel-model.json"
FORMAT = "keel-model/1"
MODEL_FILE = "model.lgb.txt"
STATISTICS_FILE = "statistics.json"


def build_package(
    store: ArtifactStore,
    *,
    name: str,
    booster_text: str,
    pipeline_state: dict[str, Any],
    classes: list[str],
    metrics: dict[str, Any],
    statistics: dict[str, Any],
    lineage: dict[str, Any],
) -> Artifact:
    """Store the model files and the manifest that names them; returns the manifest artifact."""
    files = {
        MODEL_FILE: booster_text.encode(),
        STATISTICS_FILE: orjson.dumps(statistics, option=orjson.OPT_SORT_KEYS),
    }
    listed = {}
    for file_name, data in files.items():
        artifact = store.put(data, kind="model-file", metadata={"file": file_name, "model": name})
        listed[file_name] = {"sha256": artifact.sha256, "size": artifact.size}
    inputs = pipeline_state["params"]["inputs"]
    manifest = {
        "format": FORMAT,
        "name": name,
        "flavor": "lightgbm",
        "task": "binary",
        "created_at": datetime.now(UTC).isoformat(),
        "signature": {
            "inputs": [{"name": n, "type": t, "nullable": True} for n, t in inputs.items()],
            "outputs": [
                {"name": "prediction", "type": "string", "classes": classes},
                {"name": "probability", "type": "float", "of": classes[1]},
            ],
        },
        "classes": classes,
        "features": pipeline_state,
        "metrics": metrics,
        "lineage": lineage,
        "files": listed,
    }
    data = orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    return store.put(data, kind="model-package", metadata={"model": name, "file": MANIFEST})


class ModelPackage:
    """A loaded, verified model package: the feature pipeline and the booster, ready to predict.

    Use :meth:`load`; the constructor takes already-verified parts.
    """

    def __init__(
        self, manifest: dict[str, Any], booster: Any, statistics: dict[str, Any], sha256: str
    ) -> None:
        self.manifest = manifest
        self.sha256 = sha256
        self.name: str = manifest["name"]
        self.classes: list[str] = manifest["classes"]
        self.pipeline = FeaturePipeline.from_state(manifest["features"])
        self.booster = booster
        self.statistics = statistics

    @classmethod
    def load(cls, store: ArtifactStore, sha256: str) -> ModelPackage:
        """Fetch and verify the manifest and every file it lists, then build the model."""
        from keel.train.lightgbm import load_booster

        manifest = orjson.loads(store.get(sha256))
        if manifest.get("format") != FORMAT:
            raise IntegrityError(f"artifact {sha256[:12]} is not a {FORMAT} package manifest.")
        files = {name: store.get(spec["sha256"]) for name, spec in manifest["files"].items()}
        booster = load_booster(files[MODEL_FILE].decode())
        statistics = orjson.loads(files[STATISTICS_FILE])
        return cls(manifest, booster, statistics, sha256)

    @property
    def signature(self) -> dict[str, Any]:
        """Inputs (name, type) and outputs of the model."""
        return dict(self.manifest["signature"])

    def predict_proba(self, data: pa.Table | Any) -> np.ndarray:
        """P(positive class) for every row of a table or DataFrame (batch path)."""
        table = (
            data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        )
        x = self.pipeline.transform(table)
        return np.asarray(self.booster.predict(x), dtype=np.float64)

    def predict(self, data: pa.Table | Any) -> np.ndarray:
        """Predicted class labels for every row of a table or DataFrame."""
        return self.labels(self.predict_proba(data))

    def labels(self, proba: np.ndarray) -> np.ndarray:
        """Class labels for P(positive class) values (threshold 0.5)."""
        return np.where(proba >= 0.5, self.classes[1], self.classes[0])

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[float]]:
        """The online path: check and transform request dicts, no DataFrame. Labels, P(positive)."""
        x = self.pipeline.transform_rows(rows)
        proba = self.booster.predict(x)
        probabilities = [float(p) for p in proba]
        labels = [self.classes[1] if p >= 0.5 else self.classes[0] for p in probabilities]
        return labels, probabilities

    def export(self, store: ArtifactStore, directory: Path) -> Path:
        """Write the package as a directory (manifest + files) for shipping elsewhere."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFEST).write_bytes(store.get(self.sha256))
        for file_name, spec in self.manifest["files"].items():
            shutil.copyfile(store.local_path(spec["sha256"]), directory / file_name)
        return directory
