"""Batch scoring, explaining and monitoring a file of entity keys for a model trained with
feature views, on MovieLens 100k (the project of `test_trial_movielens_views.py`: ratings as
entity rows, the users' and movies' attributes as two views).

A file with the training join's time column (`rated_at`) is joined point in time by the
training join itself, so its predictions are those of the file `FeatureStore.historical` makes;
a file of keys only reads the online store, so its predictions are the server's. MovieLens is
read in place from ../shared/data/movielens-100k/ and the tests are skipped without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

import keel
from keel.errors import DataValidationError, NotFoundError
from tests.e2e.test_trial_movielens_views import _config
from tests.serve.conftest import keel_serve

MOVIELENS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "movielens-100k"
SCORED = 600  # later ratings than the 10,000 trained on: users and movies of every kind
UNKNOWN_USER = 99_999  # no such user in u.user: not in the online store

pytestmark = pytest.mark.skipif(
    not (MOVIELENS / "u.data").exists(), reason=f"needs MovieLens 100k in {MOVIELENS}"
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project trained once (movielens@1), its views materialized to the online store."""
    root = tmp_path_factory.mktemp("batch-views")
    (root / "keel.yaml").write_text(yaml.safe_dump(_config(), sort_keys=False))
    assert keel.run(root)["model"]["version"] == 1
    keel.FeatureStore(root).materialize()
    return root


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    """Ratings after the trained ones: user_id, item_id and rated_at (as text, as in a CSV)."""
    data = pd.read_csv(MOVIELENS / "u.data", sep="\t", names=["user_id", "item_id", "r", "ts"])
    rows = data.sort_values(["ts", "user_id", "item_id"]).iloc[20_000 : 20_000 + SCORED]
    stamped = pd.to_datetime(rows.ts, unit="s").dt.strftime("%Y-%m-%d %H:%M:%S")
    return pd.DataFrame(
        {"user_id": rows.user_id.to_numpy(), "item_id": rows.item_id.to_numpy(),
         "rated_at": stamped.to_numpy()}
    )  # fmt: skip


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )  # fmt: skip


def _scores(path: Path) -> np.ndarray:
    return pq.read_table(path).column("probability").to_numpy()


def test_a_file_with_the_time_column_is_joined_as_of_each_row_like_training(
    project: Path, ratings: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keel.serve.batch

    monkeypatch.setattr(keel.serve.batch, "BATCH_ROWS", 128)  # several batches, joined each
    keys = tmp_path / "keys.csv"
    # a rating dated before the users and movies were known: as of then, no view values
    early = pd.DataFrame({"user_id": [196], "item_id": [242], "rated_at": ["1969-12-31 23:00:00"]})
    rows = pd.concat([ratings, early], ignore_index=True)
    rows.to_csv(keys, index=False)
    done = keel.predict("movielens", keys, tmp_path / "out.parquet", project=project)
    assert done["rows"] == SCORED + 1
    filled = done["features"]
    assert filled["filled"] == "as-of"
    assert filled["timestamp"] == "rated_at"
    assert set(filled["views"]) == {"users", "movies"}
    assert filled["described"] == "6 features of 2 views (users, movies) joined as of 'rated_at'"
    # what the views' error told users to do by hand: the same rows, bit for bit
    stamped = rows.assign(rated_at=pd.to_datetime(rows.rated_at))
    joined = keel.FeatureStore(project).historical(
        stamped, features=["users:*", "movies:*"], timestamp="rated_at"
    )
    joined.to_csv(tmp_path / "joined.csv", index=False)
    by_hand = keel.predict(
        "movielens", tmp_path / "joined.csv", tmp_path / "by-hand.parquet", project=project
    )
    assert by_hand["features"] is None  # the file carries them all: nothing is filled
    scored = _scores(tmp_path / "out.parquet")
    np.testing.assert_array_equal(scored, _scores(tmp_path / "by-hand.parquet"))
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    # the filled columns are in the output; the early rating's are missing (not the latest)
    assert out.age.iloc[:-1].tolist() == joined.age.iloc[:-1].tolist()
    assert out.occupation.tolist()[:-1] == joined.occupation.tolist()[:-1]
    assert out.age.isna().tolist() == [False] * SCORED + [True]
    online = keel.predict("movielens", keys, tmp_path / "online.parquet", project=project,
                          features="online")  # fmt: skip
    assert online["features"]["filled"] == "online"
    assert _scores(tmp_path / "online.parquet")[-1] != scored[-1]


def test_a_file_of_keys_only_gets_the_online_values_the_server_answers_with(
    project: Path, ratings: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keel.serve.batch

    # a first batch of an unknown user only: its users features have no values, no type
    monkeypatch.setattr(keel.serve.batch, "BATCH_ROWS", 1)
    unknown = pd.DataFrame({"user_id": [UNKNOWN_USER], "item_id": [1]})
    keys = pd.concat([unknown, ratings[["user_id", "item_id"]].iloc[:60]], ignore_index=True)
    keys.to_csv(tmp_path / "keys.csv", index=False)
    done = keel.predict("movielens@1", tmp_path / "keys.csv", tmp_path / "out.parquet",
                        project=project)  # fmt: skip
    filled = done["features"]
    assert filled["filled"] == "online"
    assert filled["timestamp"] is None
    assert filled["unknown_entities"] == {"users": 1}
    assert filled["described"] == "6 features of 2 views (users, movies) from the online store"
    scored = _scores(tmp_path / "out.parquet")
    instances = [{"user_id": int(u), "item_id": int(i)} for u, i in keys.to_numpy()]
    with keel_serve(project, "--auth", "off") as served:
        answer = httpx.post(f"{served.url}/v1/models/movielens/predict",
                            json={"instances": instances}, timeout=60)  # fmt: skip
    assert answer.status_code == 200, answer.text
    np.testing.assert_array_equal(scored, np.array(answer.json()["probabilities"]))
    warned = [w for w in answer.json()["warnings"] if w["kind"] == "unknown_entity"]
    assert [w["field"] for w in warned] == ["instances[0].user_id"]
    # the online store's values, fed explicitly, score the same
    values = keel.FeatureStore(project).online(instances, ["users:*", "movies:*"])
    pd.DataFrame(values).to_csv(tmp_path / "explicit.csv", index=False)
    keel.predict("movielens@1", tmp_path / "explicit.csv", tmp_path / "explicit.parquet",
                 project=project)  # fmt: skip
    np.testing.assert_array_equal(scored, _scores(tmp_path / "explicit.parquet"))
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert out.age.isna().tolist() == [True] + [False] * (len(keys) - 1)


def test_a_view_feature_column_the_file_carries_keeps_its_values(
    project: Path, ratings: pd.DataFrame, tmp_path: Path
) -> None:
    rows = ratings.iloc[:40].assign(age=13)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    done = keel.predict("movielens", tmp_path / "rows.csv", tmp_path / "out.parquet",
                        project=project)  # fmt: skip
    assert done["features"]["features"] == ["gender", "occupation", "action", "comedy", "drama"]
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert set(out.age) == {13}
    stamped = ratings.iloc[:40].assign(rated_at=pd.to_datetime(ratings.rated_at.iloc[:40]))
    joined = keel.FeatureStore(project).historical(
        stamped, features=["users:*", "movies:*"], timestamp="rated_at"
    )
    joined.assign(age=13).to_csv(tmp_path / "by-hand.csv", index=False)
    keel.predict("movielens", tmp_path / "by-hand.csv", tmp_path / "by-hand.parquet",
                 project=project)  # fmt: skip
    by_hand = _scores(tmp_path / "by-hand.parquet")
    np.testing.assert_array_equal(_scores(tmp_path / "out.parquet"), by_hand)


def test_the_cli_says_how_and_features_file_keeps_the_old_error(
    project: Path, ratings: pd.DataFrame, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.csv"
    ratings[["user_id", "item_id"]].iloc[:20].to_csv(keys, index=False)
    scored = _cli("predict", "movielens", "-i", str(keys), "-o", str(tmp_path / "o.csv"),
                  "--project", str(project))  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    assert "features: 6 features of 2 views (users, movies) from the online store" in (
        scored.stderr
    )
    as_file = _cli("predict", "movielens", "-i", str(keys), "-o", str(tmp_path / "o.csv"),
                   "--features", "file", "--project", str(project))  # fmt: skip
    assert as_file.returncode == 1
    assert "come from the feature views the model was trained with" in as_file.stderr
    assert "historical(rows" in as_file.stderr
    assert "Traceback" not in as_file.stderr


def test_as_of_without_the_time_column_is_an_error_naming_it(
    project: Path, ratings: pd.DataFrame, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.csv"
    ratings[["user_id", "item_id"]].iloc[:5].to_csv(keys, index=False)
    done = _cli("predict", "movielens", "-i", str(keys), "-o", str(tmp_path / "o.csv"),
                "--features", "as-of", "--project", str(project))  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert "column 'rated_at'" in message
    assert "the file has no such column. Add it, or pass --features online" in message
    assert not (tmp_path / "o.csv").exists()
    with pytest.raises(DataValidationError, match="'rated_at'"):
        keel.predict("movielens", keys, tmp_path / "o.csv", project=project, features="as-of")


def test_online_without_the_view_in_the_store_names_the_command(
    project: Path, ratings: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys.csv"
    ratings[["user_id", "item_id"]].iloc[:5].to_csv(keys, index=False)
    empty = {"KEEL_ONLINE_STORE": f"sqlite:///{tmp_path / 'empty.db'}"}
    done = _cli("predict", "movielens", "-i", str(keys), "-o", str(tmp_path / "o.csv"),
                "--features", "online", "--project", str(project), env=empty)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert "has no feature view users, movies" in message
    assert "keel features materialize users movies" in message
    # auto: neither fill works; the error says both ways and the join by hand
    monkeypatch.setenv("KEEL_ONLINE_STORE", empty["KEEL_ONLINE_STORE"])
    with pytest.raises(DataValidationError) as caught:
        keel.predict("movielens", keys, tmp_path / "o.csv", project=project)
    assert "no 'rated_at' column" in caught.value.message
    assert "keel features materialize" in caught.value.message
    assert "come from the feature views" in caught.value.message
    with pytest.raises(NotFoundError, match="keel features materialize"):
        keel.predict("movielens", keys, tmp_path / "o.csv", project=project, features="online")


def test_explain_and_monitor_fill_a_file_of_keys_too(
    project: Path, ratings: pd.DataFrame, tmp_path: Path
) -> None:
    import json

    keys = ratings[["user_id", "item_id"]].iloc[:30].copy()
    keys.loc[len(keys)] = [UNKNOWN_USER, 50]
    keys.to_csv(tmp_path / "keys.csv", index=False)
    done = keel.predict("movielens", tmp_path / "keys.csv", tmp_path / "out.parquet",
                        project=project)  # fmt: skip
    explained = _cli("explain", "movielens", "--input", str(tmp_path / "keys.csv"),
                     "--format", "json", "--project", str(project))  # fmt: skip
    assert explained.returncode == 0, explained.stderr
    document = json.loads(explained.stdout)
    assert document["features"]["filled"] == "online"
    assert document["features"]["unknown_entities"] == {"users": 1}
    probabilities = [row["probability"] for row in document["rows"]]
    np.testing.assert_allclose(probabilities, _scores(tmp_path / "out.parquet"), rtol=1e-12)
    assert done["rows"] == len(probabilities) == len(keys)
    text = _cli("explain", "movielens", "--input", str(tmp_path / "keys.csv"), "-n", "2",
                "--project", str(project))  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert "from the online store" in text.stderr
    report = keel.monitor("movielens", source=tmp_path / "keys.csv", project=project)
    assert report["source"] == str(tmp_path / "keys.csv")
    assert report["dialect"]["format"] == "csv"
    assert report["features"]["filled"] == "online"
    assert report["features"]["unknown_entities"] == {"users": 1}
    drift: Any = {c["column"]: c for c in report["columns"]}
    assert {"age", "occupation", "comedy"} <= set(drift)
    monitored = _cli("monitor", "movielens", "--input", str(tmp_path / "keys.csv"),
                     "--project", str(project))  # fmt: skip
    assert monitored.returncode in (0, 1), monitored.stderr  # 1: the latest window drifted
    assert "Traceback" not in monitored.stderr
    assert "features: 6 features of 2 views (users, movies) from the online store" in (
        monitored.stderr
    )
