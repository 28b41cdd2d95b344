"""Helpers for the package security tests: a signed scikit-learn Adult project, crafted skops
files, and packages rebuilt from a registered one (unsigned, or with a model file swapped)."""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson

import keel
from keel.project import Project
from keel.registry.package import STATISTICS_FILE, build_package

SKLEARN_MODEL = """model:
  name: adult
  flavor: sklearn
  task: binary
  params:
    estimator: sklearn.linear_model.LogisticRegression
    max_iter: 200

evaluate:"""


def make_project(directory: Path, *, registry: str = "", run: bool = True) -> Path:
    """The Adult example with the sklearn flavor and ``registry:`` lines appended; trained
    (``keel run``) unless ``run`` is False."""
    root = Path(keel.init(directory, example="adult"))
    text = (root / "keel.yaml").read_text()
    text = re.sub(r"model:\n(?:.*\n)*?\nevaluate:", SKLEARN_MODEL, text)
    text = text.replace("    - roc_auc >= 0.9\n", "    - roc_auc >= 0.5\n")
    text = text.replace(
        "registry:\n  alias: production\n", "registry:\n  alias: production\n" + registry
    )
    (root / "keel.yaml").write_text(text)
    if run:
        keel.run(root)
    return root


def set_registry(root: Path, lines: str) -> None:
    """Replace the ``registry:`` section's extra lines (after ``alias``)."""
    text = (root / "keel.yaml").read_text()
    head, _, _ = text.partition("registry:\n")
    (root / "keel.yaml").write_text(head + "registry:\n  alias: production\n" + lines)


def crafted_skops(target: Path, *, loader: str = "ConstructorFromReduceNode",
                  module: str = "numpy", name: str = "savetxt") -> bytes:  # fmt: skip
    """A real LogisticRegression skops file whose ``C`` is replaced by a node that calls
    ``module.name(str(target), [1.0])`` when skops constructs it: ``numpy.savetxt`` writes
    ``target``. Its name passes a ``numpy``/``scipy``/``sklearn`` prefix check."""
    from sklearn.linear_model import LogisticRegression
    from skops.io import dumps

    raw = dumps(LogisticRegression().fit(np.eye(4), [0, 1, 0, 1]))
    source = zipfile.ZipFile(io.BytesIO(raw))
    schema = json.loads(source.read("schema.json"))

    def js(value: Any, i: int) -> dict[str, Any]:
        kind = type(value).__name__
        return {"__class__": kind, "__module__": "builtins", "__loader__": "JsonNode",
                "content": json.dumps(value), "is_json": True, "__id__": i}  # fmt: skip

    args = {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
            "__id__": 2, "content": [js(str(target), 3), {
                "__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
                "__id__": 4, "content": [js(1.0, 5)]}]}  # fmt: skip
    schema["content"]["content"]["C"] = {
        "__class__": name, "__module__": module, "__loader__": loader, "__id__": 1,
        "content": args,
    }  # fmt: skip
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info in source.infolist():
            data = source.read(info.filename)
            archive.writestr(info.filename, json.dumps(schema) if info.filename == "schema.json"
                             else data)  # fmt: skip
    return out.getvalue()


def repackage(root: Path, ref: str, *, model: bytes | None = None, tag: str = "copy") -> str:
    """Register a new version rebuilt from ``ref``'s package (so: unsigned), its model file
    replaced by ``model`` when given; returns the new package's sha256."""
    from keel.registry.registry import Registry

    with Project(root) as project:
        version = project.metadata.resolve(ref)
        manifest = orjson.loads(project.artifacts.get(version.package_sha256))
        files = {n: project.artifacts.get(s["sha256"]) for n, s in manifest["files"].items()}
        statistics = orjson.loads(files.pop(STATISTICS_FILE))
        if model is not None:
            files[manifest["model_file"]] = model
        package = build_package(
            project.artifacts,
            name=manifest["name"],
            flavor=manifest["flavor"],
            task=manifest["task"],
            model_files=files,
            model_file=manifest["model_file"],
            pipeline_state=manifest["features"],
            classes=manifest["classes"],
            metrics={**manifest["metrics"], "tag": tag},
            statistics=statistics,
            lineage=manifest["lineage"],
        )
        project.metadata.record_artifact(package)
        Registry(project.metadata.database).register(
            manifest["name"], package_sha256=package.sha256, run_id=None, metrics={}
        )
        return package.sha256


def with_signing_key(path: Path | str | None) -> dict[str, str | None]:
    """Set (or unset) KEEL_SIGNING_KEY; returns what to restore with :func:`restore_env`."""
    old = {"KEEL_SIGNING_KEY": os.environ.get("KEEL_SIGNING_KEY")}
    if path is None:
        os.environ.pop("KEEL_SIGNING_KEY", None)
    else:
        os.environ["KEEL_SIGNING_KEY"] = str(path)
    return old


def restore_env(old: dict[str, str | None]) -> None:
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
