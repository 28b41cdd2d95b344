"""`keel init --from FILE --target COLUMN`: a loadable, commented keel.yaml for any CSV/Parquet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import keel
from keel.commands.init import init_from_file
from keel.config import load_config
from keel.errors import ConfigError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
shared = pytest.mark.skipif(not SHARED.exists(), reason="the shared datasets are not here")

# (file, target, task, what the source section must say)
DATASETS = [
    ("student-performance/student-mat.csv", "G3", "regression", {"delimiter": ";", "quote": '"'}),
    ("palmer-penguins/penguins.csv", "species", "multiclass", {"na_values": ["NA"]}),
    ("california-housing/housing.csv", "median_house_value", "regression", {"header": True}),
    ("bike-sharing/day.csv", "cnt", "regression", {"delimiter": ","}),
]


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120)  # fmt: skip


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@shared
@pytest.mark.parametrize(("file", "target", "task", "source"), DATASETS)
def test_every_shared_dataset_gets_a_loadable_config(
    tmp_path: Path, file: str, target: str, task: str, source: dict[str, object]
) -> None:
    made = init_from_file(tmp_path / "project", SHARED / file, target)
    config = load_config(made.config, env="")
    assert (made.task, config.model.task, config.data.target) == (task, task, target)
    assert config.data.test is None  # Keel holds out the test split itself
    assert config.data.train.path == f"data/{Path(file).name}"
    assert (made.directory / "data" / Path(file).name).read_bytes() == (SHARED / file).read_bytes()
    for key, value in source.items():
        assert getattr(config.data.train, key) == value
    text = made.config.read_text()
    assert "Keel holds out a test split" in text and "docs/keel-yaml.md" in text
    assert config.evaluate.gates  # a "better than a constant guess" floor for the task


@shared
def test_a_yes_no_target_is_binary_with_the_yes_value_positive(tmp_path: Path) -> None:
    made = init_from_file(tmp_path / "p", SHARED / "student-performance/student-mat.csv", "higher")
    config = load_config(made.config, env="")
    assert config.model.task == "binary"
    assert config.data.positive_label in ("True", "yes")  # as the reader spells the column
    assert config.evaluate.gates == ["roc_auc > 0.5"]


@shared
def test_low_cardinality_text_columns_become_slices(tmp_path: Path) -> None:
    made = init_from_file(tmp_path / "p", SHARED / "palmer-penguins/penguins.csv", "species")
    config = load_config(made.config, env="")
    assert config.evaluate.slices == ["island", "sex"]
    assert config.evaluate.gates == ["accuracy > 0.442"]  # Adelie: 152 of 344 rows


def test_the_rarer_of_two_text_classes_is_positive(tmp_path: Path) -> None:
    rows = [f"{i},{'churn' if i % 5 == 0 else 'stay'}" for i in range(40)]
    made = init_from_file(tmp_path / "p", write_csv(tmp_path / "c.csv", "x,label", rows), "label")
    config = load_config(made.config, env="")
    assert (config.model.task, config.data.positive_label) == ("binary", "churn")
    assert "the rarer class (20% of rows)" in made.config.read_text()


def test_a_zero_one_target_has_positive_label_1(tmp_path: Path) -> None:
    rows = [f"{i},{int(i % 3 == 0)}" for i in range(30)]
    made = init_from_file(tmp_path / "p", write_csv(tmp_path / "c.csv", "x,y", rows), "y")
    assert load_config(made.config, env="").data.positive_label == "1"


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([str(i % 4) for i in range(40)], "multiclass"),  # few whole numbers: classes
        ([str(i % 25) for i in range(40)], "regression"),  # many whole numbers: a quantity
        ([f"{i * 0.37:.2f}" for i in range(40)], "regression"),
        ([("a", "b", "c")[i % 3] for i in range(40)], "multiclass"),
    ],
)
def test_the_task_follows_from_the_target(tmp_path: Path, values: list[str], task: str) -> None:
    rows = [f"{i},{v}" for i, v in enumerate(values)]
    made = init_from_file(tmp_path / "p", write_csv(tmp_path / "c.csv", "x,y", rows), "y")
    assert load_config(made.config, env="").model.task == task
    gate = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "r2"}[task]
    assert load_config(made.config, env="").evaluate.gates[0].startswith(gate)


def test_missing_tokens_are_found_where_they_fill_cells(tmp_path: Path) -> None:
    rows = [f"{i},{'-' if i % 7 == 0 else i * 1.5},{'?' if i % 5 == 0 else 'ab'[i % 2]},-,{i % 2}"
            for i in range(30)]  # fmt: skip
    file = write_csv(tmp_path / "c.csv", "x,num,cat,dash,y", rows)
    made = init_from_file(tmp_path / "p", file, "y")
    config = load_config(made.config, env="")
    # '-' is missing in a numeric column; in the all-'-' text column it is a value
    assert sorted(config.data.train.na_values) == ["-", "?"]
    assert "- in num" in made.config.read_text()


def test_a_headerless_file_lists_its_column_names(tmp_path: Path) -> None:
    file = tmp_path / "raw.csv"
    file.write_text("".join(f"{i},{i * 2.5},{'ab'[i % 2]}\n" for i in range(30)))
    made = init_from_file(tmp_path / "p", file, "column2")
    source = load_config(made.config, env="").data.train
    assert source.header is False and source.columns == ["column0", "column1", "column2"]


def test_parquet(tmp_path: Path) -> None:
    table = pa.table({"a": list(range(50)), "b": [float(i) ** 1.5 for i in range(50)]})
    pq.write_table(table, tmp_path / "t.parquet")
    made = init_from_file(tmp_path / "p", tmp_path / "t.parquet", "b")
    config = load_config(made.config, env="")
    assert (config.data.train.format, config.model.task) == ("parquet", "regression")
    assert "delimiter" not in made.config.read_text()


def test_no_copy_references_the_file_where_it_is(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "c.csv", "x,y", [f"{i},{i % 2}" for i in range(20)])
    made = init_from_file(tmp_path / "p", file, "y", copy=False)
    assert load_config(made.config, env="").data.train.path == str(file.resolve())
    assert not (made.directory / "data").exists()


def test_a_file_inside_the_project_is_referenced_relatively(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "c.csv", "x,y", [f"{i},{i % 2}" for i in range(20)])
    made = init_from_file(tmp_path, file, "y")
    assert load_config(made.config, env="").data.train.path == "c.csv"


def test_names_come_from_the_directory(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "c.csv", "x,y", [f"{i},{i % 2}" for i in range(20)])
    made = init_from_file(tmp_path / "my churn!", file, "y")
    config = load_config(made.config, env="")
    assert (config.project, config.model.name) == ("my-churn", "my-churn")


def test_the_python_api_takes_a_source(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "c.csv", "x,y", [f"{i},{i % 2}" for i in range(20)])
    root = keel.init(tmp_path / "p", source=file, target="y")
    assert load_config(root, env="").model.task == "binary"


# --- errors -------------------------------------------------------------------------------------


def test_unknown_target_lists_the_columns_and_the_closest(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "c.csv", "age,Species", ["1,a", "2,b"])
    with pytest.raises(ConfigError, match=r"Did you mean 'Species'\? Columns: age, Species"):
        init_from_file(tmp_path / "p", file, "species")
    assert not (tmp_path / "p").exists()  # nothing written on an error


def test_a_missing_target_lists_the_columns(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "c.csv", "age,label", ["1,a", "2,b"])
    with pytest.raises(ConfigError, match=r"--target is missing.*Columns of .*: age, label"):
        init_from_file(tmp_path / "p", file, None)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["1,x", "2,x", "3,x"], "has one value in .*'x' in all 3 rows"),
        (["1,", "2,", "3,"], "is empty in"),
        ([f"{i},id-{i}" for i in range(150)], "looks like an id or free text"),
    ],
)
def test_targets_that_cannot_be_learned(tmp_path: Path, rows: list[str], message: str) -> None:
    file = write_csv(tmp_path / "c.csv", "x,y", rows)
    with pytest.raises(ConfigError, match=message):
        init_from_file(tmp_path / "p", file, "y")


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.csv: no such data file"):
        init_from_file(tmp_path / "p", tmp_path / "nope.csv", "y")


def test_an_existing_keel_yaml_needs_force(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "c.csv", "x,y", [f"{i},{i % 2}" for i in range(20)])
    init_from_file(tmp_path / "p", file, "y")
    with pytest.raises(ConfigError, match=r"already exists.*--force"):
        init_from_file(tmp_path / "p", file, "y")
    init_from_file(tmp_path / "p", file, "x", force=True)
    assert load_config(tmp_path / "p", env="").data.target == "x"


def test_a_different_data_file_is_not_overwritten(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "c.csv", "x,y", [f"{i},{i % 2}" for i in range(20)])
    (tmp_path / "p" / "data").mkdir(parents=True)
    (tmp_path / "p" / "data" / "c.csv").write_text("mine\n")
    with pytest.raises(ConfigError, match="already exists and differs"):
        init_from_file(tmp_path / "p", file, "y")
    assert (tmp_path / "p" / "data" / "c.csv").read_text() == "mine\n"


def test_missing_target_values_are_a_warning_in_the_file(tmp_path: Path) -> None:
    rows = [f"{i},{'' if i == 3 else i % 2}" for i in range(20)]
    made = init_from_file(tmp_path / "p", write_csv(tmp_path / "c.csv", "x,y", rows), "y")
    assert made.warnings and "missing in 1 of 20 rows" in made.warnings[0]
    assert "# WARNING: target 'y' is missing in 1 of 20 rows" in made.config.read_text()


# --- the command --------------------------------------------------------------------------------


def test_cli_from_prints_the_task_and_next_step(tmp_path: Path) -> None:
    write_csv(tmp_path / "c.csv", "x,y", [f"{i},{i * 1.5}" for i in range(20)])
    result = keel_cli("init", "p", "--from", "c.csv", "--target", "y", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "regression model of 'y'" in result.stdout and "cd p && keel run" in result.stdout
    assert yaml.safe_load((tmp_path / "p" / "keel.yaml").read_text())["model"]["task"] == (
        "regression"
    )


def test_cli_example_and_from_together_is_a_usage_error(tmp_path: Path) -> None:
    write_csv(tmp_path / "c.csv", "x,y", ["1,2", "2,3"])
    result = keel_cli("init", "p", "--from", "c.csv", "--target", "y", "--example", "adult",
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and "not both" in result.stderr


def test_version(tmp_path: Path) -> None:
    result = keel_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"keel {keel.__version__}"


@pytest.mark.parametrize("example", ["adult", "bike-sharing", "california-housing"])
def test_every_example_loads(tmp_path: Path, example: str) -> None:
    root = keel.init(tmp_path / example, example=example)
    config = load_config(root, env="")
    for source in (config.data.train, config.data.test):
        assert source is not None and source.path is not None
        assert (root / source.path).is_file()
    assert (root / "data" / "SOURCE.md").is_file()


def test_an_unknown_example_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'bike-sharing'"):
        keel.init(tmp_path / "x", example="bike")
