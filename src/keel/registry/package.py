"""The model package: a manifest (``keel-model.json``) plus model files in safe formats.

Each file is a content-addressed artifact; the manifest lists every file's sha256 and is itself
the package artifact, so one hash pins the whole package (and an Ed25519 signature of the
manifest, :mod:`keel.registry.signing`, signs all of it). Loading re-hashes every file (a
mismatch names the file) and never unpickles anything: each flavor's trainer saves safe formats
(LightGBM text, XGBoost UBJSON, skops checked against an exact type allowlist before loading,
safetensors + JSON) and the feature pipeline is JSON state. Load registered versions through
:func:`keel.registry.verify.load_package`, which also enforces ``registry.require_signature``.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa

from keel.errors import ConfigError, IntegrityError, UnsafeModelError
from keel.features.pipeline import FeaturePipeline
from keel.store.artifacts import ArtifactStore
from keel.train.tasks import Task, task_for
from keel.types import Artifact

if TYPE_CHECKING:
    from keel.train.base import Trainer
    from keel.validate.coerce import Finding

__all__ = [
    "FILE_NAME",
    "MANIFEST",
    "ModelPackage",
    "build_package",
    "check_custom_features",
    "ignored_inputs",
    "model_file_of",
    "signature_outputs",
]

MANIFEST = "keel-model.json"
FORMAT = "keel-model/1"
MODEL_FILE = "model.lgb.txt"  # the LightGBM model file; other flavors name theirs in the manifest
STATISTICS_FILE = "statistics.json"
#: What a file in a package may be called: a plain name, never a path.
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")


def build_package(
    store: ArtifactStore,
    *,
    name: str,
    flavor: str,
    task: str,
    model_files: Mapping[str, bytes],
    model_file: str,
    pipeline_state: dict[str, Any],
    classes: list[str],
    metrics: dict[str, Any],
    statistics: dict[str, Any],
    lineage: dict[str, Any],
) -> Artifact:
    """Store the model files and the manifest that names them; returns the manifest artifact.

    Args:
        model_files: The trainer's saved files (``Trainer.save()``).
        model_file: Which of them is the model itself (its sha256 is the model's hash).
        classes: Class names by code for classification; empty for regression.
    """
    files = {
        **model_files,
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
        "flavor": flavor,
        "task": task,
        "model_file": model_file,
        "created_at": datetime.now(UTC).isoformat(),
        "signature": {
            "inputs": [{"name": n, "type": t, "nullable": True} for n, t in inputs.items()],
            "outputs": signature_outputs(task, classes),
            "ignored": ignored_inputs(inputs, statistics),
        },
        "classes": classes,
        "features": pipeline_state,
        "metrics": metrics,
        "lineage": lineage,
        "files": listed,
    }
    data = orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    return store.put(data, kind="model-package", metadata={"model": name, "file": MANIFEST})


def ignored_inputs(inputs: Mapping[str, Any], statistics: Mapping[str, Any]) -> list[str]:
    """The training data's columns the model does not read (the target, ids, dates, excluded
    columns), in the data's order: a request may carry them, and they are ignored
    (:meth:`keel.validate.coerce.Coercer.ignore`)."""
    columns = statistics.get("columns")
    return [str(c) for c in columns if c not in inputs] if isinstance(columns, Mapping) else []


def signature_outputs(task: str, classes: list[str]) -> list[dict[str, Any]]:
    """What a model answers (``Task.outputs``): label and P(positive), label and per-class
    probabilities, a value, or what a plug-in task answers."""
    return task_for(task).outputs(classes)


def model_file_of(manifest: Mapping[str, Any]) -> str:
    """The name of the model file in a package manifest (``model.lgb.txt`` before flavors)."""
    return str(manifest.get("model_file", MODEL_FILE))


def check_custom_features(state: Mapping[str, Any]) -> None:
    """Refuse, before importing anything, a custom feature whose ``module:function`` is not
    found as a Python source file on the path that uses Keel and defines that name: importing
    a module runs it, so a manifest must not pick an arbitrary module (``antigravity``, a
    library's CLI entry module) to import. Modules already imported pass (importing them again
    runs nothing); the ``@keel.feature`` mark and the source hash are checked after import.

    Raises:
        UnsafeModelError: The module is not found as source, or defines no such decorated
            function.
    """
    for spec in state.get("custom") or []:
        path = str(spec.get("function", ""))
        module, _, name = path.partition(":")
        if module in sys.modules:
            continue
        source = _module_source(module)
        if source is None or not _defines_feature(source, name):
            raise UnsafeModelError(
                f"custom feature '{spec.get('output')}' names {path!r}, which is not defined in a "
                "Python source file on the path that uses keel; refused before importing it. "
                "Install or deploy the feature module the model was trained with.",
                field="function",
            )


def _module_source(module: str) -> str | None:
    """A module's source text, found on ``sys.path`` and the working directory without
    importing it or its parent packages."""
    from importlib.machinery import PathFinder

    locations: list[str] | None = [*sys.path, os.getcwd()]
    spec = None
    for depth, part in enumerate(module.split(".")):
        if not part.isidentifier() or locations is None:
            return None
        spec = PathFinder.find_spec(".".join(module.split(".")[: depth + 1]), locations)
        if spec is None:
            return None
        search = spec.submodule_search_locations
        locations = list(search) if search is not None else None
    origin = getattr(spec, "origin", None)
    if not origin or not str(origin).endswith(".py"):
        return None
    try:
        return Path(origin).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _defines_feature(source: str, name: str) -> bool:
    """Whether a module's source binds ``name`` at top level (a def, an assignment or an
    import) and uses Keel at all: a module that never mentions keel holds no Keel feature."""
    if "keel" not in source:
        return False
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound = [node.name]
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound = [t.id for t in targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound = [(a.asname or a.name).split(".")[0] for a in node.names]
        else:
            continue
        if name in bound:
            return True
    return False


def _read_file(store: ArtifactStore, name: str, sha256: str) -> bytes:
    """A package file's bytes, re-hashed; a mismatch names the file."""
    try:
        return store.get(sha256)
    except IntegrityError as exc:
        raise IntegrityError(
            f"model package file {name} is corrupt: {exc.message}",
            field=name,
            details={**exc.details, "file": name},
        ) from exc


class ModelPackage:
    """A loaded, verified model package: the feature pipeline and the model, ready to predict.

    Use :meth:`load`; the constructor takes already-verified parts.
    """

    def __init__(
        self, manifest: dict[str, Any], model: Trainer, statistics: dict[str, Any], sha256: str
    ) -> None:
        self.manifest = manifest
        self.sha256 = sha256
        self.name: str = manifest["name"]
        self.task: str = manifest.get("task", "binary")
        self.flavor: str = manifest.get("flavor", "lightgbm")
        self.classes: list[str] = manifest["classes"]
        self.task_spec: Task = task_for(self.task)
        self.pipeline = FeaturePipeline.from_state(manifest["features"])
        # Columns a request may carry and the model does not read: stored in the signature
        # since they were; a package from before lists them in its training statistics.
        ignored = (manifest.get("signature") or {}).get("ignored")
        if not isinstance(ignored, list):
            ignored = ignored_inputs(self.pipeline.inputs, statistics)
        self.pipeline.coercer().ignore(str(name) for name in ignored)
        self.model = model
        self.booster = getattr(model, "booster_", None)  # the LightGBM/XGBoost booster, if any
        self.statistics = statistics

    @classmethod
    def load(cls, store: ArtifactStore, sha256: str) -> ModelPackage:
        """Fetch and verify the manifest and every file it lists, then build the model.

        The model loads through its flavor's ``Trainer.load`` from safe formats only.
        """
        from keel.train import trainer_for

        manifest = orjson.loads(store.get(sha256))
        if manifest.get("format") != FORMAT:
            raise IntegrityError(f"artifact {sha256[:12]} is not a {FORMAT} package manifest.")
        files = {
            name: _read_file(store, name, spec["sha256"])
            for name, spec in manifest["files"].items()
        }
        statistics = orjson.loads(files.pop(STATISTICS_FILE))
        check_custom_features(manifest["features"])
        model = trainer_for(manifest.get("flavor", "lightgbm")).load(files)
        return cls(manifest, model, statistics, sha256)

    @property
    def signature(self) -> dict[str, Any]:
        """Inputs (name, type) and outputs of the model."""
        return dict(self.manifest["signature"])

    def _matrix(self, data: pa.Table | Any) -> np.ndarray:
        table = (
            data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        )
        return self.pipeline.transform(table)

    def predict_proba(self, data: pa.Table | Any) -> np.ndarray:
        """P(positive class) per row (binary), or ``(rows, classes)`` probabilities (multiclass).

        Raises:
            ConfigError: The model is a regression model (use :meth:`predict`).
        """
        if self.task_spec.kind == "regression":
            raise ConfigError(
                f"model '{self.name}' is a {self.task} model: it has no probabilities. Use "
                "predict() for its values."
            )
        return self.model.predict(self._matrix(data))

    def predict(self, data: pa.Table | Any) -> np.ndarray:
        """Class labels (classification) or values (regression) for a table or DataFrame."""
        return self.labels(self.model.predict(self._matrix(data)))

    def labels(self, proba: np.ndarray) -> np.ndarray:
        """The task's answers for the model's raw predictions: labels for P(positive)
        (threshold 0.5) or per-class probabilities (argmax), values for regression."""
        return self.task_spec.columns(proba, self.classes)["prediction"]

    def predict_rows(
        self, rows: Sequence[Mapping[str, Any]], *, findings: list[Finding] | None = None
    ) -> tuple[list[Any], list[Any] | None]:
        """The online path: coerce and transform request dicts, no DataFrame.

        Args:
            rows: Field name -> value, one dict per instance. Fields of the training data the
                model does not read (``signature["ignored"]``) are accepted, noted as
                ``ignored_field`` findings and removed from the dicts.
            findings: A list to append warnings to (a value out of range, a category not seen
                in training, an ignored field); values that do not convert raise instead.

        Returns:
            ``(labels, P(positive))`` for binary, ``(labels, [per-class probabilities])`` for
            multiclass, ``(values, None)`` for regression.

        Raises:
            DataValidationError: A field is missing, unknown or does not convert (names it).
        """
        out = self.model.predict(self.pipeline.transform_rows(rows, findings=findings))
        return self.task_spec.answer(out, self.classes)

    def export(self, store: ArtifactStore, directory: Path) -> Path:
        """Write the package as a directory (manifest + files) for shipping elsewhere."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFEST).write_bytes(store.get(self.sha256))
        for file_name, spec in self.manifest["files"].items():
            if not FILE_NAME.fullmatch(file_name):
                msg = f"package file name {file_name!r} is not a plain file name; not written"
                raise UnsafeModelError(msg, field="files")
            shutil.copyfile(store.local_path(spec["sha256"]), directory / file_name)
        return directory
