"""`keel build k8s` lists every file it writes: its "next:" line points to README.md (how to
create the token Secret), which the "wrote" lines used to leave out."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from keel.cli import app


def test_k8s_lists_the_readme_it_points_to(adult_project: Path, tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    done = CliRunner().invoke(
        app, ["build", "k8s", "adult@1", "-p", str(adult_project), "-o", str(out)]
    )
    assert done.exit_code == 0, done.output
    said = "".join(done.output.split())  # (long paths wrap at the terminal's width)
    wrote, _, after = said.partition("next:")
    for name in ("deployment.yaml", "service.yaml", "hpa.yaml", "README.md"):
        assert f"wrote{out / name}" in wrote, done.output
        assert (out / name).is_file()
    assert f"see{out / 'README.md'}" in after
