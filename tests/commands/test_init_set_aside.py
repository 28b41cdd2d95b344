"""`keel init --from` sets aside ids, row counters, free text and study labels, each explained in
keel.yaml's drop: list, and keeps every real feature of the shared datasets; without DIRECTORY it
writes to the current directory (and says what it created), or refuses to overwrite a keel.yaml
there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from keel.commands.init import init_from_file
from keel.config import load_config
from keel.validate.infer_roles import name_words, set_aside

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PENGUINS_RAW = SHARED / "palmer-penguins" / "penguins_raw.csv"
pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="the shared datasets are not here")


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120)  # fmt: skip


def test_penguins_raw_ids_counter_text_and_study_label_are_dropped_with_reasons(
    tmp_path: Path,
) -> None:
    made = init_from_file(tmp_path / "penguins", PENGUINS_RAW, "Species")
    assert made.dropped == ("studyName", "Sample Number", "Individual ID", "Comments")
    config = load_config(made.config, env="")
    assert config.data.drop == list(made.dropped)
    assert "studyName" not in config.evaluate.slices  # a dropped column is no slice either
    text = " ".join(made.config.read_text().split())  # comments wrap: compare the words
    assert "Individual ID: named like an id, with 190 distinct values in 344 rows (55%)" in text
    assert "Sample Number: named like a row number, with 152 distinct values" in text
    assert "Comments: free text (named like a note;" in text
    assert "studyName: named like a label of the study or batch" in text
    # the measured features stay inputs
    for kept in ("Culmen Length (mm)", "Body Mass (g)", "Island", "Sex", "Delta 15 N (o/oo)"):
        assert kept not in config.data.drop


@pytest.mark.parametrize(
    ("file", "target", "dropped"),
    [
        # 1, 2, ... 731: the row number; cnt = casual + registered (test_leak_sums.py)
        ("bike-sharing/day.csv", "cnt", ("instant", "casual", "registered")),
        ("bike-sharing/hour.csv", "cnt", ("instant", "casual", "registered")),  # hr stays
        ("california-housing/housing.csv", "median_house_value", ()),
        ("student-performance/student-mat.csv", "higher", ()),
        ("student-performance/student-por.csv", "G3", ()),
        ("palmer-penguins/penguins.csv", "species", ()),
    ],
)
def test_real_features_of_the_shared_datasets_are_kept(
    tmp_path: Path, file: str, target: str, dropped: tuple[str, ...]
) -> None:
    made = init_from_file(tmp_path / "p", SHARED / file, target, copy=False)
    assert made.dropped == dropped
    assert load_config(made.config, env="").data.drop == list(dropped)
    if dropped:
        assert "rises by one from row to row (1, 2, ..." in made.config.read_text()


def test_the_rules_read_name_order_and_values() -> None:
    assert name_words("studyName") == ["study", "name"]
    assert name_words("customerID") == ["customer", "id"]
    assert name_words("Sample No.") == ["sample", "no"]
    rows = 200
    table = pa.table({
        "store_id": [i % 8 for i in range(rows)],  # an id of few groups: a feature
        "user_id": [f"u{i}" for i in range(rows)],
        "counter": list(range(5, 5 + rows)),
        "shuffled": list(reversed(range(rows))),  # unique but falling: not a counter
        "review": [f"customer number {i} says the product works well" for i in range(rows)],
        "colour": ["dark red with a hint of blue"] * rows,  # long but one value: a category
        "y": [i % 2 for i in range(rows)],
    })  # fmt: skip
    found = {s.name: s.kind for s in set_aside(table, target="y")}
    assert found == {"user_id": "id", "counter": "counter", "review": "free text"}
    assert set_aside(table.select(["user_id"]), target="user_id") == []


def test_cli_without_directory_writes_here_and_says_what_it_created(tmp_path: Path) -> None:
    done = keel_cli("init", "--from", str(PENGUINS_RAW), "--target", "Species", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())
    assert "Created in the current directory: keel.yaml, data/penguins_raw.csv" in said
    assert "Set aside" in said and "Individual ID" in said
    assert "then: keel run" in said and "cd " not in said
    config = yaml.safe_load((tmp_path / "keel.yaml").read_text())
    assert config["data"]["target"] == "Species"
    assert (tmp_path / "data" / "penguins_raw.csv").is_file()
    again = keel_cli("init", "--from", str(PENGUINS_RAW), "--target", "Species", cwd=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "already holds a keel.yaml: name a new project directory" in " ".join(
        again.stderr.split()
    )
    bare = keel_cli("init", cwd=tmp_path)
    assert bare.returncode == 2 and "name the DIRECTORY" in " ".join(bare.stderr.split())
