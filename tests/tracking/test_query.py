"""find_runs, show_run and compare_runs over a real SQLite store with runs carrying facts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from keel.errors import ConfigError, NotFoundError
from keel.store import MetadataStore, tracking_tables
from keel.tracking import compare_runs, find_runs, show_run
from keel.types import Artifact


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetadataStore]:
    """30 train runs (num_leaves 8..240, roc_auc rising with it), teams a/b, then 1 failure."""
    path = tmp_path_factory.mktemp("tracking") / "keel.db"
    with MetadataStore(f"sqlite:///{path}") as store:
        snapshot = _artifact("snapshot", b"rows")
        store.record_artifact(snapshot)
        for i in range(30):
            run = store.start_run("train", cache_key=f"k{i}", config_hash="c", code_version="v")
            model = _artifact("model-file", f"model {i}".encode())
            store.record_artifact(model)
            store.finish_run(
                run.id,
                status="succeeded",
                inputs={"train_snapshot": snapshot.sha256},
                outputs={"model": model.sha256},
                facts={
                    "params": {"num_leaves": 8 * (i + 1), "objective": "binary"},
                    "metrics": {"roc_auc": 0.80 + i * 0.005, "log_loss": 0.5 - i * 0.01},
                    "history": {"auc": [0.5 + j * 0.01 for j in range(i + 1)]},
                    "tags": {"team": "a" if i % 3 else "b"},
                },
            )
        failed = store.start_run("train", cache_key="bad", config_hash="c", code_version="v")
        store.finish_run(failed.id, status="failed", error="boom")
        yield store


@pytest.fixture(autouse=True, params=["index", "scan"])
def plan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every query twice: driven by a selective condition's index, and by an ordered walk."""
    if request.param == "scan":
        monkeypatch.setattr(tracking_tables, "SELECTIVE", 1)
    return str(request.param)


def _artifact(kind: str, data: bytes) -> Artifact:
    sha = hashlib.sha256(data).hexdigest()
    return Artifact(kind, f"memory://t/{sha}", sha, len(data))


def test_filter_sort_and_limit(store: MetadataStore) -> None:
    found = find_runs(store, "metrics.roc_auc > 0.9", sort="metrics.roc_auc desc", limit=5)
    aucs = [r["metrics"]["roc_auc"] for r in found]
    assert (
        len(found) == 5 and aucs == sorted(aucs, reverse=True) and aucs[0] == pytest.approx(0.945)
    )
    everything = find_runs(store, "metrics.roc_auc > 0.9", limit=100)
    assert len(everything) == 9 and all(r["metrics"]["roc_auc"] > 0.9 for r in everything)
    both = find_runs(
        store, 'metrics.roc_auc > 0.85 and params.num_leaves <= 160 and tags.team = "b"'
    )
    assert sorted(r["params"]["num_leaves"] for r in both) == [104, 128, 152]
    assert all(r["params"]["objective"] == "binary" for r in both)


def test_attribute_filters(store: MetadataStore) -> None:
    failed = find_runs(store, 'status = "failed"')
    assert [r["error"] for r in failed] == ["boom"] and failed[0]["metrics"] == {}
    assert len(find_runs(store, 'step = "train" and status != "failed"', limit=100)) == 30
    assert (
        find_runs(store, "duration >= 0", sort="duration desc", limit=100)[0]["duration_seconds"]
        >= 0
    )
    assert find_runs(store, 'started_at < "2000-01-01"') == []
    newest = find_runs(store, limit=1)[0]
    assert newest["status"] == "failed"


def test_sort_by_param_and_ascending_metric(store: MetadataStore) -> None:
    by_leaves = find_runs(store, sort="params.num_leaves desc", limit=3)
    assert [r["params"]["num_leaves"] for r in by_leaves] == [240, 232, 224]
    by_loss = find_runs(store, sort="metrics.log_loss", limit=2)
    assert [r["metrics"]["log_loss"] for r in by_loss] == pytest.approx([0.21, 0.22])


def test_show_has_history_environment_snapshots_and_lineage(store: MetadataStore) -> None:
    run = find_runs(store, "params.num_leaves = 40")[0]
    shown = show_run(store, run["id"][:8])
    assert shown["id"] == run["id"] and shown["params"]["num_leaves"] == 40
    assert shown["curves"]["auc"] == pytest.approx([0.5, 0.51, 0.52, 0.53, 0.54])
    assert shown["history"]["auc"]["iterations"] == 5
    assert shown["history"]["auc"]["max_iteration"] == 5
    env = shown["environment"]
    assert env["python"] and "sqlalchemy" in env["packages"] and env["platform"]
    assert list(shown["snapshots"]) == ["train_snapshot"]
    edge = shown["lineage"]["inputs"]["train_snapshot"]
    assert edge["from_run"] is None  # nothing recorded writing the snapshot here
    assert shown["lineage"]["outputs"]["model"]["read_by"] == []


def test_compare_marks_the_differences(store: MetadataStore) -> None:
    a, b = find_runs(store, "params.num_leaves <= 16", sort="params.num_leaves")
    result = compare_runs(store, [a["id"], b["id"][:10]])
    assert result["runs"] == [a["id"], b["id"]]
    params = {row["name"]: row for row in result["params"]}
    assert params["num_leaves"]["values"] == [8, 16] and params["num_leaves"]["differs"]
    assert params["objective"]["differs"] is False
    metrics = {row["name"]: row for row in result["metrics"]}
    assert metrics["roc_auc"]["differs"] and metrics["roc_auc"]["values"][0] == pytest.approx(0.8)
    data = {row["name"]: row for row in result["data"]}
    assert data["train_snapshot"]["differs"] is False
    env = {row["name"]: row for row in result["environment"]}
    assert env["python"]["differs"] is False


def test_errors(store: MetadataStore) -> None:
    with pytest.raises(ConfigError, match="compare needs 2"):
        compare_runs(store, [find_runs(store, limit=1)[0]["id"]])
    with pytest.raises(NotFoundError, match="no run id starts with 'ffffff0'"):
        show_run(store, "ffffff0")
    with pytest.raises(ConfigError, match="limit must be at least 1"):
        find_runs(store, limit=0)
    with pytest.raises(ConfigError, match="position"):
        find_runs(store, "metrics.roc_auc >")
