"""What a new user reads from `keel alerts`, `keel monitor run --help` and `keel build --help`
at 80 columns: an alert over the whole prediction log says its window is ``all`` (not an empty
`` .. ``), a log sink is not named twice, and help texts do not break mid-sentence."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from keel.cli import app
from keel.commands.alerts import _span
from keel.commands.deploy import _print_deployment
from keel.commands.output import out


@pytest.mark.parametrize(
    ("start", "end", "shown"),
    [
        ("", "", "all"),
        (None, None, "all"),
        ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-01 .. 2026-01-02"),
        ("2026-01-01T06:30:00Z", "", "2026-01-01 06:30 .. ..."),
    ],
)
def test_an_alert_window_reads_as_a_span(start: str | None, end: str | None, shown: str) -> None:
    assert _span(start, end) == shown


@pytest.mark.parametrize(
    ("args", "summary"),
    [
        (["build", "--help"], "Write a Docker build context for a model version"),
        (["build", "docker", "--help"], "README with the docker build and run commands."),
        (["monitor", "run", "--help"], "until Ctrl-C. Exits 0 whether or not alerts fired."),
    ],
)
def test_help_lines_fit_80_columns(args: list[str], summary: str) -> None:
    result = CliRunner().invoke(app, args, terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = [line.strip(" │") for line in result.output.splitlines()]
    assert summary in " ".join(" ".join(lines).split()), result.output  # wherever it wraps
    # no paragraph line re-wrapped into a stub of a word or two (the docstrings' own breaks)
    first_panel = next(i for i, line in enumerate(lines) if line.startswith("╭"))
    prose = [line for line in lines[:first_panel] if line and not line.startswith("Usage")]
    if args == ["build", "--help"]:  # the command list: one entry per line where it fits
        prose = [line for line in lines if line.startswith(("docker", "k8s"))]
    stubs = [line for line in prose if len(line.split()) <= 2 and not line.endswith(".")]
    assert not stubs, result.output


CANARY: dict[str, Any] = {
    "name": "students", "kind": "canary", "id": "b937248cf81e", "status": "active",
    "reason": None, "arms": [{"version": 1, "role": "canary", "weight": 5.0}], "step": 0,
    "bad_intervals": 0,
    "spec": {"primary": 2, "steps": [5, 25, 50, 100], "interval_s": 30.0,
             "checks": ["error_rate<=0.01"], "failures": 2, "min_requests": 20},
    "traffic": [
        {"version": 1, "role": "canary", "requests": 10, "errors": 0, "error_rate": 0.0,
         "p50_ms": 0.39, "p95_ms": 0.51, "p99_ms": 0.51, "disagreement_rate": 1.0},
        {"version": 2, "role": "primary", "requests": 10000, "errors": 0, "error_rate": 0.0,
         "p50_ms": 0.86, "p95_ms": 11.9, "p99_ms": 11.9},
    ],
}  # fmt: skip


def test_a_canary_status_fits_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(out, "width", 80)
    with out.capture() as captured:
        _print_deployment(CANARY)
    text = captured.get()
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    assert "  step 1/4 of 5,25,50,100%, every 30s, at least 20 requests each" in lines
    assert "  checks error_rate<=0.01; bad intervals in a row 0/2 (rolled back at 2)" in lines
    header = next(line for line in lines if "┃" in line and "requests" in line)
    assert "…" not in text and "version" in header and "disagree" in header  # none cut
    assert any("primary" in line and "10000" in line for line in lines)
