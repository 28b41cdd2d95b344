"""What a deploy trial on California housing hit in the registry (issue 16), on a real project
(2,000 rows, two versions, production = 2): a misspelt alias answered with a Python call
and no "did you mean"; ``@v2`` not pointed at ``@2``; a revoked token's name never usable
again; a canary with ``--min-requests 0`` and no traffic judged bad and rolled back."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

import keel
from keel.cli import app
from keel.errors import ConflictError, NotFoundError
from keel.project import Project
from keel.registry.rollout import Rollouts
from keel.store.tokens import create_token, list_tokens, revoke_token, verify_token
from tests.housing import needs_housing, two_versions

pytestmark = needs_housing


@pytest.fixture(scope="module")
def housing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 housing rows, `keel init --from`, two runs: version 2 holds production."""
    return two_versions(tmp_path_factory.mktemp("trial"), seed=5)


def test_a_misspelt_alias_says_what_was_meant_and_how_to_set_one(housing: Path) -> None:
    with keel.registry(housing) as reg:
        with pytest.raises(NotFoundError) as typo:
            reg.resolve("housing@prodction")
        message = typo.value.message
        assert "has no alias 'prodction'" in message
        assert "Did you mean 'housing@production'?" in message
        assert "Aliases: production -> 2" in message
        assert "`keel models promote housing VERSION --alias ALIAS`" in message
        assert "set_alias(" not in message  # a Python call, shown at the command line
        with pytest.raises(NotFoundError, match=r"Did you mean 'housing@2'\?") as numbered:
            reg.resolve("housing@v2")
        assert "a version is a bare number" in numbered.value.message
        with pytest.raises(NotFoundError) as unknown:
            reg.resolve("housing@staging")
        assert "Did you mean" not in unknown.value.message
        assert "`keel models promote housing VERSION --alias staging`" in unknown.value.message


def test_a_revoked_tokens_name_can_be_used_again(housing: Path) -> None:
    with Project(housing) as project:
        db = project.metadata.database
        first, old = create_token(db, "tmp", ["read"], created_by="trial")
        with pytest.raises(ConflictError, match="`keel tokens revoke tmp` first"):
            create_token(db, "tmp", ["read"], created_by="trial")
        revoke_token(db, "tmp", "trial")
        second, new = create_token(db, "tmp", ["admin"], created_by="trial")
        assert second.id != first.id
        assert verify_token(db, old) is None and verify_token(db, new) == second
        rows = [(t.id, t.revoked_at is not None) for t in list_tokens(db) if t.name == "tmp"]
        assert rows == [(first.id, True), (second.id, False)]  # the revoked row is kept
        assert revoke_token(db, "tmp", "trial").id == second.id  # by name: the live one
        with pytest.raises(ConflictError, match="already revoked"):
            revoke_token(db, "tmp", "trial")
    with keel.registry(housing) as reg:
        actions = [e.action for e in reg.audit(target="token:tmp")]
    assert actions.count("token_create") == 2 and actions.count("token_revoke") == 2


def test_a_canary_with_no_traffic_waits_at_min_requests_zero(housing: Path) -> None:
    with Project(housing) as project:
        rollouts = Rollouts(project.metadata.database, project.config.registry, actor="trial")
        made = rollouts.canary("housing", 1, interval_s=60.0, min_requests=0, failures=1)
        later = made.interval_started_at + timedelta(seconds=61)
        for _ in range(3):  # failures=1: a single bad interval would roll it back
            [decision] = rollouts.tick(later)
            assert decision.action == "waiting", decision
            later += timedelta(seconds=61)
        assert "no canary requests" in decision.details["why"]
        found = rollouts.get(made.id)
        assert (found.status, found.bad_intervals, found.step) == ("active", 0, 0)
        assert "waiting for traffic" in rollouts.status(made.id)["waiting"]
    shown = CliRunner().invoke(
        app, ["deployments", "status", "housing", "-p", str(housing)], terminal_width=80
    )
    assert shown.exit_code == 0, shown.output
    assert "waiting for traffic (no canary requests yet this interval)" in shown.output
    with Project(housing) as project:
        Rollouts(project.metadata.database, project.config.registry).abort(made.id)
