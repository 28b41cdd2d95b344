"""`keel init --from` with the reading options of `keel predict`: a file without a header row
(MovieLens 100k's tab-separated u.data) gets its names from ``--columns``, and the options go
into keel.yaml's source, so `keel run` reads the file as init profiled it.

u.data is read from ../shared/data beside the repository (in place, or its head copied into a
temporary directory for a fast run); those tests are skipped without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import keel
from keel.commands.init import init_from_file
from keel.config import load_config
from keel.data import ReadOptions
from keel.errors import ConfigError

MOVIELENS = Path(__file__).resolve().parents[3] / "shared" / "data" / "movielens-100k"
NAMES = "user_id,item_id,rating,timestamp"
ROWS = 3000
FAST = {"n_estimators": 30, "learning_rate": 0.2, "num_leaves": 8}
needs_movielens = pytest.mark.skipif(
    not (MOVIELENS / "u.data").exists(), reason=f"needs {MOVIELENS}"
)


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=180, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip


def _fast(root: Path) -> None:
    path = root / "keel.yaml"
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    config["model"]["params"] = FAST
    config["evaluate"]["gates"] = []
    path.write_text(yaml.safe_dump(config, sort_keys=False))


# --- MovieLens u.data: no header row -------------------------------------------------------


@needs_movielens
def test_movielens_named_by_columns_splits_by_time_trains_and_predicts(tmp_path: Path) -> None:
    head = (MOVIELENS / "u.data").read_text().splitlines()[:ROWS]
    (tmp_path / "u.data").write_text("\n".join(head) + "\n")
    done = keel_cli("init", "ml", "--from", "u.data", "--columns", NAMES, "--target", "rating",
                    cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "timestamp (s)" in done.stdout and "Split by time" in done.stdout
    assert "No header row found" not in done.stdout
    assert all(len(line) <= 80 for line in done.stdout.splitlines())
    root = tmp_path / "ml"
    source = load_config(root / "keel.yaml", env="").data.train
    assert (source.header, source.columns) == (False, NAMES.split(","))
    assert (source.delimiter, source.unix_time) == ("\t", {"timestamp": "s"})
    config = load_config(root / "keel.yaml", env="")
    assert (config.data.target, config.split.method, config.split.column) == (
        "rating", "time", "timestamp",
    )  # fmt: skip
    _fast(root)
    summary = keel.run(root)
    assert summary["model"]["version"] == 1
    few = tmp_path / "few.tsv"
    kept = ["\t".join(line.split("\t")[i] for i in (0, 1, 3)) for line in head[-5:]]
    few.write_text("\n".join(kept) + "\n")
    out = tmp_path / "scored.csv"
    done = keel_cli("predict", "ml", "-i", str(few), "-o", str(out), "--no-header",
                    "--columns", "user_id,item_id,timestamp", cwd=root)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    scored = out.read_text().splitlines()
    assert len(scored) == 6 and scored[0].startswith("user_id,item_id,timestamp,")


@needs_movielens
def test_the_api_reads_u_data_in_place_with_the_names_given(tmp_path: Path) -> None:
    read = ReadOptions(columns=tuple(NAMES.split(",")))
    root = keel.init(tmp_path / "ml", source=MOVIELENS / "u.data", target="rating", copy=False,
                     read=read)  # fmt: skip
    config = load_config(root / "keel.yaml", env="")
    source = config.data.train
    assert Path(str(source.path)) == (MOVIELENS / "u.data").resolve()
    assert (source.header, source.columns, source.unix_time) == (
        False, NAMES.split(","), {"timestamp": "s"},
    )  # fmt: skip
    assert config.model.task == "multiclass" and config.split.column == "timestamp"
    assert not (root / "data").exists()  # read in place, never copied


@needs_movielens
def test_without_columns_init_says_the_file_has_no_header_and_how_to_name_it(
    tmp_path: Path,
) -> None:
    wrong = keel_cli("init", "ml", "--from", str(MOVIELENS / "u.data"), "--no-copy",
                     "--target", "rating", cwd=tmp_path)  # fmt: skip
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    said = " ".join(wrong.stderr.split())
    assert "no header row" in said and "--columns a,b,c" in said and "column3" in said
    done = keel_cli("init", "ml", "--from", str(MOVIELENS / "u.data"), "--no-copy",
                    "--target", "column2", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = " ".join(done.stdout.split())
    assert "No header row found: the columns are named column0 .. column3" in printed
    assert "--columns a,b,c (4 names, in file order)" in printed


@needs_movielens
def test_a_count_of_names_unlike_the_fields_names_both_and_the_first_line(
    tmp_path: Path,
) -> None:
    first = (MOVIELENS / "u.data").read_text().splitlines()[0]
    done = keel_cli("init", "ml", "--from", str(MOVIELENS / "u.data"), "--no-copy",
                    "--columns", "user_id,item_id,rating", "--target", "rating",
                    cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    said = " ".join(done.stderr.split())
    assert "--columns gives 3 names but u.data has 4 field(s) per line" in said
    assert repr(first) in said and "tab" in said
    assert not (tmp_path / "ml" / "keel.yaml").exists()
    split = keel_cli("init", "ml", "--from", str(MOVIELENS / "u.data"), "--no-copy",
                     "--delimiter", ";", "--columns", NAMES, "--target", "rating",
                     cwd=tmp_path)  # fmt: skip
    assert split.returncode == 2 and "has 1 field(s) per line (split by ';')" in split.stderr


# --- a synthetic headerless CSV ------------------------------------------------------------


def _headerless(path: Path, header: str | None = None) -> Path:
    rng = np.random.default_rng(3)
    n = 300
    size = rng.integers(1, 500, n)
    colour = rng.choice(["red", "blue", "green"], n)
    big = (size > 250) ^ (rng.random(n) < 0.1)  # noisy, or size would leak the label
    rows = [f"{s};{c};{'yes' if b else 'no'}" for s, c, b in zip(size, colour, big, strict=True)]
    path.write_text("\n".join(([header] if header else []) + rows) + "\n")
    return path


def test_a_headerless_csv_named_by_columns_trains(tmp_path: Path) -> None:
    data = _headerless(tmp_path / "parts.csv")
    read = ReadOptions(columns=("size", "colour", "big"))
    made = init_from_file(tmp_path / "parts", data, "big", read=read)
    assert (made.task, made.unnamed, made.warnings) == ("binary", (), ())
    source = load_config(made.config, env="").data.train
    assert (source.delimiter, source.header, source.columns) == (
        ";",
        False,
        ["size", "colour", "big"],
    )
    _fast(made.directory)
    summary = keel.run(made.directory)
    assert summary["model"]["version"] == 1
    ingest = summary["steps"][0]
    assert ingest["step"] == "ingest_train" and ingest["facts"]["rows"] == 300  # no header
    train = next(step for step in summary["steps"] if step["step"] == "train")
    assert train["facts"]["metrics"]["validation_roc_auc"] > 0.7  # size is read as an input


def test_header_with_columns_renames_the_header_row(tmp_path: Path) -> None:
    data = _headerless(tmp_path / "parts.csv", header="s;c;b")
    read = ReadOptions(header=True, columns=("size", "colour", "big"))
    made = init_from_file(tmp_path / "parts", data, "big", read=read)
    source = load_config(made.config, env="").data.train
    assert (source.header, source.columns) == (True, ["size", "colour", "big"])
    assert "in place of the header row's" in made.config.read_text()
    assert made.warnings == ()
    unsaid = init_from_file(tmp_path / "guess", data, "big", read=ReadOptions(columns=read.columns))
    # without --header the header is sniffed, as keel predict reads it: found, and replaced
    assert any("looks like a header" in w and "--no-header" in w for w in unsaid.warnings)
    assert load_config(unsaid.config, env="").data.train.header is True


def test_no_header_without_columns_keeps_generated_names(tmp_path: Path) -> None:
    data = _headerless(tmp_path / "parts.csv")
    made = init_from_file(tmp_path / "parts", data, "column2")
    assert made.unnamed == ("column0", "column1", "column2")
    assert "keel init again with --columns a,b,c" in " ".join(made.config.read_text().split())


def test_reading_options_for_parquet_or_without_a_file_are_errors(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": [1, 2, 3] * 10, "y": ["a", "b", "a"] * 10}), tmp_path / "t.pq")
    with pytest.raises(ConfigError, match=r"--columns: t\.pq is a Parquet file"):
        init_from_file(tmp_path / "p", tmp_path / "t.pq", "y", read=ReadOptions(columns=("a", "b")))
    with pytest.raises(ConfigError, match="go with a source file"):
        keel.init(tmp_path / "q", read=ReadOptions(delimiter=";"))
    done = keel_cli("init", "r", "--columns", "a,b", cwd=tmp_path)
    assert done.returncode == 2 and "go with --from FILE" in done.stderr
    bad = keel_cli("init", "r", "--from", "t.pq", "--delimiter", ";;", cwd=tmp_path)
    assert bad.returncode == 2 and "--delimiter: delimiter must be one character" in bad.stderr
    assert "Traceback" not in done.stderr + bad.stderr
