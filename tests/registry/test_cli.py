"""End to end on the Adult example: keel run with `registry.approvals: {production: 1}` opens a
pending request instead of promoting; the CLI approves (not the requester), promotes, rolls
back, archives, lists the audit log, and manages API tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import keel


def cli(root: Path, *args: str, actor: str = "ci-bot") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEEL_ACTOR": actor}
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args],
        cwd=root,
        text=True,
        capture_output=True,
        timeout=120,
        env=env,
    )


def cli_json(root: Path, *args: str, actor: str = "ci-bot") -> Any:
    done = cli(root, *args, "--format", "json", actor=actor)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = keel.init(tmp_path_factory.mktemp("registry") / "adult", example="adult")
    config = root / "keel.yaml"
    text = config.read_text().replace("n_estimators: 600", "n_estimators: 40")
    text = text.replace(
        "registry:\n  alias: production\n",
        "registry:\n  alias: production\n  approvals: {production: 1}\n",
    )
    config.write_text(text)
    return root


def test_the_pipeline_waits_for_approval_then_the_cli_drives_the_registry(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_ACTOR", "ci-bot")
    ran = cli(project, "run")
    assert ran.returncode == 0, ran.stderr  # the gates passed; the alias waits for approval
    assert "promotion to the alias awaits approval: request" in ran.stdout
    request_id = ran.stdout.split("awaits approval: request ")[1].split()[0]
    pending = cli_json(project, "models", "requests", "--pending")["requests"]
    assert [(r["id"], r["requested_by"], r["version"]) for r in pending] == [
        (request_id, "ci-bot", 1)
    ]
    # the requester cannot approve their own promotion: exit 1, a clear message, no traceback
    refused = cli(project, "models", "approve", request_id)
    assert refused.returncode == 1 and "cannot approve it" in refused.stderr
    assert "Traceback" not in refused.stderr
    approved = cli_json(project, "models", "approve", request_id, "-m", "looks good", actor="bob")
    assert approved["status"] == "applied"
    listed = cli_json(project, "models", "list")["models"]
    assert listed[0]["aliases"] == {"production": 1}

    # a second version (same package) promoted with approval, then rolled back with the CLI
    with keel.registry(project, actor="ci-bot") as reg:
        package = reg.show("adult", 1).package_sha256
        reg.register("adult", package_sha256=package, run_id=None, metrics={})
    second = cli_json(
        project, "models", "promote", "adult", "2", "--alias", "production", "--reason", "retrained"
    )
    assert second["status"] == "pending"
    cli_json(project, "models", "approve", second["id"], actor="carol")
    assert keel.load_model("adult@production", project=project).version == 2
    back = cli_json(
        project, "models", "rollback", "adult", "--alias", "production", "--reason", "v2 regressed"
    )
    assert (back["previous_version"], back["version"]) == (2, 1)
    assert keel.load_model("adult@production", project=project).version == 1

    archived = cli_json(project, "models", "archive", "adult", "2")
    assert archived["archived"] is True
    blocked = cli(project, "models", "promote", "adult", "2", "--alias", "staging")
    assert blocked.returncode == 1 and "archived" in blocked.stderr
    text = cli(project, "models", "show", "adult")
    assert text.returncode == 0 and "archived" in text.stdout

    audit = cli_json(project, "audit", "--target", "adult")["entries"]
    actions = [(e["action"], e["actor"]) for e in reversed(audit)]
    assert actions == [
        ("register", "ci-bot"),
        ("request_promotion", "ci-bot"),
        ("promote", "bob"),
        ("register", "ci-bot"),
        ("request_promotion", "ci-bot"),
        ("promote", "carol"),
        ("rollback", "ci-bot"),
        ("archive", "ci-bot"),
    ]
    assert cli_json(project, "audit", "--actor", "bob")["entries"][0]["action"] == "promote"
    assert cli_json(project, "audit", "--action", "rollback", "--since", "1h")["entries"]
    history = cli(project, "models", "history", "adult", "--alias", "production")
    assert history.returncode == 0 and "rollback" in history.stdout
    assert "v2 regressed" in history.stdout


def test_tokens_cli(project: Path) -> None:
    from keel.project import Project
    from keel.store.tokens import verify_token

    made = cli(
        project,
        "tokens",
        "create",
        "ci",
        "--scope",
        "predict",
        "--scope",
        "read",
        "--rate-limit",
        "100",
        "--expires",
        "30d",
    )
    assert made.returncode == 0, made.stderr
    secret = next(line for line in made.stdout.splitlines() if line.startswith("keel_"))
    assert "cannot show it again" in made.stderr
    with Project(project) as proj:
        info = verify_token(proj.metadata.database, secret)
        assert info is not None and info.scopes == ("predict", "read")
    listed = cli_json(project, "tokens", "list")["tokens"]
    assert [(t["name"], t["rate_limit_per_minute"]) for t in listed] == [("ci", 100)]
    assert "secret" not in listed[0] and secret not in json.dumps(listed)
    bad = cli(project, "tokens", "create", "x", "--scope", "write")
    assert bad.returncode == 2 and "scopes must be one or more" in bad.stderr
    assert cli(project, "tokens", "revoke", "ci", actor="ops").returncode == 0
    with Project(project) as proj:
        assert verify_token(proj.metadata.database, secret) is None
    audit = cli_json(project, "audit", "--target", "token:ci")["entries"]
    assert [(e["action"], e["actor"]) for e in audit] == [
        ("token_revoke", "ops"),
        ("token_create", "ci-bot"),
    ]
    assert cli_json(project, "webhooks", "deliver") == {"delivered": 0, "retrying": 0, "failed": 0}
