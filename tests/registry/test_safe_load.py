"""Safe loading: a scikit-learn file constructs only allowlisted types, whatever its module.

The hole this closes: the loader trusted any type whose module started with numpy, scipy or
sklearn, so a skops file naming ``numpy.savetxt`` as a "constructor" ran it on load.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import keel
from keel.errors import IntegrityError, UnsafeModelError
from keel.train.sklearn import SklearnTrainer, loads_model, refused_types, trusted_types
from keel.train.skops_types import ALLOWED_TYPES
from tests.registry.packages import crafted_skops, repackage


def test_the_old_prefix_rule_ran_a_numpy_function_on_load(tmp_path: Path) -> None:
    """Reproduces the hole with skops alone: every type passes a module-prefix check."""
    from skops.io import get_untrusted_types, loads

    target = tmp_path / "pwned.txt"
    data = crafted_skops(target)
    found = get_untrusted_types(data=data)
    assert found == ["numpy.savetxt"]
    assert all(t.split(".", 1)[0] in ("numpy", "scipy", "sklearn") for t in found)
    loads(data, trusted=found)  # what Keel used to do
    assert target.exists(), "the crafted file ran numpy.savetxt while loading"


def test_a_crafted_callable_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    with pytest.raises(UnsafeModelError, match=r"numpy\.savetxt") as caught:
        loads_model(crafted_skops(target))
    assert "ConstructorFromReduceNode" in caught.value.message
    assert not target.exists()
    # the same callable behind an allowed node kind is refused by name
    data = crafted_skops(target, loader="ObjectNode")
    assert refused_types(data) == ["numpy.savetxt"]
    with pytest.raises(UnsafeModelError, match=r"numpy\.savetxt"):
        loads_model(data)
    # a class from scikit-learn's own modules that Keel's flavors never save
    data = crafted_skops(target, loader="ObjectNode", module="sklearn.utils", name="Bunch")
    with pytest.raises(UnsafeModelError, match=r"sklearn\.utils\.Bunch"):
        loads_model(data)
    assert not target.exists()
    assert isinstance(UnsafeModelError("x"), IntegrityError)  # callers catching it still do


@pytest.mark.parametrize(
    ("params", "task"),
    [
        ({"estimator": "sklearn.linear_model.LogisticRegression"}, "binary"),
        ({"estimator": "sklearn.ensemble.RandomForestClassifier", "n_estimators": 5}, "multiclass"),
        ({"estimator": "sklearn.ensemble.HistGradientBoostingClassifier", "max_iter": 5}, "binary"),
        ({"estimator": "sklearn.neighbors.KNeighborsClassifier"}, "binary"),
        ({"estimator": "sklearn.linear_model.Ridge"}, "regression"),
        ({"estimator": "sklearn.naive_bayes.MultinomialNB"}, "binary"),
        (
            {
                "estimator": "sklearn.ensemble.VotingClassifier",
                "voting": "soft",
                "estimators": [
                    ["lr", {"estimator": "sklearn.linear_model.LogisticRegression"}],
                    ["nb", {"estimator": "sklearn.naive_bayes.GaussianNB"}],
                ],
            },
            "binary",
        ),
        (
            {
                "estimator": "sklearn.pipeline.Pipeline",
                "steps": [
                    ["scale", {"estimator": "sklearn.preprocessing.StandardScaler"}],
                    ["clf", {"estimator": "sklearn.linear_model.LogisticRegression"}],
                ],
            },
            "binary",
        ),
    ],
)
def test_what_the_sklearn_flavor_saves_loads(params: dict[str, object], task: str) -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(120, 4)))  # MultinomialNB takes counts
    y = (x[:, 0] > 0.7).astype(int) + (task == "multiclass") * (x[:, 1] > 1.0)
    if task == "regression":
        y = x[:, 0] * 2.0
    trainer = SklearnTrainer(task=task, params=params, seed=0).fit(x, y)
    files = trainer.save()
    assert set(trusted_types(files["model.skops"])) <= ALLOWED_TYPES | {"numpy.mean"}
    loaded = SklearnTrainer.load(files)
    assert np.allclose(loaded.predict(x), trainer.predict(x))


def test_load_verify_and_import_refuse_a_crafted_package(
    signed_project: Path, tmp_path: Path
) -> None:
    root = Path(shutil.copytree(signed_project, tmp_path / "adult"))
    target = tmp_path / "pwned.txt"
    repackage(root, "adult@1", model=crafted_skops(target), tag="crafted")  # adult@2, unsigned

    with pytest.raises(UnsafeModelError, match=r"numpy\.savetxt"):
        keel.load_model("adult@2", project=root)
    report = keel.verify_package("adult@2", project=root)
    assert not report.ok
    assert report.types is not None and report.types.refused
    assert any("numpy.savetxt" in f for f in report.failures)

    from keel.cli import app

    result = CliRunner().invoke(app, ["models", "verify", "adult@2", "-p", str(root)])
    assert result.exit_code == 1, result.output
    assert "numpy.savetxt" in result.output

    archive = keel.export_package("adult@2", tmp_path / "crafted.tar", project=root)
    other = Path(shutil.copytree(signed_project, tmp_path / "other"))
    with pytest.raises(UnsafeModelError, match=r"numpy\.savetxt"):
        keel.import_package(archive, project=other)
    assert not target.exists(), "the crafted callable never ran"


def test_a_manifest_cannot_choose_a_module_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Custom features name ``module:function``; importing runs the module, so a module that
    is not Keel feature code is refused before it is imported."""
    from keel.registry.package import check_custom_features

    assert "this" not in sys.modules  # importing `this` prints the Zen of Python
    with pytest.raises(UnsafeModelError, match="'this:s'"):
        check_custom_features({"custom": [{"function": "this:s", "output": "zen"}]})
    assert "this" not in sys.modules
    with pytest.raises(UnsafeModelError, match="nowhere_to_be_found"):
        check_custom_features({"custom": [{"function": "nowhere_to_be_found:f", "output": "x"}]})

    (tmp_path / "my_feats.py").write_text(
        "import keel\n\n\n@keel.feature\ndef band(age: float) -> float:\n    return age // 10\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    check_custom_features({"custom": [{"function": "my_feats:band", "output": "band"}]})
    assert "my_feats" not in sys.modules, "checked without importing it"
