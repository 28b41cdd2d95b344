"""Warnings are stored with their run: ``ctx.warn`` prints, records, and ``keel runs show``
shows them again; a cached run keeps the warnings of the run it reused."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

import keel
from keel.pipeline.runner import Step, StepContext, run_steps
from keel.project import Project
from keel.types import Artifact


def noisy(ctx: StepContext) -> dict[str, Artifact]:
    ctx.warn("column 'x' has [brackets] and 3 blank values; fill them")
    ctx.warn("second warning")
    return {"out": ctx.project.artifacts.put(b"noisy output", kind="test")}


def broken(ctx: StepContext) -> dict[str, Artifact]:
    ctx.warn("about to fail")
    raise RuntimeError("boom")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return keel.init(tmp_path / "adult", example="adult")


def test_warn_prints_and_stores_with_the_run(project: Path) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=False)
    with Project(project) as proj:
        (result,) = run_steps(proj, [Step("noisy", noisy, outputs=("out",))], console=console)
        assert result.warnings == (
            "column 'x' has [brackets] and 3 blank values; fill them",
            "second warning",
        )
        run = proj.metadata.get_run(result.run_id)
        assert run.params["warnings"] == list(result.warnings)
    printed = buffer.getvalue()
    assert "warning: column 'x' has [brackets] and 3 blank values; fill them" in printed
    assert "warning: second warning" in printed
    shown = keel.get_run(result.run_id, project=project)
    assert shown["warnings"] == list(result.warnings)


def test_a_cached_run_keeps_the_warnings_without_printing_them(project: Path) -> None:
    with Project(project) as proj:
        (first,) = run_steps(
            proj, [Step("noisy", noisy, outputs=("out",))], console=Console(quiet=True)
        )
        buffer = io.StringIO()
        (again,) = run_steps(
            proj, [Step("noisy", noisy, outputs=("out",))], console=Console(file=buffer)
        )
    assert again.status == "cached" and again.warnings == first.warnings
    assert "warning" not in buffer.getvalue()
    shown = keel.get_run(again.run_id, project=project)
    assert shown["warnings"] == list(first.warnings) and shown["reused_run"] == first.run_id


def test_a_failed_run_keeps_the_warnings_it_gave(project: Path) -> None:
    with Project(project) as proj:
        with pytest.raises(RuntimeError, match="boom"):
            run_steps(proj, [Step("broken", broken)], console=Console(quiet=True))
        (run,) = proj.metadata.list_runs(limit=1)
        assert run.status == "failed" and run.params["warnings"] == ["about to fail"]


def test_runs_show_prints_every_warning(project: Path) -> None:
    with Project(project) as proj:
        (result,) = run_steps(
            proj, [Step("noisy", noisy, outputs=("out",))], console=Console(quiet=True)
        )
    env = os.environ | {"COLUMNS": "200"}
    command = [sys.executable, "-m", "keel.cli", "runs", "show", result.run_id[:10]]
    done = subprocess.run(command, cwd=project, env=env, text=True, capture_output=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warnings 2" in done.stdout
    assert "  - column 'x' has [brackets] and 3 blank values; fill them" in done.stdout
    assert "  - second warning" in done.stdout


def test_ingest_warnings_are_stored_with_the_ingest_run(tmp_path: Path) -> None:
    """An incremental source that skips rows (no watermark) says so, and the run keeps it."""
    from keel.pipeline.standard import default_steps

    root = tmp_path / "inc"
    root.mkdir()
    rows = ["id,updated_at,x,y", *(f"{i},2024-01-{i:02d},{i},{i % 2}" for i in range(1, 21))]
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    config = {
        "project": "inc",
        "data": {
            "train": {"path": "data.csv", "incremental": {"column": "updated_at"}},
            "target": "y",
        },
        "model": {"name": "inc"},
    }
    (root / "keel.yaml").write_text(yaml.safe_dump(config))
    with Project(root) as proj:
        ingest = [s for s in default_steps(proj) if s.name == "ingest_train"]
        run_steps(proj, ingest, console=Console(quiet=True))
    with (root / "data.csv").open("a") as handle:
        handle.write("21,2024-02-01,21,1\n22,,22,0\n")
    buffer = io.StringIO()
    with Project(root) as proj:
        (result,) = run_steps(proj, ingest, console=Console(file=buffer, width=300))
    assert len(result.warnings) == 1 and "updated_at" in result.warnings[0]
    assert "warning:" in buffer.getvalue()
    assert keel.get_run(result.run_id, project=root)["warnings"] == list(result.warnings)


def test_early_stopping_that_never_stopped_is_a_warning(project: Path) -> None:
    """Boosting that is still improving at its last round (best iteration = n_estimators)
    says so, and names what to raise."""
    config = yaml.safe_load((project / "keel.yaml").read_text())
    config["model"]["params"].update({"n_estimators": 8, "learning_rate": 0.05})
    (project / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    summary = keel.run(project)
    (train,) = [s for s in summary["steps"] if s["step"] == "train"]
    said = keel.get_run(train["run_id"], project=project)["warnings"]
    assert said == [
        "early stopping never stopped: the best iteration is the last one (8 of "
        "model.params.n_estimators 8), so the model may still be improving. Raise "
        "n_estimators (e.g. to 16)."
    ]
