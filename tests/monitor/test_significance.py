"""The tests and the FDR control against SciPy (a test dependency only: monitoring does not
import it)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keel.monitor.significance import benjamini_hochberg, chi2_sf, contingency_test

stats = pytest.importorskip("scipy.stats")


@given(st.floats(0, 500), st.integers(1, 200))
@settings(max_examples=300)
def test_chi2_sf_matches_scipy(x: float, dof: int) -> None:
    assert chi2_sf(x, dof) == pytest.approx(float(stats.chi2.sf(x, dof)), rel=1e-9, abs=1e-300)


def test_chi2_sf_edges() -> None:
    assert chi2_sf(0.0, 3) == 1.0
    assert chi2_sf(math.inf, 3) == 0.0
    assert chi2_sf(5.0, 0) == 1.0


COUNTS = hnp.arrays(np.int64, st.integers(2, 12), elements=st.integers(0, 5000))


@given(COUNTS, st.data())
def test_tests_match_scipy_contingency(ref: np.ndarray, data: st.DataObject) -> None:
    cur = data.draw(hnp.arrays(np.int64, ref.shape, elements=st.integers(0, 5000)))
    keep = (ref + cur) > 0
    for test, lambda_ in (("chi2", None), ("g", "log-likelihood")):
        result = contingency_test(ref, cur, test)  # type: ignore[arg-type]
        if keep.sum() < 2 or ref.sum() == 0 or cur.sum() == 0:
            assert result is None
            continue
        assert result is not None
        table = np.stack([ref[keep], cur[keep]])
        expected = stats.chi2_contingency(table, correction=False, lambda_=lambda_)
        assert result.statistic == pytest.approx(expected.statistic, rel=1e-9, abs=1e-9)
        assert result.dof == expected.dof
        assert result.p_value == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-12)


@given(hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(0, 1)))
def test_bh_matches_scipy(p: np.ndarray) -> None:
    adjusted, rejected = benjamini_hochberg(p, 0.05)
    assert np.allclose(adjusted, stats.false_discovery_control(p, method="bh"))
    assert np.array_equal(rejected, adjusted <= 0.05)


def test_bh_leaves_missing_tests_out() -> None:
    adjusted, rejected = benjamini_hochberg(np.array([0.01, np.nan, 0.04]), 0.05)
    assert np.isnan(adjusted[1]) and not rejected[1]
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
