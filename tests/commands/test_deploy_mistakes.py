"""A new user's deployment mistakes on California housing, each answered with what is wrong
and what to do (a trial of `keel deploy`, `keel deployments` and `keel models promote`).

What the trial hit: `--steps`, `--check` or `--interval` given with `--shadow` or `--ab` were
ignored without a word (so was `--sticky-key` with `--shadow`); a blank `--sticky-key` was
stored (it never matches, so nothing stuck); `--interval 1d` was refused although every other
duration in Keel takes days; `--ab 1:50,1:50` said "name two different versions"; the status of
a canary with two checks and its history's measured values ran past 80 columns, showed `every
300s` for `5m`, never showed the sticky key, and an ended canary still counted "bad intervals in
a row 1/2"; promoting or aborting a model whose deployment had ended said only "already ended";
`promote --version 9` did not name the arms to choose from; aborting or promoting without
`--reason` wiped the reason the deployment was started with; `keel deployments list -m TYPO`
printed an empty table; `keel models promote housing 1 --alias prodction` created a new,
unremovable alias instead of asking whether 'production' was meant; `keel tokens list` cut token
ids and days at 80 columns (`3f2bed52…`, `2026-12-…`); `keel feedback` on a file whose labels
sit under the target's name did not say `--label-column median_house_value`; a regression shadow
whose every answer differed read `1` in the disagree column; and the keel.yaml of `keel init
--from` had no `params:` for the "Raise n_estimators" the run advised. One project (2,000 rows,
two versions) is shared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

import keel
from keel.cli import app
from keel.commands.init import init_from_file
from keel.commands.output import out
from keel.errors import ConfigError, ConflictError, KeelError, NotFoundError
from tests.housing import HOUSING, needs_housing, two_versions

pytestmark = needs_housing


@pytest.fixture(scope="module")
def housing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 housing rows, `keel init --from`, two runs: version 2 (more leaves) holds
    production, version 1 is the other arm."""
    project = two_versions(tmp_path_factory.mktemp("deploy"), seed=1)
    with keel.registry(project) as reg:
        assert reg.resolve("housing@production").version == 2
    return project


def _keel(root: Path, *args: str) -> Result:
    return CliRunner().invoke(app, [*args, "-p", str(root)], terminal_width=80)


def _ok(root: Path, *args: str) -> list[str]:
    done = _keel(root, *args)
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    return lines


def _refused(root: Path, *args: str) -> KeelError:
    done = _keel(root, *args)
    assert isinstance(done.exception, KeelError), (done.output, done.exception)
    return done.exception


def _aliases(root: Path) -> dict[str, int]:
    with keel.registry(root) as reg:
        return dict(reg.models()[0].aliases)


def _active(root: Path) -> list[str]:
    found = keel.list_deployments(name="housing", project=root)
    return [d["id"] for d in found if d["status"] == "active"]


@pytest.fixture
def clean(housing: Path) -> Iterator[Path]:
    """The project with no active deployment, before and after the test."""
    for _ in _active(housing):
        keel.abort_deployment("housing", project=housing)
    yield housing
    for _ in _active(housing):
        keel.abort_deployment("housing", project=housing)


def test_options_the_kind_would_ignore_are_refused(clean: Path) -> None:
    cases = {
        ("--shadow", "1", "--steps", "5,50", "--check", "p99_ms<=5"): (
            "--steps, --check do not apply to a shadow deployment"
        ),
        ("--ab", "1:50,2:50", "--interval", "1m"): "--interval does not apply to an A/B",
        ("--ab", "1:50,2:50", "--wait"): "--wait does not apply to an A/B deployment",
        ("--shadow", "1", "--sticky-key", "user_id"): "there is no arm to stick to",
    }
    for args, said in cases.items():
        refused = _refused(clean, "deploy", "housing", *args)
        assert isinstance(refused, ConfigError) and refused.exit_code == 2
        assert said in refused.message and "drop " in refused.message, refused.message
        assert _active(clean) == []  # nothing was started
    # the defaults a user did not type are no reason to refuse
    assert "housing shadow deployment" in _ok(clean, "deploy", "housing", "--shadow", "1")[0]


def test_a_blank_sticky_key_is_refused_and_a_padded_one_trimmed(clean: Path) -> None:
    refused = _refused(clean, "deploy", "housing", "--ab", "1:50,2:50", "--sticky-key", " ")
    assert isinstance(refused, ConfigError) and "names no field" in refused.message
    assert "(e.g. user_id)" in refused.message and _active(clean) == []
    lines = _ok(clean, "deploy", "housing", "--ab", "1:50,2:50,", "--sticky-key", " user_id ")
    assert "  sticky by 'user_id': requests with one value reach one arm" in lines
    shown = keel.deployment_status("housing", project=clean)
    assert shown["spec"]["sticky_key"] == "user_id"  # as the server compares it
    assert [a["weight"] for a in shown["arms"]] == [50.0, 50.0]  # the trailing comma: no arm


def test_ab_names_a_version_given_twice(clean: Path) -> None:
    refused = _refused(clean, "deploy", "housing", "--ab", "1:50,1:50")
    assert isinstance(refused, ConfigError)
    assert "version 1 is named more than once" in refused.message, refused.message


def test_a_canary_reads_in_the_units_it_was_given_within_80_columns(clean: Path) -> None:
    checks = "error_rate<=0.01,p99_ms<=200,p95_ms<=100"
    started = ("deploy", "housing", "--canary", "1", "--interval", "1d", "--check", checks)
    lines = _ok(clean, *started, "-r", "more leaves")
    assert lines[0].endswith(": active (more leaves)")
    assert "  step 1/4 of 5,25,50,100%, every 1d, at least 20 requests each" in lines
    assert "  checks error_rate<=0.01, p99_ms<=200, p95_ms<=100" in lines
    assert "  bad intervals in a row 0/2 (rolled back at 2)" in lines
    assert keel.deployment_status("housing", project=clean)["spec"]["interval_s"] == 86400.0
    refused = _refused(clean, "deploy", "housing", "--canary", "1", "--interval", "2x")
    assert "ms, s, m, h, d, w" in refused.message  # 2x: which units there are
    ended = _ok(clean, "deployments", "abort", "housing")  # no --reason: the first one stays
    assert ended[0].endswith(": aborted (more leaves)"), ended
    assert "  checks error_rate<=0.01, p99_ms<=200, p95_ms<=100" in ended
    assert not any("bad intervals" in line for line in ended), ended  # it counts no more


def test_ending_an_ended_deployment_says_what_to_do(clean: Path) -> None:
    _ok(clean, "deploy", "housing", "--ab", "1:50,2:50")
    wrong = _refused(clean, "deployments", "promote", "housing", "--version", "9")
    assert "name one of its versions: 1, 2." in wrong.message, wrong.message
    _ok(clean, "deployments", "abort", "housing")
    for verb in ("promote", "abort"):
        refused = _refused(clean, "deployments", verb, "housing")
        assert isinstance(refused, ConflictError), refused
        assert "already ended (aborted); 'housing' has no active deployment" in refused.message
        assert "`keel deploy housing --canary VERSION` starts another" in refused.message


def test_a_misspelt_model_has_no_deployments_but_an_error(housing: Path) -> None:
    # a misspelt name is no model at all: an error naming the models (it said "no deployments
    # of 'hosing'", exit 0, as if housing had none)
    refused = _refused(housing, "deployments", "list", "-m", "hosing")
    assert isinstance(refused, NotFoundError), refused
    assert "no model named 'hosing'; known models: housing" in refused.message
    assert _keel(housing, "deployments", "list", "-m", "hosing").exit_code == 1


def test_an_alias_spelt_like_one_the_model_has_is_refused(housing: Path) -> None:
    refused = _refused(housing, "models", "promote", "housing", "1", "--alias", "prodction")
    assert isinstance(refused, ConfigError) and refused.exit_code == 2
    assert "did you mean 'production'?" in refused.message and "--expect none" in refused.message
    aliases = _aliases(housing)
    assert "prodction" not in aliases and aliases["production"] == 2  # nothing moved
    _ok(housing, "models", "promote", "housing", "1", "--alias", "canary-ring")  # not alike
    _ok(housing, "models", "promote", "housing", "1", "--alias", "prodction", "--expect", "none")
    assert _aliases(housing)["prodction"] == 1  # on purpose


def test_tokens_list_keeps_ids_and_days_whole_at_80_columns(
    housing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The id (what `keel tokens revoke` takes) and the day read `3f2bed52…` and `2026-12-…`
    at 80 columns; a long name or expiry wraps instead of being cut."""
    monkeypatch.setattr(out, "width", 80)
    name = "a-rather-long-token-name"
    made = _keel(housing, "tokens", "create", name, "-s", "predict", "-s", "read",
                 "--expires", "90m", "--rate-limit", "600", "--format", "json")  # fmt: skip
    token = json.loads(made.output)
    lines = _ok(housing, "tokens", "list")
    assert all(len(line) <= 80 for line in lines), lines
    (row,) = [line for line in lines if line.startswith(token["id"])]
    assert f"{token['created_at'][:10]} " in row and "600" in row and "…" not in row
    at = lines.index(row)
    rows = [row, *[line for line in lines[at + 1 :] if line.startswith(" ")]]  # its wrapped lines
    column = len(token["id"]) + 1
    assert "".join(line[column:].split(" ")[0] for line in rows) == name  # folded, never cut


def test_feedback_names_the_target_column_a_labels_file_has(housing: Path) -> None:
    """A labels file of the data's own columns carries the label under the target's name."""
    labels = housing / "labels.csv"
    labels.write_text("request_id,median_house_value\n" + "0" * 32 + ",250000\n")
    refused = _refused(housing, "feedback", "housing", "--input", str(labels))
    assert "no column label" in refused.message, refused.message
    assert refused.message.endswith("--label-column median_house_value."), refused.message
    named = _keel(housing, "feedback", "housing", "-i", str(labels), "--label-column",
                  "median_house_value")  # fmt: skip
    assert named.exit_code == 1 and "unknown request id" in named.output  # read; no prediction
    (housing / "ids.csv").write_text("request_id\n" + "0" * 32 + "\n")
    alone = _refused(housing, "feedback", "housing", "--input", str(housing / "ids.csv"))
    assert "no column label" in alone.message and "target" not in alone.message


def test_a_shadows_disagreement_reads_as_a_percentage(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every value of a regression shadow apart read `1` in the disagree column."""
    from keel.project import Project
    from keel.registry.deployments import bucket_of
    from keel.store import deployment_store as ds

    made = keel.deploy("housing", shadow=1, project=clean)
    row = {
        "server": "s1", "deployment_id": made["id"], "version": "1", "role": "shadow",
        "bucket": datetime.now(UTC), "requests": 50, "errors": 0,
        "latency": {str(bucket_of(2.0)): 50}, "compared": 50, "disagreed": 20, "rejected": 0,
    }  # fmt: skip
    with Project(clean) as proj, proj.metadata.database.write() as conn:
        ds.add_stats(conn, [row])
    monkeypatch.setattr(out, "width", 80)
    lines = _ok(clean, "deployments", "status", "housing")
    # its traffic row (the line under the table, "v1 shadow: copies ...", says what became of
    # the shadow's copies)
    (shadow,) = [line for line in lines if line.replace("│", " ").split()[:2] == ["v1", "shadow"]]
    cells = shadow.replace("│", " ").split()
    assert cells[:3] == ["v1", "shadow", "50"] and cells[-1] == "40%", shadow


def test_init_shows_where_the_hyper_parameters_go(tmp_path: Path) -> None:
    """`keel run` said "Raise n_estimators (e.g. to 800)" of a keel.yaml with no params:
    section; the one `keel init --from` writes has it, commented, with the defaults."""
    from keel.config import load_config
    from keel.config.training import LightGBMParams

    pd.read_csv(HOUSING, nrows=500).to_csv(tmp_path / "h.csv", index=False)
    made = init_from_file(tmp_path / "p", tmp_path / "h.csv", "median_house_value")
    path = made.directory / "keel.yaml"
    text = path.read_text()
    default = LightGBMParams()  # the hint's values are the defaults
    hint = "  # params: {n_estimators: 400, learning_rate: 0.05, num_leaves: 31}"
    assert (default.n_estimators, default.learning_rate, default.num_leaves) == (400, 0.05, 31)
    assert hint + "\n" in text and max(len(line) for line in text.splitlines()) <= 100
    path.write_text(text.replace(hint, hint.replace("# ", "").replace("400", "800")))
    params = load_config(made.directory).model.params
    assert (params.n_estimators, params.num_leaves) == (800, 31)  # uncommented, it is read


def test_a_stepped_canarys_history_fits_80_columns(clean: Path) -> None:
    """`stepped by keel-controller  error_rate=0, p99_ms=26.2, requests=26` ran to 95."""
    from datetime import timedelta

    from keel.project import Project
    from keel.registry.deployments import bucket_of
    from keel.registry.rollout import Rollouts
    from keel.store import deployment_store as ds

    made = keel.deploy("housing", canary=1, interval="1s", check="error_rate<=0.01,p99_ms<=50",
                       project=clean)  # fmt: skip
    with Project(clean) as proj:
        started = datetime.fromisoformat(made["interval_started_at"])
        row = {
            "server": "s1", "deployment_id": made["id"], "version": "1", "role": "canary",
            "bucket": started + timedelta(seconds=0.5), "requests": 26, "errors": 0,
            "latency": {str(bucket_of(20.0)): 26}, "compared": 0, "disagreed": 0, "rejected": 0,
        }  # fmt: skip
        with proj.metadata.database.write() as conn:
            ds.add_stats(conn, [row])
        rollouts = Rollouts(proj.metadata.database, actor="keel-controller")
        [decision] = rollouts.tick(started + timedelta(seconds=2))
    assert decision.action == "stepped"
    lines = _ok(clean, "deployments", "status", "housing")  # every line <= 80
    at = next(i for i, line in enumerate(lines) if " stepped " in line)
    assert lines[at].endswith("by keel-controller"), lines
    assert lines[at].split()[2:4] == ["UTC", "stepped"], lines  # its time says its zone
    assert lines[at + 1].startswith("    error_rate=0, p99_ms=2"), lines  # on a line below
    assert lines[at + 1].endswith(", requests=26"), lines
