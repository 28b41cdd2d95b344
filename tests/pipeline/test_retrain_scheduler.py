"""``keel scheduler``'s ``on: alert`` schedules and the ``retrain:`` policy: an alert of the
policy's rule runs the policy (labelled rows, gates, canary), any other alert the plain
pipeline. The scheduler runs in-process with ``keel scheduler``'s own action, for a bounded
time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import yaml

import keel
from keel.commands.schedule import pipeline_action
from keel.pipeline.scheduler import Scheduler, SchedulerOptions
from keel.pipeline.schedules import add_schedule
from keel.project import Project
from keel.store.alert_store import AlertStore, NewAlert
from keel.store.schedules import ScheduleStore
from tests.pipeline.test_scheduler import make_tiny_project, wait_for


def _alert(store: AlertStore, rule: str, key: str) -> int:
    found = store.record(
        NewAlert(dedup_key=key, rule=rule, model="penguins", version="1", role=None,
                 severity="warning", condition="rows < 1000", window_start="0",
                 window_end="100", observed_at=datetime.now(UTC), value=100.0,
                 threshold=1000.0, message=f"{rule}: rows = 100 < 1000", evidence={})
    )  # fmt: skip
    assert found is not None
    return found.id


def test_an_alert_of_the_policy_rule_runs_the_policy(tmp_path: Path) -> None:
    root = make_tiny_project(tmp_path / "penguins")
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["monitor"] = {"alerts": [{"name": "quiet", "when": "rows < 1000"},
                                    {"name": "other", "when": "rows < 10"}]}  # fmt: skip
    config["retrain"] = {"on": "quiet", "data": {"labelled_since": "1d", "min_rows": 5}}
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert keel.run(root)["model"]["version"] == 1
    with Project(root) as project:
        url = project.db_url
        alerts = AlertStore(project.metadata.database)
    with ScheduleStore(url) as store:
        add_schedule(store, root, "on-alert", on="alert")
        options = SchedulerOptions(lease_seconds=15, poll_seconds=0.05, owner="test")
        scheduler = Scheduler(store, pipeline_action(root), root=root, options=options)
        thread = threading.Thread(target=scheduler.serve, kwargs={"max_seconds": 90}, daemon=True)
        thread.start()
        try:
            wait_for(lambda: scheduler.keeper.generation(), timeout=10, what="leadership")
            policy_alert = _alert(alerts, "quiet", "a")
            ticks = wait_for(lambda: [t for t in store.list_ticks("on-alert") if t.ended_at],
                             timeout=60, what="the policy tick")  # fmt: skip
            other_alert = _alert(alerts, "other", "b")
            wait_for(lambda: len([t for t in store.list_ticks("on-alert") if t.ended_at]) >= 2,
                     timeout=60, what="the plain pipeline tick")  # fmt: skip
        finally:
            scheduler.request_stop()
            thread.join(timeout=30)
        assert not thread.is_alive()
        first, second = sorted(
            (t for t in store.list_ticks("on-alert") if t.ended_at), key=lambda t: t.id
        )
    assert ticks
    # the policy ran (no labelled rows were fed back: it says so, and no pipeline ran)
    assert first.status == "succeeded", first.error
    assert first.summary is not None
    [ran] = first.summary["retrain"]
    assert ran["alert_id"] == policy_alert and ran["rule"] == "quiet"
    assert ran["status"] == "no_data" and ran["pipeline_run"] is None
    assert "retrain.data.min_rows is 5" in ran["message"]
    assert first.pipeline_run_id is None
    # an alert of another rule: the plain pipeline, as before
    assert second.status == "succeeded", second.error
    assert second.summary is not None and "retrain" not in second.summary
    assert second.pipeline_run_id and second.summary["model"]["name"] == "penguins"
    assert other_alert > policy_alert


def test_a_time_column_the_server_does_not_log_is_a_clear_error(tmp_path: Path) -> None:
    import pytest

    from keel.errors import ConfigError
    from keel.monitor.check import check_model

    root = make_tiny_project(tmp_path / "penguins")
    keel.run(root)
    config = yaml.safe_load((root / "keel.yaml").read_text())
    for column in ("nope", "species"):  # not a training column; the target
        config["monitor"] = {"window": "1mo", "time_column": column}
        (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        with Project(root) as project, pytest.raises(ConfigError) as err:
            check_model(project, "penguins")
        assert err.value.field == "monitor.time_column"
        assert f"{column!r} is not a column the server logs" in err.value.message
        assert "island" in err.value.message  # the columns it could name
    config["monitor"] = {"window": "1month", "time_column": ""}
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ConfigError, match="time_column"):
        Project(root)
