"""`keel monitor`'s reads of a SQLite metadata database through sqlite3 (keel.monitor.quickdb):
the same version resolved, the same label count and traffic rows as the SQLAlchemy store, the
normal path for anything it does not answer (its error messages included), and a whole
`keel monitor` in a fresh process that never loads SQLAlchemy yet reports what the store's path
reports."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import sqlalchemy as sa
import yaml

import keel
from keel.errors import NotFoundError
from keel.monitor import quickdb
from keel.monitor.check import check_model
from keel.monitor.operations import read_traffic
from keel.project import Project
from keel.registry.deployments import LATENCY_EDGES_MS
from keel.registry.registry import Registry
from keel.registry.rollout import Rollouts
from keel.store import database as store_database
from keel.store import deployment_store as ds
from keel.store.tables import feedback, pipeline_runs, utc_now

from .conftest import DAY, T0


@pytest.fixture
def registered(tmp_path: Path) -> Project:
    """A project whose registry holds churn 1..4 (production -> 2, staging -> 3, 4 archived)
    and traffic rows under the model and under a canary."""
    root = tmp_path / "proj"
    keel.init(root, example="adult")
    project = Project(root)
    reg = Registry(project.metadata.database, actor="alice")
    for i in range(4):
        reg.register("churn", package_sha256=f"{i + 1:x}" * 64, run_id=None, metrics={})
    reg.promote("churn", 2, alias="production")
    reg.promote("churn", 3, alias="staging")
    reg.archive("churn", 4)
    canary = Rollouts(project.metadata.database, actor="bob").canary("churn", 3, interval_s=60.0)
    rng = random.Random(3)
    start = datetime(2024, 5, 1, 12, tzinfo=UTC)
    rows = [_stat(ds.model_stats_key("churn"), start + timedelta(seconds=7 * s), rng)
            for s in range(40)]  # fmt: skip
    rows += [_stat(canary.id, start + timedelta(seconds=5 * s, microseconds=s), rng)
             for s in range(40)]  # fmt: skip
    rows += [_stat(ds.model_stats_key("other"), start, rng)]
    with project.metadata.database.write() as conn:
        ds.add_stats(conn, rows)
        conn.execute(
            sa.insert(feedback),
            [{"model_name": "churn", "request_id": f"r{i}", "instance": 0, "label": 1,
              "received_at": utc_now(), "source": "api", "status": status,
              "live_request": f"r{i}" if status == "accepted" else None}
             for i, status in enumerate(["accepted"] * 3 + ["replaced"])],
        )  # fmt: skip
    return project


def _stat(key: str, at: datetime, rng: random.Random) -> dict[str, Any]:
    requests = rng.randint(1, 50)
    bucket = str(rng.randrange(len(LATENCY_EDGES_MS) + 1))
    return {"server": "host:1", "deployment_id": key, "version": rng.choice(["2", "3"]),
            "role": rng.choice(["primary", "canary", "drop:primary"]), "bucket": at,
            "requests": requests, "errors": rng.randint(0, 2), "latency": {bucket: requests},
            "compared": 0, "disagreed": 0}  # fmt: skip


def test_constants_match_the_store() -> None:
    # a new migration: check the queries against it, then add it to KNOWN_REVISIONS
    assert quickdb.head_revision() == store_database.HEAD_REVISION
    assert store_database.HEAD_REVISION in quickdb.KNOWN_REVISIONS
    for name in ("adult", "churn", "a.b-c_d"):
        assert quickdb._model_stats_key(name) == ds.model_stats_key(name)


def test_resolves_as_the_registry(registered: Project) -> None:
    quick = quickdb.open_quick(registered)
    assert quick is not None
    try:
        for ref in ("churn", "churn@1", "churn@02", "churn@latest", "churn@staging",
                    "churn@production"):  # fmt: skip
            found = quick.resolve(ref)
            expected = registered.metadata.resolve(ref)
            assert found is not None, ref
            assert (found.version, found.package_sha256) == (
                expected.version, expected.package_sha256)  # fmt: skip
        # what the registry refuses is left to it (for its message): None here
        for ref in ("churn@4", "churn@9", "churn@nope", "nobody", "churn@", "@1", "churn@²"):
            assert quick.resolve(ref) is None, ref
        with pytest.raises(NotFoundError, match="archived"):
            registered.metadata.resolve("churn@4")
        assert quick.count_live("churn") == 3 and quick.count_live("other") == 0
        # a bare name follows the project's registry.alias, as the store resolves it
        staging = quickdb.QuickReads(quick._conn, quick._path, "staging").resolve("churn")
        expected = registered.metadata.resolve("churn@staging")
        assert staging is not None and staging.version == expected.version
    finally:
        quick.close()


def test_traffic_rows_are_the_stores(registered: Project) -> None:
    quick = quickdb.open_quick(registered)
    assert quick is not None
    start = datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    try:
        for since, until in ((None, None), (start + 30, None), (None, start + 100),
                             (start + 20.5, start + 150.000004)):  # fmt: skip
            fast = read_traffic(quick.traffic_rows, "churn", since=since, until=until)
            slow = read_traffic(registered.metadata.database, "churn", since=since, until=until)
            assert fast.rows == slow.rows > 0
            order = np.lexsort((slow.requests, slow.at))  # ties in time: either order
            again = np.lexsort((fast.requests, fast.at))
            for field in ("at", "version", "role", "requests", "errors", "latency"):
                assert np.array_equal(getattr(fast, field)[again], getattr(slow, field)[order])
        rows = quick.traffic_rows("churn", None, None)
        assert rows[0]["bucket"].tzinfo is not None and isinstance(rows[0]["latency"], dict)
    finally:
        quick.close()


def test_the_normal_path_when_uncertain(
    registered: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    with registered.metadata.database.write() as conn:  # a pipeline run in progress
        conn.execute(
            sa.insert(pipeline_runs).values(
                id="p" * 32, config_hash="x", trigger="manual", status="running",
                started_at=utc_now(), steps=[], owner_host="elsewhere", owner_pid=1)
        )  # fmt: skip
    assert quickdb.open_quick(registered) is None
    with registered.metadata.database.write() as conn:
        conn.execute(sa.update(pipeline_runs).values(status="succeeded"))
    assert quickdb.open_quick(registered) is not None
    monkeypatch.setenv("KEEL_DB_URL", f"sqlite:///{registered.root}/.keel/keel.db")
    assert quickdb.open_quick(registered) is None  # a URL: the store's own parsing
    monkeypatch.delenv("KEEL_DB_URL")
    with registered.metadata.database.write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0009'"))
    assert quickdb.head_revision() != "0009"
    assert quickdb.open_quick(registered) is None  # the normal path migrates it
    (registered.root / ".keel" / "keel.db").unlink()
    assert quickdb.open_quick(registered) is None  # no database yet: the store creates it


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory, adult_test_table: Any) -> Path:
    """A trained project with two days of logged predictions and traffic rows."""
    root = tmp_path_factory.mktemp("quick") / "adult"
    keel.init(root, example="adult")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"]["n_estimators"] = 30  # fast; the model's quality is not tested
    config["evaluate"]["gates"] = []
    config["monitor"]["slo"] = {"p99_ms": 50}
    (root / "keel.yaml").write_text(yaml.safe_dump(config))
    keel.run(root)
    rows = adult_test_table.drop_columns(["income"]).slice(0, 1200).to_pylist()
    scores = np.random.default_rng(0).random(len(rows))
    for day in range(2):
        folder = root / ".keel" / "predictions" / "adult" / f"2023-11-1{5 + day}"
        folder.mkdir(parents=True)
        with (folder / "1-test.jsonl").open("wb") as handle:
            for i in range(day * 600, day * 600 + 600, 10):
                handle.write(orjson.dumps({
                    "request_id": f"r{i}", "time": T0 + day * DAY + i, "model": "adult",
                    "model_version": "1", "inputs": rows[i : i + 10],
                    "predictions": [">50K" if s >= 0.5 else "<=50K" for s in scores[i : i + 10]],
                    "probabilities": scores[i : i + 10].tolist()}) + b"\n")  # fmt: skip
    with Project(root) as project, project.metadata.database.write() as conn:
        rng = random.Random(5)
        ds.add_stats(conn, [_stat(ds.model_stats_key("adult"), datetime.fromtimestamp(
            T0 + 600 * s, UTC), rng) | {"version": "1"} for s in range(200)])  # fmt: skip
    return root


def test_monitor_reports_as_the_store_path_without_sqlalchemy(
    monitored: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Project(monitored) as project:
        through_sqlite = check_model(project, "adult", window="1d")
    monkeypatch.setattr(quickdb, "open_quick", lambda project: None)
    with Project(monitored) as project:
        through_store = check_model(project, "adult", window="1d")
    assert through_sqlite == through_store
    assert through_sqlite["latency"]["requests"] > 0 and len(through_sqlite["windows"]) == 2
    code = (
        "import sys\n"
        "from keel.cli import main\n"
        "sys.argv = ['keel', 'monitor', 'adult', '-w', '1d', '-f', 'json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('SQLALCHEMY', 'sqlalchemy' in sys.modules, file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KEEL_DB_URL"}
    result = subprocess.run([sys.executable, "-c", code], cwd=monitored, capture_output=True,
                            text=True, timeout=120, env=env)  # fmt: skip
    assert "SQLALCHEMY False" in result.stderr, result.stderr[-2000:]
    printed = json.loads(result.stdout)
    assert printed["rows"] == through_store["rows"] == 1200
    assert printed["latency"] == json.loads(json.dumps(through_store["latency"]))
    unknown = subprocess.run([sys.executable, "-m", "keel.cli", "monitor", "adult@7"],
                             cwd=monitored, capture_output=True, text=True, timeout=120,
                             env=env)  # fmt: skip
    assert unknown.returncode != 0 and "no version 7" in unknown.stderr, unknown.stderr
    assert "Traceback" not in unknown.stderr
