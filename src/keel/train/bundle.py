"""The ``model`` artifact of the train step: a JSON bundle naming the trainer's saved files.

Each file the trainer saves is its own content-addressed artifact; the bundle lists them with the
flavor, task and classes, so evaluation and packaging load the model the same way serving does
(``Trainer.load`` over safe formats), and one hash pins the trained model.
"""

from __future__ import annotations

from typing import Any

import orjson

from keel.errors import IntegrityError
from keel.store.artifacts import ArtifactStore
from keel.train.base import Trainer
from keel.types import Artifact

__all__ = ["BUNDLE_FORMAT", "load_bundle", "put_bundle"]

BUNDLE_FORMAT = "keel-trained-model/1"


def put_bundle(
    store: ArtifactStore, model: Trainer, *, task: str, classes: list[str], facts: dict[str, Any]
) -> Artifact:
    """Store the trainer's files and the bundle naming them; returns the bundle artifact."""
    files = {}
    for name, data in sorted(model.save().items()):
        artifact = store.put(
            data, kind="model-file", metadata={"file": name, "flavor": model.flavor}
        )
        files[name] = artifact.sha256
    bundle = {
        "format": BUNDLE_FORMAT,
        "flavor": model.flavor,
        "task": task,
        "classes": classes,
        "model_file": getattr(model, "model_file", next(iter(files))),
        "files": files,
    }
    data = orjson.dumps(bundle, option=orjson.OPT_SORT_KEYS)
    meta = {"flavor": model.flavor, "task": task, "best_iteration": facts.get("best_iteration")}
    return store.put(data, kind="model", metadata=meta)


def load_bundle(
    store: ArtifactStore, artifact: Artifact
) -> tuple[Trainer, dict[str, Any], dict[str, bytes]]:
    """The fitted trainer, the bundle and the verified file bytes of a ``model`` artifact."""
    from keel.train import trainer_for

    bundle = orjson.loads(store.get(artifact.sha256))
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise IntegrityError(
            f"artifact {artifact.sha256[:12]} is not a {BUNDLE_FORMAT} model bundle; rerun "
            "'keel run --no-cache' to retrain it."
        )
    files = {name: store.get(sha) for name, sha in bundle["files"].items()}
    return trainer_for(bundle["flavor"]).load(files), bundle, files
