"""The scikit-learn flavor: estimators and pipelines by import path, and skops loading that
trusts only scikit-learn, NumPy and SciPy types."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from keel.errors import ConfigError, IntegrityError
from keel.train import fit, trainer_for
from keel.train.sklearn import MODEL_FILE, build_estimator, dumps_model, loads_model

from .conftest import Data


class Outsider(ClassifierMixin, BaseEstimator):
    """A classifier from outside the trusted libraries."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> Outsider:
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.full((len(x), len(self.classes_)), 1 / len(self.classes_))


def test_pipeline_by_import_path_with_nested_steps(binary_data: Data) -> None:
    params = {
        "estimator": "sklearn.pipeline.Pipeline",
        "steps": [
            ["select", {"estimator": "sklearn.feature_selection.VarianceThreshold"}],
            [
                "clf",
                {
                    "estimator": "sklearn.ensemble.RandomForestClassifier",
                    "n_estimators": 20,
                    "max_depth": 8,
                },
            ],
        ],
    }
    result = fit(
        binary_data.x,
        binary_data.y,
        flavor="sklearn",
        task="binary",
        params=params,
        seed=1,
        sample_weight=np.ones(len(binary_data.y)),
    )
    pipeline = result.model.estimator_  # type: ignore[attr-defined]
    assert isinstance(pipeline, Pipeline)
    assert pipeline.steps[1][1].random_state == 1  # the seed, since none was given
    loaded = trainer_for("sklearn").load(result.model.save())
    assert np.array_equal(
        loaded.predict(binary_data.x_test), result.model.predict(binary_data.x_test)
    )
    assert result.facts["estimator"] == "sklearn.pipeline.Pipeline"


def test_misspelt_estimator_argument_names_it(binary_data: Data) -> None:
    params = {"estimator": "sklearn.linear_model.LogisticRegression", "max_itr": 10}
    with pytest.raises(ConfigError, match=r"unknown key 'max_itr'.*Did you mean 'max_iter'"):
        fit(binary_data.x, binary_data.y, flavor="sklearn", task="binary", params=params, seed=0)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, r"model\.params\.estimator is missing"),
        ({"estimator": "sklearn.linear_model.NoSuchModel"}, r"cannot be imported"),
        ({"estimator": "sklearn.svm.LinearSVC"}, r"LinearSVC has no predict_proba"),
        ({"estimator": "sklearn.linear_model.LogisticRegression", "C": "high"}, r"'C' parameter"),
    ],
)
def test_bad_estimator_specs_are_config_errors(
    params: dict[str, object], message: str, binary_data: Data
) -> None:
    with pytest.raises(ConfigError, match=message):
        fit(
            binary_data.x[:200],
            binary_data.y[:200],
            flavor="sklearn",
            task="binary",
            params=params,
            seed=0,
        )


def test_estimator_without_sample_weight_says_so(binary_data: Data) -> None:
    params = {"estimator": "sklearn.neighbors.KNeighborsClassifier"}
    with pytest.raises(ConfigError, match="takes no sample_weight"):
        fit(
            binary_data.x[:200],
            binary_data.y[:200],
            flavor="sklearn",
            task="binary",
            params=params,
            seed=0,
            sample_weight=np.ones(200),
        )


def test_untrusted_types_are_refused_when_loading() -> None:
    x, y = np.random.default_rng(0).normal(size=(50, 3)), np.arange(50) % 2
    from skops.io import dumps

    data = dumps(Outsider().fit(x, y))
    with pytest.raises(IntegrityError, match=r"test_sklearn\.Outsider"):
        loads_model(data)
    # a function that executes code is refused just the same
    with pytest.raises(IntegrityError, match=r"builtins\.eval"):
        loads_model(dumps(FunctionTransformer(func=eval)))


def test_untrusted_estimator_fails_at_training_not_at_serving() -> None:
    x, y = np.random.default_rng(0).normal(size=(50, 3)), np.arange(50) % 2
    params = {"estimator": f"{__name__}.Outsider"}
    with pytest.raises(IntegrityError, match="does not trust"):
        fit(x, y, flavor="sklearn", task="binary", params=params, seed=0)


def test_tampered_model_file_is_refused(binary_data: Data) -> None:
    result = fit(
        binary_data.x[:500],
        binary_data.y[:500],
        flavor="sklearn",
        task="binary",
        params={"estimator": "sklearn.linear_model.LogisticRegression"},
        seed=0,
    )
    files = result.model.save()
    archive = zipfile.ZipFile(io.BytesIO(files[MODEL_FILE]))
    schema = archive.read("schema.json").decode()
    tampered = schema.replace(
        '"__module__": "sklearn.linear_model._logistic"', '"__module__": "os"', 1
    ).replace('"LogisticRegression"', '"system"', 1)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in archive.namelist():
            target.writestr(name, tampered if name == "schema.json" else archive.read(name))
    with pytest.raises(IntegrityError, match=r"os\.system"):
        trainer_for("sklearn").load({**files, MODEL_FILE: out.getvalue()})


def test_saved_bytes_do_not_depend_on_object_ids_or_time() -> None:
    x, y = np.random.default_rng(0).normal(size=(200, 4)), np.arange(200) % 2
    first = dumps_model(
        build_estimator(
            {"estimator": "sklearn.ensemble.RandomForestClassifier", "n_estimators": 3}, seed=0
        ).fit(x, y)
    )
    second = dumps_model(
        build_estimator(
            {"estimator": "sklearn.ensemble.RandomForestClassifier", "n_estimators": 3}, seed=0
        ).fit(x, y)
    )
    assert first == second
    assert np.array_equal(loads_model(first).predict_proba(x), loads_model(second).predict_proba(x))
