"""`keel deployments list` at 80 columns: nothing cut, whatever the names (a MovieLens trial
saw "moviele…" and "keel-ret" in a seven-column table)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import keel.api.deployments
from keel.cli import app
from keel.commands.output import out


def _deployment(ident: str, kind: str, status: str, arms: list[tuple[int, str, float]],
                by: str, **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "id": ident, "name": "movielens-ratings", "kind": kind, "status": status,
        "arms": [{"version": v, "role": r, "weight": w} for v, r, w in arms],
        "created_at": "2026-12-05T14:01:33+00:00", "created_by": by, **extra,
    }  # fmt: skip


def test_long_names_statuses_and_arms_are_shown_whole_in_80_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = [
        _deployment(
            "dep-3f2a9c1b",
            "canary",
            "rolled_back",
            [(2, "primary", 75.0), (4, "canary", 25.0)],
            "keel-retrain",
        ),
        _deployment(
            "dep-77c0e2aa",
            "ab",
            "promoted",
            [(2, "ab", 50.0), (3, "ab", 50.0)],
            "carol@example.com",
            final={"by_hand": True},
        ),
        _deployment(
            "dep-01d4e5f6", "shadow", "active", [(2, "primary", 100.0), (5, "shadow", 0.0)], "root"
        ),
    ]
    monkeypatch.setattr(keel.api.deployments, "list_deployments", lambda **_: found)
    monkeypatch.setattr(out, "width", 80)
    result = CliRunner().invoke(app, ["deployments", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines), result.output
    assert "…" not in result.output
    text = " ".join(result.output.split())
    for whole in ("movielens-ratings", "rolled_back", "keel-retrain", "promoted (hand)",
                  "carol@example.com", "v2 primary 75%, v4 canary 25%", "v5 shadow (mirrored)",
                  "2026-12-05 14:01"):  # fmt: skip
        assert whole in text, (whole, result.output)
    heads = [line for line in lines if line.startswith("dep-")]
    assert len(heads) == 3 and len({line.index("  20") for line in heads}) == 1  # aligned
