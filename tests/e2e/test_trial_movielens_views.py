"""A new user's trial of the second half of the lifecycle on MovieLens 100k, built the way the
feature store section suggests: the ratings are entity rows (`user_id`, `item_id`, `rated_at`,
`liked` = rating >= 4) and the users' and movies' attributes are two feature views over the
GroupLens files, read in place by DuckDB queries, joined point in time by `keel run`.

Each test is a problem the trial hit, kept fixed: `keel build docker` baked a model trained with
feature views into an image with no feature store and said nothing (its entity-only requests
answered "missing field"); `keel predict`, `keel explain` and `keel monitor --input` of a file
of entity keys said "check the file, or how it is read: --delimiter" without a word about the
views; `keel lineage` said a test split (and the feature-view join) "appends to" the snapshot it
was cut from; a slice column's gap (`slices.occupation.accuracy_difference`, which a gate reads)
counted slices below `min_slice_size`, which never gate; a numeric sensitive column (`age`) was
audited one group per age, with a demographic parity difference of 0.56 between groups of 23-40
rows, without a warning; `keel serve` of a project whose views were never materialized started
"ready" without a word, then refused every request of entity keys; and the retraining policy
failed in `train` with "split.column 'rated_at' has missing values" (the labelled rows come from
requests, which do not carry the time split's column).

MovieLens may not be redistributed: the test reads it from ../shared/data/movielens-100k/
beside the repository and is skipped without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

import keel
from keel.errors import DataValidationError
from keel.project import Project
from tests.serve.conftest import keel_serve

MOVIELENS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "movielens-100k"
ROWS = 10000  # the first ratings in time: 46 users (27 ages) in the test split, quick
FAST = {"n_estimators": 40, "learning_rate": 0.2, "num_leaves": 8}

pytestmark = pytest.mark.skipif(
    not (MOVIELENS / "u.data").exists(), reason=f"needs MovieLens 100k in {MOVIELENS}"
)


def _config() -> dict[str, Any]:
    data = (MOVIELENS / "u.data").resolve()
    users = (MOVIELENS / "u.user").resolve()
    items = (MOVIELENS / "u.item").resolve()
    genres = ", ".join(f"'g{i}': 'INT'" for i in range(19))
    return {
        "project": "movielens",
        "data": {
            "train": {
                "format": "duckdb",
                "query": (
                    "SELECT user_id, item_id, to_timestamp(ts) AS rated_at, "
                    "CASE WHEN rating >= 4 THEN 'liked' ELSE 'not' END AS liked "
                    f"FROM read_csv('{data}', delim='\t', header=false, columns={{"
                    "'user_id': 'BIGINT', 'item_id': 'BIGINT', 'rating': 'INT', "
                    f"'ts': 'BIGINT'}}) ORDER BY ts, user_id, item_id LIMIT {ROWS}"
                ),
            },
            "target": "liked",
            "positive_label": "liked",
            "sensitive": ["gender", "age"],
        },
        "feature_views": [
            {
                "name": "users",
                "entities": ["user_id"],
                "timestamp": "known_at",
                "source": {
                    "format": "duckdb",
                    "query": (
                        "SELECT user_id, age, gender, occupation, "
                        "TIMESTAMP '1970-01-01' AS known_at "
                        f"FROM read_csv('{users}', delim='|', header=false, columns={{"
                        "'user_id': 'BIGINT', 'age': 'INT', 'gender': 'VARCHAR', "
                        "'occupation': 'VARCHAR', 'zip': 'VARCHAR'})"
                    ),
                },
                "features": ["age", "gender", "occupation"],
            },
            {
                "name": "movies",
                "entities": ["item_id"],
                "timestamp": "known_at",
                "source": {
                    "format": "duckdb",
                    "query": (
                        "SELECT item_id, g1 AS action, g5 AS comedy, g8 AS drama, "
                        "TIMESTAMP '1970-01-01' AS known_at "
                        f"FROM read_csv('{items}', delim='|', header=false, "
                        "encoding='latin-1', columns={'item_id': 'BIGINT', 'title': 'VARCHAR', "
                        "'released': 'VARCHAR', 'video': 'VARCHAR', 'url': 'VARCHAR', "
                        f"{genres}}})"
                    ),
                },
                "features": ["action", "comedy", "drama"],
            },
        ],
        "features": {"views": ["users:*", "movies:*"], "entity_timestamp": "rated_at"},
        "model": {"name": "movielens", "task": "binary", "params": FAST},
        "split": {"method": "time", "column": "rated_at"},
        "evaluate": {"slices": ["gender", "occupation"]},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The project, trained once (version 1), and its run's result."""
    root = tmp_path_factory.mktemp("movielens-views")
    (root / "keel.yaml").write_text(yaml.safe_dump(_config(), sort_keys=False))
    result = keel.run(root)
    assert result["model"]["version"] == 1
    return root, result


def _keys(root: Path) -> Path:
    path = root / "keys.csv"
    pd.DataFrame({"user_id": [196, 186], "item_id": [242, 302]}).to_csv(path, index=False)
    return path


def test_a_docker_image_of_a_view_model_says_it_has_no_feature_store(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from keel.serve.build import build_docker, build_k8s

    root, _ = trained
    with Project(root) as project:
        context = build_docker(project, "movielens@1", tmp_path / "docker")
        manifests = build_k8s(project, "movielens@1", tmp_path / "k8s")
    for warnings in (context.warnings, manifests.warnings):
        assert len(warnings) == 1
        assert "feature views (movies, users)" in warnings[0]
        assert "entity keys (item_id, user_id)" in warnings[0]
        assert "age" in warnings[0]
    assert context.to_json()["warnings"] == list(context.warnings)
    assert "no feature store" in (tmp_path / "docker" / "README.md").read_text()
    assert "no feature store" in (tmp_path / "k8s" / "README.md").read_text()


def test_scoring_a_file_of_entity_keys_names_the_views_and_the_join(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, _ = trained
    keys = _keys(tmp_path)
    with pytest.raises(DataValidationError) as caught:
        keel.predict("movielens@1", keys, tmp_path / "out.csv", project=root)
    message = caught.value.message
    assert "6 of them come from the feature views the model was trained with" in message
    assert "(movies, users)" in message
    assert 'historical(rows, features=["movies:*", "users:*"], timestamp=\'rated_at\')' in (message)
    with pytest.raises(DataValidationError, match="come from the feature views"):
        keel.monitor("movielens@1", source=keys, project=root)
    # the call it names does the join, and the joined file scores
    rows = pd.read_csv(keys).assign(rated_at=pd.Timestamp("1998-01-01"))
    store = keel.FeatureStore(root)
    joined = store.historical(rows, features=["movies:*", "users:*"], timestamp="rated_at")
    joined.to_csv(tmp_path / "joined.csv", index=False)
    done = keel.predict("movielens@1", tmp_path / "joined.csv", tmp_path / "out.csv", project=root)
    assert done["rows"] == 2
    # keel explain says the same
    explained = subprocess.run(
        [sys.executable, "-m", "keel.cli", "explain", "movielens", "--input", str(keys),
         "--project", str(root)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert explained.returncode == 1, explained.stderr
    assert "come from the feature views" in explained.stderr
    assert "Traceback" not in explained.stderr


def test_a_column_missing_for_another_reason_gets_no_views_hint(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, _ = trained
    path = tmp_path / "no-item.csv"
    row = {"user_id": 196, "age": 49, "gender": "M", "occupation": "writer", "action": 0,
           "comedy": 1, "drama": 0}  # fmt: skip
    pd.DataFrame([row]).to_csv(path, index=False)
    with pytest.raises(DataValidationError) as caught:
        keel.predict("movielens@1", path, tmp_path / "out.csv", project=root)
    assert "item_id" in caught.value.message
    assert "feature views" not in caught.value.message


def test_lineage_says_a_split_and_a_view_join_derive_from_their_parent(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    from keel.registry.lineage import render_text

    root, _ = trained
    graph = keel.lineage("movielens@1", project=root)
    relations = {edge.relation for edge in graph.edges}
    assert "derived as" in relations
    assert "appended to" not in relations
    text = render_text(graph)
    assert "derived from: snapshot" in text
    assert "appends to" not in text


def test_a_numeric_sensitive_column_with_many_values_is_warned_about(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    _, result = trained
    (evaluate,) = [s for s in result["steps"] if s["step"] == "evaluate"]
    ages = [w for w in evaluate["warnings"] if "'age' is a number" in w]
    assert len(ages) == 1, evaluate["warnings"]
    assert ages[0].startswith("data.sensitive: ")  # not in evaluate.slices
    assert "distinct values" in ages[0]
    assert not [w for w in evaluate["warnings"] if "'gender'" in w]


def test_a_slice_gap_leaves_out_the_slices_too_small_to_gate(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    root, _ = trained
    (version,) = keel.show_model("movielens@1", project=root)["versions"]
    groups = version["slices"]["occupation"]
    gap = groups.pop("_gap")["accuracy_difference"]
    large = [g["accuracy"] for g in groups.values() if g["rows"] >= 30]
    small = [g["accuracy"] for g in groups.values() if g["rows"] < 30]
    assert len(large) >= 2 and small  # the test split has both
    assert gap == pytest.approx(max(large) - min(large))
    # a small slice outside the large ones' range would have widened it
    assert min(small) < min(large) or max(small) > max(large)


def test_the_server_warns_when_the_online_store_lacks_the_views(
    trained: tuple[Path, dict[str, Any]],
) -> None:

    root, _ = trained
    body = {"instances": [{"user_id": 196, "item_id": 242}]}
    with keel_serve(root, "--auth", "off") as served:
        answer = httpx.post(f"{served.url}/v1/models/movielens/predict", json=body, timeout=30)
        log = served.log.read_text()
    assert answer.status_code == 404, answer.text
    assert "online store has no movies, users" in " ".join(log.split()), log
    keel.FeatureStore(root).materialize()
    with keel_serve(root, "--auth", "off") as served:
        answer = httpx.post(f"{served.url}/v1/models/movielens/predict", json=body, timeout=30)
        log = served.log.read_text()
    assert answer.status_code == 200, answer.text
    assert "online store" not in log, log


def test_a_retrain_of_a_time_split_model_dates_its_labelled_rows(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The split column (`rated_at`) is no model input, so requests do not carry it: the labelled
    rows take the time they were served, and the retrained model's time splits work."""
    root = tmp_path / "project"
    shutil.copytree(trained[0], root)
    keel.FeatureStore(root).materialize()
    pairs = pd.read_csv(MOVIELENS / "u.data", sep="\t", names=["u", "i", "r", "t"]).tail(120)
    instances = [
        {"user_id": u, "item_id": i}
        for u, i in zip(pairs.u.tolist(), pairs.i.tolist(), strict=True)
    ]
    liked = ["liked" if r >= 4 else "not" for r in pairs.r]
    labels = []
    with keel_serve(root, "--auth", "off") as served:
        for start in range(0, len(instances), 10):
            body = {"instances": instances[start : start + 10]}
            answer = httpx.post(f"{served.url}/v1/models/movielens/predict", json=body, timeout=30)
            assert answer.status_code == 200, answer.text
            labels += [{"request_id": answer.json()["request_id"], "instance": n,
                        "label": liked[start + n]} for n in range(10)]  # fmt: skip
        answer = httpx.post(
            f"{served.url}/v1/models/movielens/feedback", json={"labels": labels}, timeout=30
        )
        assert answer.json()["counts"]["accepted"] == 120, answer.text
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["monitor"] = {"alerts": [{"name": "traffic", "when": "rows > 50"}]}
    config["retrain"] = {"on": "traffic", "data": {"labelled_since": "1d", "min_rows": 50}}
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with Project(root) as project:
        from keel.pipeline.labelled_rows import labelled_window

        window = labelled_window(project, "movielens", since=0.0)
    assert window.num_rows == 120
    assert window.column("rated_at").null_count == 0
    checked = subprocess.run(
        [sys.executable, "-m", "keel.cli", "monitor", "run", "movielens", "--retrain",
         "--format", "json", "--project", str(root)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    (result,) = json.loads(checked.stdout)["retrain"]
    assert result["status"] == "canary", result
    assert result["rows_added"] + result.get("rows_to_test", 0) >= 100, result
