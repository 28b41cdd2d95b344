"""Custom feature functions the feature tests reference by import path."""

from __future__ import annotations

import math

import numpy as np

import keel


@keel.feature
def age_decade(age: float) -> float:
    """Whole decades of age, capped at 9 (missing stays missing)."""
    if math.isnan(age):
        return math.nan
    return float(min(max(age, 0.0) // 10, 9.0))


@keel.feature
def sex_race(sex: str | None, race: str | None) -> str | None:
    """Two strings joined, or None when either is missing."""
    if sex is None or race is None:
        return None
    return f"{sex}/{race}"


@keel.feature(vectorized=True)
def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / (1 + |b|), array-aware."""
    with np.errstate(all="ignore"):
        return a / (1.0 + np.abs(b))


def undecorated(age: float) -> float:
    """Not marked as a feature: resolving it is an error."""
    return age
