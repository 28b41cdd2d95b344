"""scikit-learn trainer: any estimator or pipeline by import path, saved with skops.

Loading never unpickles. Before anything is built, every type a file names (read from its
``schema.json``) must be on an exact allowlist of the estimators and NumPy/SciPy types this
flavor saves (:mod:`keel.train.skops_types`; never a module prefix); any other is refused with
its name (:func:`trusted_types`), so a model file cannot smuggle in arbitrary code. Saved bytes
are made reproducible (skops names its entries by ``id()`` and stamps the time): same data and
seed, same file.

A ``model.params`` example (nested mappings with an ``estimator`` key are built too)::

    params:
      estimator: sklearn.pipeline.Pipeline
      steps:
        - [scale, {estimator: sklearn.preprocessing.StandardScaler}]
        - [clf, {estimator: sklearn.linear_model.LogisticRegression, C: 0.5}]
"""

from __future__ import annotations

import importlib
import inspect
import io
import re
import zipfile
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np
import orjson

from keel.errors import ConfigError, NotFittedError, UnsafeModelError
from keel.train.background import background_files, read_background, sample_background
from keel.train.base import OnIteration, TrainerBase, check_task, n_classes_of, score, unknown_param
from keel.train.skops_types import (
    ALLOWED_FUNCTIONS,
    ALLOWED_LOADERS,
    ALLOWED_TYPES,
    REFERENCE_LOADERS,
)

__all__ = [
    "SklearnTrainer",
    "build_estimator",
    "dumps_model",
    "loads_model",
    "refused_types",
    "skops_types",
    "trusted_types",
]

MODEL_FILE = "model.skops"
META_FILE = "sklearn.json"
_ID = re.compile(r'("__id__": |"file": ")(\d+)')


class SklearnTrainer(TrainerBase):
    """Any scikit-learn estimator: ``params = {"estimator": "module.Class", **kwargs}``.

    Classifiers must have ``predict_proba``. ``random_state`` defaults to the seed when the
    estimator takes one. There is no iteration to stop early at: with a validation set the
    history holds one point, reported once to ``on_iteration``.
    """

    flavor: ClassVar[str] = "sklearn"
    model_file: ClassVar[str] = MODEL_FILE

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        x_valid: np.ndarray | None = None,
        y_valid: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
        early_stopping_rounds: int | None = None,
        on_iteration: OnIteration | None = None,
    ) -> Self:
        """Build the estimator from ``params`` and fit it (with sample weights if given)."""
        import sklearn

        task = check_task(self.task)
        self.n_classes_ = n_classes_of(task, y, y_valid)
        estimator = build_estimator(self.params, seed=self.seed)
        if task != "regression" and not hasattr(estimator, "predict_proba"):
            raise ConfigError(
                f"model.params.estimator {type(estimator).__name__} has no predict_proba; a "
                f"{task} model needs probabilities. Choose a classifier that has it.",
                field="model.params.estimator",
            )
        from sklearn.utils._param_validation import InvalidParameterError

        try:
            estimator.fit(x, y, **_weight_kwargs(estimator, sample_weight))
        except InvalidParameterError as exc:  # scikit-learn checks parameters when fitting
            raise ConfigError(f"model.params: {exc}", field="model.params") from exc
        self.estimator_ = estimator
        self.background_: np.ndarray | None = sample_background(x, self.seed)  # explanations
        dumps_model(estimator)  # fails now, not at serving time, on a type we would not load
        if x_valid is not None and y_valid is not None:
            self.history_ = {k: [v] for k, v in score(task, y_valid, self.predict(x_valid)).items()}
            if on_iteration is not None:
                on_iteration(1, {k: v[0] for k, v in self.history_.items()})
        self.facts_ = {
            "estimator": self.params["estimator"],
            "train_rows": len(y),
            "validation_rows": 0 if y_valid is None else len(y_valid),
            "sklearn_version": sklearn.__version__,
        }
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(positive), class probabilities (n, k), or values, by task."""
        estimator = getattr(self, "estimator_", None)
        if estimator is None:
            raise NotFittedError("this scikit-learn trainer is not fitted; call fit() or load().")
        if self.task == "regression":
            return np.asarray(estimator.predict(x), dtype=np.float64).reshape(-1)
        proba = np.asarray(estimator.predict_proba(x), dtype=np.float64)
        # columns follow estimator.classes_, which may miss a code absent from training
        full = np.zeros((len(proba), self.n_classes_), dtype=np.float64)
        full[:, np.asarray(estimator.classes_, dtype=np.int64)] = proba
        return full[:, 1] if self.task == "binary" else full

    def save(self) -> dict[str, bytes]:
        """``model.skops`` (reproducible bytes), ``sklearn.json`` (task, classes) and
        ``background.npy`` (training rows for model-agnostic explanations)."""
        if getattr(self, "estimator_", None) is None:
            raise NotFittedError("this scikit-learn trainer is not fitted; nothing to save.")
        meta = {"task": self.task, "n_classes": self.n_classes_, "seed": self.seed}
        return {
            MODEL_FILE: dumps_model(self.estimator_),
            META_FILE: orjson.dumps(meta, option=orjson.OPT_SORT_KEYS),
            **background_files(getattr(self, "background_", None)),
        }

    @classmethod
    def load(cls, files: Mapping[str, bytes]) -> Self:
        """Load with skops and an explicit trusted-type list (see :func:`trusted_types`)."""
        meta = orjson.loads(files[META_FILE])
        trainer = cls(task=str(meta["task"]), params={}, seed=int(meta["seed"]))
        trainer.n_classes_ = int(meta["n_classes"])
        trainer.estimator_ = loads_model(files[MODEL_FILE])
        trainer.background_ = read_background(files)
        return trainer


def build_estimator(spec: Mapping[str, Any], *, seed: int) -> Any:
    """An unfitted estimator from ``{"estimator": "module.Class", **kwargs}`` (nested too)."""
    if "estimator" not in spec or not isinstance(spec["estimator"], str):
        raise ConfigError(
            "model.params.estimator is missing: the sklearn flavor needs the estimator's import "
            "path, e.g. estimator: sklearn.linear_model.LogisticRegression.",
            field="model.params.estimator",
        )
    path = spec["estimator"]
    module_name, _, class_name = path.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        msg = f"model.params.estimator '{path}' cannot be imported ({exc}). Check the path."
        raise ConfigError(msg, field="model.params.estimator") from exc
    kwargs = {k: _build(v, seed) for k, v in spec.items() if k != "estimator"}
    known = _param_names(factory)
    for name in kwargs:
        if known is not None and name not in known:
            raise unknown_param(f"sklearn ({path})", name, sorted(known))
    if known is not None and "random_state" in known and "random_state" not in kwargs:
        kwargs["random_state"] = seed
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as exc:
        msg = f"model.params: {path}({_shown(kwargs)}) failed: {exc}."
        raise ConfigError(msg, field="model.params") from exc


def skops_types(data: bytes) -> list[tuple[str, str]]:
    """``(loader, type)`` for every node of a skops file, read from its ``schema.json``
    without constructing anything (a method names ``module.Class.method``).

    Raises:
        UnsafeModelError: The bytes are not a skops file (no readable ``schema.json``).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = orjson.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, orjson.JSONDecodeError, OSError) as exc:
        msg = f"the scikit-learn model file is not a readable skops file ({exc}); refused."
        raise UnsafeModelError(msg) from exc
    found: set[tuple[str, str]] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__module__" in node or "__class__" in node or "__loader__" in node:
                name = f"{node.get('__module__')}.{node.get('__class__')}"
                loader = str(node.get("__loader__"))
                content = node.get("content")
                if loader == "MethodNode" and isinstance(content, dict):
                    name = f"{name}.{content.get('func')}"
                found.add((loader, name))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(found)


def refused_types(data: bytes) -> list[str]:
    """What in a skops file is outside the allowlist (:mod:`keel.train.skops_types`): a type
    Keel's flavors never save, a function built rather than referred to, or a node kind that
    calls what it names. Empty: the file is safe to load. Nothing is constructed.
    """
    refused = set()
    for loader, name in skops_types(data):
        if loader not in ALLOWED_LOADERS:
            refused.add(f"{name} (loaded by {loader})")
        elif name in ALLOWED_FUNCTIONS and loader not in REFERENCE_LOADERS:
            refused.add(f"{name} (a function, loaded by {loader})")
        elif name not in ALLOWED_TYPES and name not in ALLOWED_FUNCTIONS:
            refused.add(name)
    return sorted(refused)


def trusted_types(data: bytes) -> list[str]:
    """The types a skops file constructs, every one on the allowlist; checked before loading.

    Raises:
        UnsafeModelError: The file names anything else (each refused name is in the message).
    """
    refused = refused_types(data)
    if refused:
        raise UnsafeModelError(
            f"the scikit-learn model file would load types Keel does not trust: {refused}; "
            "refused before loading. Keel loads only the scikit-learn estimators and NumPy/"
            "SciPy types its sklearn flavor saves (keel.train.skops_types); retrain with "
            "those, or review and add the type there.",
            details={"refused": refused},
        )
    return sorted({name for _, name in skops_types(data)})


def loads_model(data: bytes) -> Any:
    """An estimator from skops bytes, after :func:`trusted_types` accepted every type in it;
    never pickle."""
    from skops.io import get_untrusted_types, loads

    trusted = trusted_types(data)
    extra = sorted(set(get_untrusted_types(data=data)) - set(trusted))
    if extra:  # skops sees a type our schema walk did not: refuse rather than guess
        raise UnsafeModelError(
            f"the scikit-learn model file names types Keel does not trust: {extra}; refused.",
            details={"refused": extra},
        )
    return loads(data, trusted=trusted)


def dumps_model(estimator: Any) -> bytes:
    """skops bytes with ids renumbered, entries sorted and timestamps fixed (reproducible)."""
    from skops.io import dumps

    raw = dumps(estimator)
    trusted_types(raw)
    source = zipfile.ZipFile(io.BytesIO(raw))
    schema = source.read("schema.json").decode()
    ids: dict[str, str] = {}
    for match in _ID.finditer(schema):
        ids.setdefault(match.group(2), str(len(ids)))
    entries = {"schema.json": _ID.sub(lambda m: m.group(1) + ids[m.group(2)], schema).encode()}
    for info in source.infolist():
        if info.filename != "schema.json":
            stem, dot, ext = info.filename.partition(".")
            entries[ids.get(stem, stem) + dot + ext] = source.read(info.filename)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for name in sorted(entries):
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(entry, entries[name])
    return out.getvalue()


def _build(value: Any, seed: int) -> Any:
    if isinstance(value, Mapping) and "estimator" in value:
        return build_estimator(value, seed=seed)
    if isinstance(value, list | tuple):
        items = [_build(v, seed) for v in value]
        # [name, {estimator: ...}, ...] is a (name, estimator, ...) step of a Pipeline/Union
        named = len(value) >= 2 and isinstance(value[0], str) and isinstance(value[1], Mapping)
        return tuple(items) if named else items
    return value


def _param_names(factory: Any) -> set[str] | None:
    getter = getattr(factory, "_get_param_names", None)
    if callable(getter):
        return set(getter())
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def _weight_kwargs(estimator: Any, sample_weight: np.ndarray | None) -> dict[str, Any]:
    if sample_weight is None:
        return {}
    steps = getattr(estimator, "steps", None)
    final = steps[-1][1] if steps else estimator
    if "sample_weight" not in inspect.signature(final.fit).parameters:
        raise ConfigError(
            f"{type(final).__name__}.fit takes no sample_weight; remove model.sample_weight or "
            "choose an estimator that supports weights.",
            field="model.sample_weight",
        )
    return (
        {f"{steps[-1][0]}__sample_weight": sample_weight}
        if steps
        else {"sample_weight": sample_weight}
    )


def _shown(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
