"""The data of the tracked-fit benchmark: UCI Adult (48,842 rows) encoded once, and replicated.

Writes ``x.npy``, ``y.npy``, ``x_valid.npy``, ``y_valid.npy`` (float64 / 0-1) so that Keel's
venv and MLflow's venv fit on the very same arrays. The training set is every Adult row,
repeated up to the requested count; the validation set (for the learning curves both sides
record) is a fixed random 10% of the Adult rows. This measures overhead, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ADULT = Path("/work/shared/data/adult")
COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
           "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
           "hours-per-week", "native-country", "income"]  # fmt: skip
PARAMS = {"n_estimators": 100, "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20,
          "colsample_bytree": 0.8}  # fmt: skip
SEED = 0


def adult() -> tuple[np.ndarray, np.ndarray]:
    """All 48,842 Adult rows: categoricals as integer codes, label 1 for >50K."""
    frames = [
        pd.read_csv(ADULT / "adult.data", header=None, names=COLUMNS, skipinitialspace=True,
                    na_values=["?"]),
        pd.read_csv(ADULT / "adult.test", header=None, names=COLUMNS, skipinitialspace=True,
                    na_values=["?"], skiprows=1),
    ]  # fmt: skip
    table = pd.concat(frames, ignore_index=True)
    y = table.pop("income").str.rstrip(".").eq(">50K").to_numpy(np.float64)
    for column in table.select_dtypes(exclude="number").columns:
        codes = table[column].astype("category").cat.codes.astype(np.float64)
        table[column] = codes.where(codes >= 0)
    return table.to_numpy(np.float64), y


def write(directory: Path, rows: int) -> Path:
    """The arrays for ``rows`` training rows (cached: written once per row count)."""
    if (directory / "y_valid.npy").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    x, y = adult()
    valid = np.random.default_rng(SEED).permutation(len(y))[: len(y) // 10]
    take = np.resize(np.arange(len(y)), rows)  # every Adult row, repeated up to ``rows``
    np.save(directory / "x.npy", x[take])
    np.save(directory / "y.npy", y[take])
    np.save(directory / "x_valid.npy", x[valid])
    np.save(directory / "y_valid.npy", y[valid])
    return directory


def load(directory: Path) -> dict[str, np.ndarray]:
    """The four arrays by name."""
    return {name: np.load(directory / f"{name}.npy") for name in ("x", "y", "x_valid", "y_valid")}
