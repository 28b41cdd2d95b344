"""Small things a serving trial (bike sharing, penguins) found: `keel monitor NAME --help` said
"Usage: keel monitor check" (a hidden subcommand the user never typed); a feedback item with
``"label": null`` was refused as "missing field 'label'"."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from keel.cli import app
from keel.monitor.feedback import LabelSpec, _parse


@pytest.mark.parametrize("args", [["monitor", "bike", "--help"], ["monitor"]])
def test_monitor_usage_names_the_command_typed(args: list[str]) -> None:
    said = CliRunner().invoke(app, args, prog_name="keel", terminal_width=80).output
    [usage] = [line.strip() for line in said.splitlines() if "Usage:" in line]
    assert usage.startswith("Usage: keel monitor [OPTIONS]"), said
    assert "check" not in usage


def test_monitor_run_usage_is_unchanged() -> None:
    said = CliRunner().invoke(app, ["monitor", "run", "--help"], prog_name="keel").output
    assert "Usage: keel monitor run [OPTIONS]" in said


SPECS = [
    (LabelSpec("bike", "regression", (), {}), "a finite number"),
    (LabelSpec("penguins", "multiclass", ("Adelie", "Gentoo"), {}), "(Adelie, Gentoo)"),
]


@pytest.mark.parametrize(("spec", "accepted"), SPECS)
def test_a_null_label_says_it_is_null_and_what_is_accepted(spec: LabelSpec, accepted: str) -> None:
    reason = _parse(0, {"request_id": "r1", "label": None}, spec).reason
    assert reason.startswith("'label' is null"), reason
    assert "missing field" not in reason and accepted in reason


@pytest.mark.parametrize(("spec", "accepted"), SPECS)
def test_a_missing_label_says_what_is_accepted(spec: LabelSpec, accepted: str) -> None:
    reason = _parse(0, {"request_id": "r1"}, spec).reason
    assert reason.startswith("missing field 'label'") and accepted in reason
