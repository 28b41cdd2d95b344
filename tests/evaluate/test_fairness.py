"""Fairness equals Fairlearn's definitions on Adult predictions, by sex and by sex x race;
small groups are listed and left out; undefined rates are None with a reason."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from keel.evaluate.fairness import DISPARITIES, audit_fairness
from tests.evaluate.conftest import AdultPredictions

fm = pytest.importorskip("fairlearn.metrics")

FAIRLEARN = {
    "demographic_parity_difference": fm.demographic_parity_difference,
    "demographic_parity_ratio": fm.demographic_parity_ratio,
    "equalized_odds_difference": fm.equalized_odds_difference,
    "equalized_odds_ratio": fm.equalized_odds_ratio,
    "equal_opportunity_difference": fm.equal_opportunity_difference,
    "equal_opportunity_ratio": fm.equal_opportunity_ratio,
}


def decisions(adult: AdultPredictions) -> np.ndarray:
    return (adult.proba >= 0.5).astype(np.int64)


def test_equals_fairlearn_by_sex_and_by_sex_and_race(adult_predictions: AdultPredictions) -> None:
    adult = adult_predictions
    y, h = adult.y, decisions(adult)
    sex, race = adult.column("sex"), adult.column("race")
    audit = audit_fairness({"sex": sex, "race": race}, y, h, min_group_size=0)
    assert set(audit) == {"sex", "race", "sex&race"}
    both = pd.DataFrame({"sex": sex, "race": race})
    for name, features in (("sex", sex), ("sex&race", both)):
        for metric, fairlearn in FAIRLEARN.items():
            ours = audit[name].disparities[metric]
            assert ours is not None
            assert abs(ours - fairlearn(y, h, sensitive_features=features)) <= 1e-12, (name, metric)
    frame = fm.MetricFrame(
        metrics={"selection_rate": fm.selection_rate, "tpr": fm.true_positive_rate,
                 "fpr": fm.false_positive_rate, "count": fm.count},
        y_true=y, y_pred=h, sensitive_features=both,
    )  # fmt: skip
    by_group = frame.by_group
    for group in audit["sex&race"].groups:
        s, r = group.group.split("&")
        row = by_group.loc[(s, r)]
        assert group.rows == row["count"]
        assert abs(group.selection_rate - row["selection_rate"]) <= 1e-12
        assert group.tpr is not None and abs(group.tpr - row["tpr"]) <= 1e-12
        assert group.fpr is not None and abs(group.fpr - row["fpr"]) <= 1e-12
    assert abs(audit["sex&race"].disparities["demographic_parity_difference"]
               - frame.difference()["selection_rate"]) <= 1e-12  # fmt: skip


def test_small_groups_are_listed_and_left_out(adult_predictions: AdultPredictions) -> None:
    adult = adult_predictions
    y, h = adult.y, decisions(adult)
    sex, race = adult.column("sex"), adult.column("race")
    audit = audit_fairness({"sex": sex, "race": race}, y, h, min_group_size=150)
    crossed = audit["sex&race"]
    small = {g.group: g.rows for g in crossed.excluded}
    assert small and all(rows < 150 for rows in small.values())
    assert all(g.excluded == f"{g.rows} rows < min_group_size 150" for g in crossed.excluded)
    assert len(crossed.groups) == len(small) + sum(g.excluded is None for g in crossed.groups)
    # the disparities are Fairlearn's on the rows of the groups that count
    labels = np.array([f"{s}&{r}" for s, r in zip(sex, race, strict=True)])
    keep = ~np.isin(labels, list(small))
    kept = pd.DataFrame({"sex": sex[keep], "race": race[keep]})
    for metric, fairlearn in FAIRLEARN.items():
        expected = fairlearn(y[keep], h[keep], sensitive_features=kept)
        assert abs((crossed.disparities[metric] or 0) - expected) <= 1e-12, metric
    stored = crossed.to_json()
    assert [e["group"] for e in stored["excluded"]] == list(small)


def test_undefined_rates_are_none_with_a_reason() -> None:
    y = np.array([0, 0, 0, 1, 1, 0])
    h = np.array([1, 0, 0, 1, 0, 1])
    group = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    audit = audit_fairness({"g": group}, y, h, min_group_size=0)["g"]
    a = next(g for g in audit.groups if g.group == "a")
    assert a.tpr is None and a.undefined == {"tpr": "no positive labels in the group"}
    # the TPR difference only has group b: 0; the ratio min/max of one group: 1
    assert audit.disparities["equal_opportunity_difference"] == 0.0
    assert audit.disparities["equal_opportunity_ratio"] == 1.0
    none = audit_fairness({"g": group}, np.zeros(6), h, min_group_size=0)["g"]
    assert none.disparities["equalized_odds_difference"] is None
    assert "tpr" in none.undefined["equalized_odds_difference"]
    assert all(v is None or np.isfinite(v) for v in none.disparities.values())


def test_nulls_are_a_group_and_multiclass_is_one_vs_rest() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    h = np.where(rng.random(300) < 0.7, y, rng.integers(0, 3, 300))
    g = rng.choice(np.array(["x", "y", None], dtype=object), 300)
    audit = audit_fairness({"g": g}, y, h, classes=["a", "b", "c"], min_group_size=0)["g"]
    assert {grp.group for grp in audit.groups} == {"x", "y", "<null>"}
    assert set(audit.per_class) == {"a", "b", "c"}
    labels = np.where(g == None, "<null>", g).astype(str)  # noqa: E711
    for code, name in enumerate("abc"):
        expected = fm.demographic_parity_difference(
            (y == code).astype(int), (h == code).astype(int), sensitive_features=labels
        )
        assert abs(audit.per_class[name].disparities["demographic_parity_difference"]
                   - expected) <= 1e-12  # fmt: skip
    worst = max(f.disparities["demographic_parity_difference"] or 0
                for f in audit.per_class.values())  # fmt: skip
    assert audit.disparities["demographic_parity_difference"] == worst
    assert set(audit.disparities) == set(DISPARITIES)


def test_faster_than_fairlearn(adult_predictions: AdultPredictions) -> None:
    adult = adult_predictions
    y, h = adult.y, decisions(adult)
    features = {"sex": adult.column("sex")}
    start = time.perf_counter()
    audit_fairness(features, y, h)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    fm.MetricFrame(metrics={"sr": fm.selection_rate, "tpr": fm.true_positive_rate,
                            "fpr": fm.false_positive_rate},
                   y_true=y, y_pred=h, sensitive_features=features["sex"]).difference()  # fmt: skip
    theirs = time.perf_counter() - start
    assert ours * 5 < theirs  # the benchmark measures the real ratio; this guards the order
