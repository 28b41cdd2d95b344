"""`keel feedback` on the labels file a new user writes for the Palmer penguins.

What the trial hit: the file, written with Python's ``csv`` module (lines end in CRLF) with a
last row appended by ``echo`` (LF), was refused: "cannot read the source: Invalid Input Error:
Error when sniffing file ... .. Check its format, delimiter, header and columns in keel.yaml";
and sending a file with an ``instance`` column twice printed the hint "rows without an instance
position name the first instance of their request ... --instance-column", which is about files
without one.
"""

from __future__ import annotations

import csv
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

import keel
from keel.cli import app
from keel.commands.init import init_from_file
from tests.serve.conftest import keel_serve

PENGUINS = Path(__file__).resolve().parents[3] / "shared" / "data" / "palmer-penguins"
pytestmark = pytest.mark.skipif(not PENGUINS.exists(), reason="the shared datasets are not here")
HINT = "hint: rows without an instance position"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A penguins project, 12 birds predicted in 3 requests of 4, and the labels file: written
    by csv.writer (CRLF), its last row appended as `echo` would (LF)."""
    root = tmp_path_factory.mktemp("penguins")
    made = init_from_file(root / "penguins", PENGUINS / "penguins.csv", "species")
    config = yaml.safe_load((made.directory / "keel.yaml").read_text())
    config["model"]["params"] = {"n_estimators": 30}
    (made.directory / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    keel.run(made.directory)
    with (PENGUINS / "penguins.csv").open(newline="") as handle:
        birds = [row for row in csv.DictReader(handle) if "NA" not in row.values()][:12]
    labels = root / "labels.csv"
    with keel_serve(made.directory) as server, labels.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["request_id", "instance", "species"])
        for start in (0, 4, 8):
            rows = [_instance(bird) for bird in birds[start : start + 4]]
            answer = httpx.post(
                f"{server.url}/v1/models/penguins/predict", json={"instances": rows}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            rid = answer.json()["request_id"]
            for i, bird in enumerate(birds[start : start + 4]):
                if (start, i) != (8, 3):
                    writer.writerow([rid, i, bird["species"]])
    with labels.open("ab") as out:
        out.write(f"{rid},3,{birds[11]['species']}\n".encode())
    return made.directory, labels


def _instance(bird: dict[str, str]) -> dict[str, object]:
    whole = {"flipper_length_mm", "body_mass_g", "year"}
    return {
        k: int(v) if k in whole else float(v) if k.endswith("_mm") else v
        for k, v in bird.items()
        if k != "species"
    }


def _feedback(root: Path, *args: str) -> Result:
    return CliRunner().invoke(
        app, ["feedback", "penguins", *args, "-p", str(root)], terminal_width=80
    )


def test_a_labels_file_with_mixed_line_endings_is_read(labelled: tuple[Path, Path]) -> None:
    root, labels = labelled
    data = labels.read_bytes()
    assert data.count(b"\r\n") == 12 and data.endswith(b"\n") and not data.endswith(b"\r\n")
    done = _feedback(root, "-i", str(labels), "--label-column", "species")
    assert done.exit_code == 0, done.output
    assert "12 accepted, 0 replaced, 0 rejected" in " ".join(done.output.split())
    # sent again: every row is a duplicate; the file names its instances, so no hint
    again = _feedback(root, "-i", str(labels), "--label-column", "species")
    said = " ".join(again.output.split())
    assert again.exit_code == 1 and "0 accepted, 0 replaced, 12 rejected" in said
    assert "already has a label" in said and HINT not in said
    # without the instance column every row names its request's first instance: the hint
    bare = labels.with_name("bare.csv")
    kept = [line.split(b",") for line in data.replace(b"\r\n", b"\n").splitlines()]
    bare.write_bytes(b"".join(b",".join((r[0], r[2])) + b"\n" for r in kept))
    hinted = _feedback(root, "-i", str(bare), "--label-column", "species")
    said = " ".join(hinted.output.split())
    assert hinted.exit_code == 1 and HINT in said and "--instance-column" in said


def test_a_model_never_deployed_lists_none(labelled: tuple[Path, Path]) -> None:
    """(`keel deployments list -m NAME` for a model without deployments; a misspelt name is an
    error: tests/commands/test_deploy_mistakes.py.)"""
    root, _ = labelled
    done = CliRunner().invoke(
        app, ["deployments", "list", "-m", "penguins", "-p", str(root)], terminal_width=80
    )
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        "no deployments of 'penguins': `keel deploy NAME --canary VERSION` starts one."
    ]


def test_an_empty_label_cell_names_the_files_column(labelled: tuple[Path, Path]) -> None:
    """Not the HTTP item's field ("missing field 'label'"): the file has no 'label' column."""
    root, labels = labelled
    first = labels.read_text().splitlines()[1].split(",")
    empty = labels.with_name("empty.csv")
    empty.write_text(f"request_id,instance,species\n{first[0]},{first[1]},\n")
    done = _feedback(root, "-i", str(empty), "--label-column", "species")
    said = " ".join(done.output.split())
    assert done.exit_code == 1 and "1 rejected" in said, done.output
    assert "no label: the 'species' cell is empty." in said, done.output
    assert "missing field 'label'" not in said
    result = keel.feedback_file("penguins", empty, project=root, label_column="species")
    assert [r["reason"] for r in result["rejected"]] == ["no label: the 'species' cell is empty."]
