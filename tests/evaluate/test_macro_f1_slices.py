"""Macro F1 of a slice averages the classes the slice holds or is predicted, not every class.

On the Palmer penguins, the island Torgersen has only Adelie penguins: a model right on every
one of them used to score macro F1 1/3 there (Biscoe, two species, 2/3), because the classes
absent from the slice counted as F1 0. That made a flawless slice look like the worst one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.csv as pv
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from keel.evaluate.bootstrap import BootstrapSettings, metric_draws
from keel.evaluate.metrics import multiclass_metrics, slice_metrics

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PENGUINS = SHARED / "palmer-penguins" / "penguins.csv"
pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="the shared datasets are not here")
NUMBERS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


@pytest.fixture(scope="module")
def penguins() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Class codes, the probabilities of a model right on every bird and of one that is not
    (less flexible), and the island of each measured bird."""
    table = pv.read_csv(PENGUINS, convert_options=pv.ConvertOptions(null_values=["NA"]))
    frame = table.to_pandas().dropna(subset=NUMBERS)
    classes = sorted(frame["species"].unique())
    codes = frame["species"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    x = frame[NUMBERS].to_numpy()
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    right, rough = (
        LogisticRegression(C=c, max_iter=2000).fit(x, codes).predict_proba(x) for c in (100, 1)
    )
    return codes, right, rough, frame["island"].to_numpy(dtype=object)


def test_a_slice_predicted_right_scores_one(
    penguins: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    codes, right, rough, island = penguins
    assert (right.argmax(axis=1) == codes).all()
    assert set(codes[island == "Torgersen"]) == {0}  # Adelie only
    assert set(codes[island == "Biscoe"]) == {0, 2}  # Adelie and Gentoo
    per = slice_metrics(codes, right, {"island": island}, task="multiclass")["island"]
    for name in ("Biscoe", "Dream", "Torgersen"):
        assert per[name]["accuracy"] == 1.0
        assert per[name]["macro_f1"] == pytest.approx(1.0)  # was 2/3, 2/3 and 1/3
    per = slice_metrics(codes, rough, {"island": island}, task="multiclass")["island"]
    assert per["Torgersen"]["accuracy"] < 1.0  # one Adelie taken for a Chinstrap
    for name in ("Biscoe", "Dream", "Torgersen"):  # scikit-learn's own macro average
        rows = island == name
        expected = f1_score(codes[rows], rough[rows].argmax(axis=1), average="macro")
        assert per[name]["macro_f1"] == pytest.approx(expected)
    # over every bird, all three species occur: the average is over the three, as before
    whole = multiclass_metrics(codes, rough)
    assert whole["macro_f1"] == pytest.approx(
        f1_score(codes, rough.argmax(axis=1), labels=[0, 1, 2], average="macro")
    )


def test_bootstrap_draws_average_the_same_classes(
    penguins: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    codes, right, rough, island = penguins
    torgersen = np.flatnonzero(island == "Torgersen")
    biscoe = np.flatnonzero(island == "Biscoe")
    settings = BootstrapSettings(resamples=50, seed=0)
    _, on_torgersen, on_biscoe = metric_draws(
        "multiclass", codes, right, [None, torgersen, biscoe], settings
    )
    assert np.allclose(on_torgersen["macro_f1"], 1.0)
    assert np.allclose(on_biscoe["macro_f1"], 1.0)
    (_, rough_torgersen) = metric_draws("multiclass", codes, rough, [None, torgersen], settings)
    point = multiclass_metrics(codes[torgersen], rough[torgersen])["macro_f1"]
    low, high = np.percentile(rough_torgersen["macro_f1"], [2.5, 97.5])
    assert low <= point <= high <= 1.0
