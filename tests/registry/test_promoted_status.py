"""An ended deployment shows its outcome, not the step it ended at: a canary of steps 50,100
promoted past its last step reads ``step 2/2`` and ``v2 takes 100% of the traffic`` (it read
``step 1/2`` and ``v2 canary 50%``); a rolled-back one gives the traffic back to the primary; an
A/B test's winner takes 100 %; a promotion awaiting approval says so. In ``keel deployments
status`` (and ``promote``/``abort``), its JSON and ``Rollouts.status``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import keel
from keel.cli import app
from keel.commands.deploy import _print_deployment
from keel.commands.output import out
from keel.config.registry import RegistryConfig
from keel.project import Project
from keel.registry.deployments import bucket_of
from keel.registry.registry import Registry
from keel.registry.rollout import Rollouts
from keel.store import MetadataStore
from keel.store import deployment_store as ds


def _traffic(store: MetadataStore, ident: str, at: Any, *, errors: int = 0) -> None:
    row = {
        "server": "s1", "deployment_id": ident, "version": "2", "role": "canary", "bucket": at,
        "requests": 50, "errors": errors, "latency": {str(bucket_of(2.0)): 50}, "compared": 0,
        "disagreed": 0, "rejected": 0,
    }  # fmt: skip
    with store.database.write() as conn:
        ds.add_stats(conn, [row])


def _printed(shown: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(out, "width", 80)
    with out.capture() as captured:
        _print_deployment(shown)
    lines = captured.get().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    return lines


def _judged(store: MetadataStore, rollouts: Rollouts, *, errors: int = 0) -> str:
    made = rollouts.canary("churn", 2, steps=(50.0, 100.0), interval_s=1.0, failures=1)
    _traffic(store, made.id, made.interval_started_at + timedelta(seconds=0.5), errors=errors)
    [decision] = rollouts.tick(made.interval_started_at + timedelta(seconds=2))
    assert decision.action == ("promoted" if errors == 0 else "rolled_back")
    return made.id


def test_a_canary_promoted_past_its_last_step_shows_100_percent(
    store: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollouts = Rollouts(store.database, actor="bob")
    shown = rollouts.status(_judged(store, rollouts))
    assert shown["status"] == "promoted" and shown["step"] == 0  # stored: the last step run
    ended_at = shown["final"]["ended_at"]
    assert shown["final"] == {
        "status": "promoted", "serving": 2, "promoted": 2, "alias": "production",
        "promotion_request": None, "step": 2, "steps": 2, "by_hand": False, "ended_by": "bob",
        "ended_at": ended_at,
    }  # fmt: skip
    assert datetime.fromisoformat(ended_at) <= datetime.now(UTC)  # ISO 8601, when it ended
    assert shown["arms"] == [{"version": 2, "role": "canary", "weight": 100.0}]
    (listed,) = [rollouts.with_outcome(d) for d in rollouts.listed(name="churn", limit=5)]
    assert listed["arms"] == shown["arms"] and listed["final"] == shown["final"]
    lines = _printed(shown, monkeypatch)
    assert "  arms: v2 canary 100%   primary was v1" in lines
    assert "  promoted: v2 takes 100% of the traffic as churn@production" in lines
    when = ended_at[:19].replace("T", " ")
    assert f"  promoted by the canary controller (bob), {when} UTC" in lines
    assert any(line.startswith("  step 2/2 of 50,100%") for line in lines), lines
    assert not any("step 1/2" in line or "50%  " in line for line in lines), lines


def test_a_rolled_back_canary_gives_the_traffic_back(
    store: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollouts = Rollouts(store.database, actor="bob")
    shown = rollouts.status(_judged(store, rollouts, errors=25))
    assert shown["final"]["serving"] == 1 and shown["final"]["promoted"] is None
    # keel deployments list shows the same outcome, not the weight it ended at
    (listed,) = [rollouts.with_outcome(d) for d in rollouts.listed(name="churn", limit=5)]
    assert listed["arms"] == shown["arms"] and listed["final"] == shown["final"]
    assert shown["final"]["step"] == 1  # where it was rolled back
    assert shown["arms"] == [{"version": 2, "role": "canary", "weight": 0.0}]
    lines = _printed(shown, monkeypatch)
    assert "  rolled back: v1 takes 100% of the traffic again (the primary)" in lines
    assert any(line.startswith("  step 1/2 of 50,100%") for line in lines), lines


def test_an_active_canary_is_shown_as_before(
    store: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollouts = Rollouts(store.database, actor="bob")
    made = rollouts.canary("churn", 2, steps=(50.0, 100.0), interval_s=60.0)
    shown = rollouts.status(made.id)
    assert "final" not in shown and shown["arms"][0]["weight"] == 50.0
    lines = _printed(shown, monkeypatch)
    assert "  arms: v2 canary 50%   primary: v1" in lines
    assert any(line.startswith("  step 1/2 of 50,100%") for line in lines)


def test_an_ab_winner_takes_all_and_a_pending_promotion_says_so(
    store: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollouts = Rollouts(store.database, actor="bob")
    made = rollouts.ab("churn", [(2, 30), (3, 70)])
    rollouts.promote(made.id, version=3, reason="arm 3 won")
    shown = rollouts.status(made.id)
    assert [(a["version"], a["weight"]) for a in shown["arms"]] == [(2, 0.0), (3, 100.0)]
    lines = _printed(shown, monkeypatch)
    assert "  promoted: v3 takes 100% of the traffic as churn@production" in lines
    # production needs an approval: the alias (and the traffic) stay with v3 until then
    gated = Rollouts(store.database, RegistryConfig(approvals={"production": 1}), actor="bob")
    canary = gated.canary("churn", 2, steps=(50.0, 100.0))
    gated.promote(canary.id)
    final = gated.status(canary.id)["final"]
    assert final["serving"] == 3 and final["promoted"] == 2 and final["promotion_request"]
    lines = _printed(gated.status(canary.id), monkeypatch)
    said = " ".join(" ".join(lines).split())
    assert "churn@production moves to v2 once promotion request" in said
    assert "until then v3 takes 100% of the traffic" in said
    assert "arms: v2 canary 0% primary was v3" in said


def test_the_cli_shows_the_outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``keel deployments promote`` and ``status`` on a project (text and JSON): a canary
    promoted by hand at its first step reads promoted, by hand, who and when, at 100 %, not
    the step it was at; ``keel deployments list`` says "promoted (hand)"."""
    root = keel.init(tmp_path / "adult", example="adult")
    with Project(root) as project:
        reg = Registry(project.metadata.database, actor="alice")
        for i in range(2):
            reg.register("adult", package_sha256=f"{i + 1:x}" * 64, run_id=None, metrics={})
        reg.promote("adult", 1, alias="production")
        made = Rollouts(project.metadata.database, actor="alice").canary(
            "adult", 2, steps=(50.0, 100.0)
        )
    runner = CliRunner()
    promoted = runner.invoke(
        app,
        ["deployments", "promote", made.id, "-p", str(root), "--actor", "carol"],
        terminal_width=80,
    )
    assert promoted.exit_code == 0, promoted.output
    assert "promoted: v2 takes 100% of the traffic as adult@production" in promoted.output
    shown = runner.invoke(app, ["deployments", "status", "adult", "-p", str(root)])
    assert shown.exit_code == 0, shown.output
    assert "promoted by hand by carol, " in shown.output
    assert "UTC (at step 1/2)" in shown.output  # where it left its steps, said once
    assert "step 1/2 of" not in shown.output and "step 2/2" not in shown.output
    assert "steps 50,100%, every 5m" in shown.output and "v2 canary 100%" in shown.output
    as_json = runner.invoke(
        app, ["deployments", "status", made.id, "-p", str(root), "--format", "json"]
    )
    assert as_json.exit_code == 0, as_json.output
    found = json.loads(as_json.output)
    assert found["final"]["serving"] == 2 and found["arms"][0]["weight"] == 100.0
    assert found["final"]["by_hand"] is True and found["final"]["ended_by"] == "carol"
    assert found["final"]["step"] == 1  # the step it was at when promoted, as before
    monkeypatch.setattr(out, "width", 120)  # the table on one line a deployment
    listed = runner.invoke(app, ["deployments", "list", "-p", str(root)])
    assert listed.exit_code == 0, listed.output
    assert "promoted (hand)" in listed.output and "v2 canary 100%" in listed.output
