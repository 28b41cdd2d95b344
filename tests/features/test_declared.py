"""Declaring chains: keel.yaml validation with did-you-mean, and the pipeline's own checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from keel.config import FeaturesConfig, load_config
from keel.errors import ConfigError
from keel.features import FeaturePipeline

BASE = """
project: p
data:
  train: {path: train.csv}
  target: y
model: {name: m}
features:
"""


def config_error(tmp_path: Path, features: str) -> str:
    (tmp_path / "keel.yaml").write_text(BASE + features)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env="")
    return info.value.message


@pytest.mark.parametrize(
    ("features", "words"),
    [
        ("  transforms:\n    - column: a\n      steps: [{kind: standardise}]\n",
         "unknown transform kind 'standardise'. Did you mean 'standardize'?"),
        ("  transforms:\n    - column: a\n      steps: [{kind: impute, strategi: mean}]\n",
         "unknown parameter 'strategi' for impute. Did you mean 'strategy'?"),
        ("  transforms:\n    - colums: [a]\n      steps: [{kind: log1p}]\n",
         "unknown key 'colums' in features.transforms.0. Did you mean 'columns'?"),
        ("  transforms:\n    - column: a\n      steps: [{kind: one_hot, unseen: drop}]\n",
         "one_hot: unseen: Input should be 'auto', 'other', 'ignore' or 'error'"),
        ("  transforms:\n    - column: a\n      steps: [{strategy: mean}]\n",
         "a step needs 'kind'"),
        ("  transforms:\n    - {column: a, columns: [b], steps: [{kind: log1p}]}\n",
         "either 'column' or 'columns'"),
        ("  custom:\n    - {function: not-a-path, inputs: [a], output: o}\n",
         "features.custom.0.function"),
        ("  custom:\n    - {function: 'm:f', inputs: [a], output: o, type: number}\n",
         "features.custom.0.type"),
    ],
)  # fmt: skip
def test_keel_yaml_errors_name_the_place_and_the_fix(
    tmp_path: Path, features: str, words: str
) -> None:
    message = config_error(tmp_path, features)
    assert "keel.yaml:" in message
    assert words in message


def test_declared_chains_load(tmp_path: Path) -> None:
    (tmp_path / "keel.yaml").write_text(
        BASE + "  transforms:\n    - column: a\n      steps:\n"
        "        - {kind: impute, strategy: median, indicator: true}\n"
        "        - {kind: standardize}\n"
        "  custom:\n    - {function: 'pkg.mod:fn', inputs: [a], output: o}\n"
    )
    features = load_config(tmp_path, env="").features
    (chain,) = features.transforms
    assert chain.columns == ["a"]
    assert chain.steps[0].kind == "impute"
    assert chain.steps[0].params == {"strategy": "median", "fill_value": None, "indicator": True}
    assert features.custom[0].type == "float"
    # a dumped config validates again unchanged (the runner hashes dumped sections)
    dumped = features.model_dump()
    assert FeaturesConfig.model_validate(dumped) == features


TABLE = pa.table({"a": [1.0, 2.0, None], "s": ["x", "y", None], "t": ["u", "v", "u"]})
INPUTS = {"a": "float", "s": "string", "t": "string"}


@pytest.mark.parametrize(
    ("transforms", "words"),
    [
        ([{"column": "aa", "steps": [{"kind": "log1p"}]}],
         "features.transforms[0]: column 'aa' is not a feature input or custom output. "
         "Did you mean 'a'?"),
        ([{"column": "s", "steps": [{"kind": "standardize"}]}],
         "features.transforms[0].steps[0]: 'standardize' takes number values but gets category"),
        ([{"column": "a", "steps": [{"kind": "bucketize", "encode": "onehot"},
                                    {"kind": "standardize"}]}],
         "'standardize' comes after 'bucketize', which already wrote the final columns"),
        ([{"columns": ["a", "s"], "steps": [{"kind": "cross"}]}],
         "cross takes two or more string/bool columns"),
        ([{"column": "a", "steps": [{"kind": "log1p", "base": 10}]}],
         "unknown parameter 'base' for log1p. Parameters: none"),
        ([{"column": "s", "steps": [{"kind": "target_encode"}]}],
         "target_encode needs the target"),
    ],
)  # fmt: skip
def test_pipeline_checks_declared_chains(transforms: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        FeaturePipeline(inputs=INPUTS, transforms=transforms).fit(TABLE)
    assert words in info.value.message


def test_string_chain_without_encoder_gets_the_default_one_hot() -> None:
    pipe = FeaturePipeline(
        inputs=INPUTS,
        transforms=[{"column": "s", "steps": [{"kind": "impute", "strategy": "constant"}]}],
    ).fit(TABLE)
    assert [s.kind for s in pipe.chains_[1].steps] == ["impute", "one_hot"]
    assert "s=__missing__" in pipe.feature_names_


def test_declared_chain_replaces_the_default_and_cross_keeps_the_columns() -> None:
    transforms = [
        {"column": "a", "steps": [{"kind": "impute", "strategy": "constant", "fill_value": 9}]},
        {"column": "a", "steps": [{"kind": "log1p"}]},
        {"columns": ["s", "t"], "steps": [{"kind": "cross"}, {"kind": "one_hot"}]},
    ]
    pipe = FeaturePipeline(inputs=INPUTS, transforms=transforms).fit(TABLE)
    assert pipe.feature_names_[:2] == ["a", "a#2"]
    assert "s=x" in pipe.feature_names_ and "t=u" in pipe.feature_names_
    assert "s*t=x|u" in pipe.feature_names_
    x = pipe.transform(TABLE)
    assert x[:, 0].tolist() == [1.0, 2.0, 9.0]
    assert np.isnan(x[2, 1])  # log1p alone leaves a missing value missing


def test_transform_training_uses_out_of_fold_target_encodings() -> None:
    rng = np.random.default_rng(0)
    table = pa.table({"s": rng.choice(["a", "b", "c"], 300), "a": rng.normal(size=300)})
    y = rng.integers(0, 2, 300)
    transforms = [{"column": "s", "steps": [{"kind": "target_encode"}, {"kind": "standardize"}]}]
    pipe = FeaturePipeline(inputs={"s": "string", "a": "float"}, transforms=transforms)
    pipe.fit(table, y)
    served, training = pipe.transform(table), pipe.transform_training(table, y)
    assert not np.array_equal(served[:, 0], training[:, 0])  # out-of-fold differs from full
    assert np.array_equal(served[:, 1], training[:, 1])  # other columns are the same
    # the standardizer after the encoder was fitted on the out-of-fold values it sees in training
    assert training[:, 0].mean() == pytest.approx(0.0, abs=1e-9)
    plain = FeaturePipeline(inputs={"a": "float"}).fit(table)
    assert np.array_equal(plain.transform(table), plain.transform_training(table, y))
