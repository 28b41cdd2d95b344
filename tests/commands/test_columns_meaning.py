"""``--columns`` means one thing on every command that reads a file: the fields' names in file
order. ``--header/--no-header`` says whether the first line is a header to skip, sniffed when
left out: `keel init --from` reads a file as `keel predict` and `keel explain` read it, so the
same options give the same rows and names everywhere (a sniffed header that ``--columns``
replace is named in a warning). A Parquet file's columns have names: no "no header row" note.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

import keel
from keel.config import load_config

NAMES = "size,colour,big"
ROWS = 300


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=180, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip


def _parts(path: Path, header: str | None) -> Path:
    rng = np.random.default_rng(5)
    size = rng.integers(1, 500, ROWS)
    colour = rng.choice(["red", "blue", "green"], ROWS)
    big = (size > 250) ^ (rng.random(ROWS) < 0.1)
    rows = [f"{s};{c};{'yes' if b else 'no'}" for s, c, b in zip(size, colour, big, strict=True)]
    path.write_text("\n".join(([header] if header else []) + rows) + "\n")
    return path


def _lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return (done.stdout + done.stderr).splitlines()


def test_columns_replace_a_sniffed_header_in_init_as_in_predict(tmp_path: Path) -> None:
    data = _parts(tmp_path / "parts.csv", header="s;c;b")
    done = keel_cli("init", "p", "--from", str(data), "--columns", NAMES, "--target", "big",
                    cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert "looks like a header: it is skipped and --columns replace its names" in said
    assert "add --no-header" in said
    assert all(len(line) <= 80 for line in _lines(done))
    root = tmp_path / "p"
    source = load_config(root / "keel.yaml", env="").data.train
    assert (source.header, source.columns) == (True, NAMES.split(","))
    config = yaml.safe_load((root / "keel.yaml").read_text())
    config["model"]["params"] = {"n_estimators": 20, "num_leaves": 8}
    config["evaluate"]["gates"] = []
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    summary = keel.run(root)
    assert summary["steps"][0]["facts"]["rows"] == ROWS  # the header line is not a row
    # keel predict and keel explain read the same file with the same options the same way
    out = tmp_path / "scored.csv"
    scored = keel_cli("predict", "p", "-i", str(data), "-o", str(out), "--columns", NAMES,
                      cwd=root)  # fmt: skip
    assert scored.returncode == 0, scored.stdout + scored.stderr
    assert out.read_text().splitlines()[0].startswith("size,colour,big,")
    assert len(out.read_text().splitlines()) == ROWS + 1
    explained = keel_cli("explain", "p", "-i", str(data), "--columns", NAMES, "-n", "2",
                         "--format", "json", cwd=root)  # fmt: skip
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert json.loads(explained.stdout)["lines"] == [2, 3]  # the header is line 1
    # --no-header reads the first line as data, on both
    headless = keel_cli("init", "q", "--from", str(data), "--columns", NAMES, "--no-header",
                        "--target", "big", cwd=tmp_path)  # fmt: skip
    assert headless.returncode == 0 and "looks like a header" not in headless.stderr
    assert load_config(tmp_path / "q" / "keel.yaml", env="").data.train.header is False


def test_columns_name_a_headerless_file_in_init(tmp_path: Path) -> None:
    data = _parts(tmp_path / "parts.csv", header=None)
    done = keel_cli("init", "p", "--from", str(data), "--columns", NAMES, "--target", "big",
                    cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "header" not in done.stderr and "No header row found" not in done.stdout
    source = load_config(tmp_path / "p" / "keel.yaml", env="").data.train
    assert (source.header, source.columns) == (False, NAMES.split(","))


def test_a_parquet_file_is_not_said_to_lack_a_header(tmp_path: Path) -> None:
    table = pa.table({"size": np.arange(200) % 37, "big": ["yes", "no"] * 100})
    pq.write_table(table, tmp_path / "parts.parquet")
    done = keel_cli("init", "p", "--from", str(tmp_path / "parts.parquet"), "--target", "big",
                    cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No header row found" not in done.stdout


def test_both_help_texts_say_the_same(tmp_path: Path) -> None:
    helps = [keel_cli(command, "--help", cwd=tmp_path).stdout
             for command in ("init", "predict", "explain")]  # fmt: skip
    for text in helps:
        flat = " ".join(text.replace("│", " ").split())
        assert "comma-separated: a headerless file's, or in place of the header's" in flat
        assert "sniffed when left out" in flat
        assert all(len(line) <= 80 for line in text.splitlines())
