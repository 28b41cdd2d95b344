"""The floor for `keel run`: the same work as a hand-written script (what a user would write).

Reads adult.data/adult.test with pandas, imputes + standardizes + one-hot encodes with
scikit-learn, trains LightGBM with Keel's example parameters and early stopping on a 10%
validation split, and prints the test ROC AUC as JSON. No tracking, no caching, no registry.
usage: python floor_script.py DATA_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country", "income",
]  # fmt: skip


def read(path: Path, skip: int) -> pd.DataFrame:
    frame = pd.read_csv(path, header=None, names=COLUMNS, skiprows=skip, skipinitialspace=True,
                        na_values="?")  # fmt: skip
    frame["income"] = frame["income"].str.rstrip(".")
    return frame


def main() -> None:
    data = Path(sys.argv[1])
    train, test = read(data / "adult.data", 0), read(data / "adult.test", 1)
    features = COLUMNS[:-1]
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(train[c])]
    categorical = [c for c in features if c not in numeric]
    encode = OneHotEncoder(handle_unknown="ignore", max_categories=50)
    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), encode), categorical),
    ], sparse_threshold=0)  # fmt: skip
    x = prep.fit_transform(train[features])
    y = (train["income"] == ">50K").to_numpy(np.int64)
    x_fit, x_val, y_fit, y_val = train_test_split(x, y, test_size=0.1, random_state=0, stratify=y)
    params = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31, "seed": 0,
              "min_data_in_leaf": 20, "feature_fraction": 0.8, "verbosity": -1}  # fmt: skip
    booster = lgb.train(params, lgb.Dataset(x_fit, y_fit), num_boost_round=600,
                        valid_sets=[lgb.Dataset(x_val, y_val)],
                        callbacks=[lgb.early_stopping(50, verbose=False)])  # fmt: skip
    proba = booster.predict(prep.transform(test[features]), num_iteration=booster.best_iteration)
    auc = roc_auc_score((test["income"] == ">50K").to_numpy(np.int64), proba)
    print(json.dumps({"roc_auc": auc, "best_iteration": booster.best_iteration}))


if __name__ == "__main__":
    main()
