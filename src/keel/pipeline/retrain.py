"""The closed loop: an alert of the ``retrain.on`` rule retrains with the labelled rows and
rolls a version that passes its gates out as a canary.

One policy run (:func:`run_policy`) does, and records, each link of the chain:

1. **Data.** The logged inputs of the predictions made within ``retrain.data.labelled_since``
   that have a live feedback label, with the label as the target and each row's request id and
   instance (:func:`keel.pipeline.labelled_rows.labelled_window`). **They accumulate across
   policy runs:** the rows of the model's previous policy run (the labelled snapshot its
   ``retrain`` event names) are joined to them, de-duplicated by request id and instance with
   the newest label winning, and sorted by them, so run k's snapshot holds run k-1's rows (a row
   that left the span is kept) and the same rows give the same bytes, hence the same cached
   pipeline. The result is stored as a ``snapshot`` artifact (content-addressed: its sha256
   names exactly these rows).
2. **Pipeline.** The project's own pipeline runs with one more step, ``labelled_rows``, after
   validation and before the features step. It checks each labelled row against the training
   schema (the schema step's artifact) before it is used: a value of the wrong type, a null the
   schema forbids, a missing label, or (where schema.yaml makes them errors) a value outside
   the schema's range or categories excludes the row, and the excluded rows are counted per
   reason in the step's facts, the run's warnings, the training snapshot's ``retrain`` metadata
   and this run's result. The rows that pass are appended to the training snapshot that the
   features and train steps read, except those equal (feature values and label) to a test row:
   they are left out and counted (``rows_equal_to_test``), so the model is never trained on the
   rows it is judged on. With a declared ``data.test`` the test data stays as it was, so the
   gates judge the new model on the same rows as the old; without one, the declared training
   data is split as in ``keel run`` (the same original test rows in every retrain) and the
   split's rule sends a share of the labelled rows to the test side (``rows_to_test``), each
   row to the same side in every retrain, so the champion comparison also sees production's
   distribution (:mod:`keel.pipeline.labelled_rows`). Schema and validation are those of the
   declared training data; the version's statistics, which monitoring compares served rows
   with, are those of the rows it trained on (``profile_trained``: declared + labelled), so a
   shift the retrain learned is not an alert again. keel.yaml's ``data.train`` is unchanged;
   the added rows are in the run's lineage (the step's output snapshots name the labelled
   artifact and the alert). The run's trigger is ``event`` and its reason names the alert.
3. **Gates.** The register step judges the gates as always but, when they pass, moves
   ``retrain.candidate_alias`` instead of ``registry.alias``: the champion comparison still
   reads the alias holder, and production moves only when the canary promotes.
4. **Canary.** A new version that passed its gates becomes a canary deployment with the
   policy's steps, interval, checks and failures; a running ``keel serve`` steps, promotes or
   rolls it back. Its reason links alert -> pipeline run -> version.

Every run that ran the pipeline is recorded in one ``retrain`` event (the chain, and the
labelled snapshot the next run carries on). The policy runs from ``keel monitor run NAME
--retrain`` (once, or with ``--every``), from :func:`keel.api.retrain`, and from the scheduler:
an ``on: alert`` schedule whose new alerts include one of the ``retrain.on`` rule runs the
policy instead of the plain pipeline.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from rich.console import Console

from keel.config import RetrainConfig
from keel.errors import ConfigError
from keel.pipeline.declare import StepSpec, lazy_step
from keel.pipeline.labelled_rows import LABELLED_STEP, add_labelled_rows, labelled_window
from keel.types import Artifact

if TYPE_CHECKING:
    from keel.project import Project
    from keel.store.alert_store import Alert

__all__ = [
    "LABELLED_STEP",
    "RetrainResult",
    "check_policy",
    "policy_steps",
    "run_for_alerts",
    "run_policy",
]

_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIDES = ("rows_equal_to_test", "rows_to_test", "rows_equal_to_train")
"""Where the labelled rows went besides training (the ``labelled_rows`` step's facts)."""
_BEFORE = "features"
"""``labelled_rows`` runs right before this step: after validation, which checks the declared
training data against its schema (the logged rows were checked against the model's inputs when
they were served, and lack the columns ``data.drop`` removes)."""


@dataclass(frozen=True, slots=True)
class RetrainResult:
    """One policy run: the chain alert -> labelled rows -> pipeline run -> version -> canary.

    ``status``: ``canary`` (a canary started), ``gates_failed`` (a version, not rolled out),
    ``unchanged`` (the model came out byte-identical: no new version), ``no_data`` (fewer
    labelled rows than ``retrain.data.min_rows``: nothing ran), ``deployment_active`` (the
    model has an active deployment, named in ``deployment_id``: nothing ran).
    ``rows_added``: labelled rows appended to the training data (after the schema check);
    ``rows_excluded``/``excluded``: rows the training schema refused, per reason;
    ``rows_carried``: rows that came from the previous policy run only;
    ``rows_equal_to_test``: rows left out of training because their feature values and label
    equal a test row's; ``rows_to_test``: rows the split's rule sent to the test side (without
    ``data.test``), ``rows_equal_to_train`` of them kept off it (equal to a training row).
    """

    model: str
    alert_id: int
    rule: str
    status: str
    rows_added: int
    labelled_sha256: str | None
    pipeline_run: str | None
    version: int | None
    gates: tuple[Mapping[str, Any], ...]
    deployment_id: str | None
    message: str
    rows_excluded: int = 0
    excluded: Mapping[str, int] = field(default_factory=dict)
    rows_carried: int = 0
    rows_equal_to_test: int = 0
    rows_to_test: int = 0
    rows_equal_to_train: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "model": self.model,
            "alert_id": self.alert_id,
            "rule": self.rule,
            "status": self.status,
            "rows_added": self.rows_added,
            "rows_excluded": self.rows_excluded,
            "excluded": dict(self.excluded),
            "rows_carried": self.rows_carried,
            "rows_equal_to_test": self.rows_equal_to_test,
            "rows_to_test": self.rows_to_test,
            "rows_equal_to_train": self.rows_equal_to_train,
            "labelled_sha256": self.labelled_sha256,
            "pipeline_run": self.pipeline_run,
            "version": self.version,
            "gates": [dict(g) for g in self.gates],
            "deployment_id": self.deployment_id,
            "message": self.message,
        }


def check_policy(project: Project) -> RetrainConfig:
    """The project's policy, its canary settings checked (each error names its field).

    Raises:
        ConfigError: No ``retrain:`` section, or a bad steps, interval or checks value.
    """
    from keel.registry.deployments import parse_checks, parse_interval, parse_steps

    policy = project.config.retrain
    if policy is None:
        msg = (
            "keel.yaml has no retrain: policy for --retrain; add one, e.g.\nretrain:\n"
            "  on: NAME_OF_A_MONITOR_ALERTS_RULE\n  data: {labelled_since: 30d}\n"
            "  then: canary\n  steps: 25,100\n  interval: 5m"
        )
        raise ConfigError(msg, field="retrain")
    for name, value, parse in (
        ("steps", policy.steps, parse_steps),
        ("interval", policy.interval, parse_interval),
        ("checks", policy.checks, parse_checks),
    ):
        try:
            parse(value)
        except ConfigError as exc:
            raise ConfigError(f"retrain.{name}: {exc.message}", field=f"retrain.{name}") from exc
    if policy.candidate_alias == project.config.registry.alias:
        msg = (
            f"retrain.candidate_alias is {policy.candidate_alias!r}, the registry.alias the "
            "canary promotes to; give the candidates another alias (default: candidate)."
        )
        raise ConfigError(msg, field="retrain.candidate_alias")
    return policy


def policy_steps(
    project: Project, labelled: str, alert_id: int, carried: int = 0
) -> list[StepSpec]:
    """The project's pipeline with ``labelled_rows`` after its snapshot steps, and a register
    step that moves ``retrain.candidate_alias`` instead of ``registry.alias``.

    Without ``data.test`` (a ``split`` step), ``labelled_rows`` writes the test side too: the
    split's rule sends some labelled rows to it. Its cache key holds the labelled snapshot and
    the split settings (its params are not part of the key: without them a new window would
    reuse the previous window's training data)."""
    from keel.pipeline.declare import spec_of
    from keel.pipeline.standard import pipeline_steps

    steps = pipeline_steps(project)
    declared = spec_of(add_labelled_rows)
    assert declared is not None
    split = project.config.split
    holdout = (
        {"method": split.method, "test_fraction": split.test_fraction, "seed": split.seed,
         "column": split.column}
        if any(s.name == "split" for s in steps) else None
    )  # fmt: skip
    extra = replace(
        declared,
        params={"labelled": labelled, "alert": alert_id, "carried": carried, "holdout": holdout},
        section=lambda _: {"labelled": labelled, "holdout": holdout},
    )
    if holdout is None:  # a declared data.test: the test rows stay as declared
        extra = replace(extra, outputs=tuple(o for o in extra.outputs if o.name != "test_snapshot"))
    place = next(i for i, s in enumerate(steps) if s.name == _BEFORE)
    steps = [*steps[:place], extra, _PROFILE_TRAINED, *steps[place:]]
    return [replace(s, fn=_register_candidate) if s.name == "register" else s for s in steps]


_PROFILE_TRAINED = lazy_step(
    "keel.pipeline.steps:profile",
    name="profile_trained",
    inputs={"train_snapshot": "snapshot", "statistics": "statistics"},  # refines the profile
    outputs={"statistics": "statistics"},
)
"""The statistics of the rows the new version trains on (declared + labelled): the package's
drift reference. Validation above judged the labelled rows against the declared data's."""


def _register_candidate(ctx: Any) -> dict[str, Artifact]:
    """Keel's register step with ``retrain.candidate_alias`` standing in for the alias."""
    from keel.pipeline.steps import register

    project = ctx.project
    policy = project.config.retrain
    assert policy is not None
    saved = project.config
    registry = saved.registry.model_copy(update={"alias": policy.candidate_alias})
    project.config = saved.model_copy(update={"registry": registry})
    try:
        return register(ctx)
    finally:
        project.config = saved


def run_policy(project: Project, alert: Alert, *, console: Console | None = None) -> RetrainResult:
    """Run the retraining policy for ``alert`` (see the module's docstring).

    Raises:
        ConfigError: No policy, or bad canary settings (named).
    """
    from keel.registry.rollout import Rollouts

    policy = check_policy(project)
    model = project.config.model.name

    def result(status: str, message: str, **found: Any) -> RetrainResult:
        values: dict[str, Any] = {"rows_added": 0, "labelled_sha256": None, "pipeline_run": None,
                                  "version": None, "gates": (), "deployment_id": None}  # fmt: skip
        values |= found
        return RetrainResult(model, alert.id, alert.rule, status, message=message, **values)

    rollouts = Rollouts(project.metadata.database, project.config.registry,
                        actor="keel-retrain", alias=project.config.registry.alias)  # fmt: skip
    busy = [d.id for d in rollouts.active() if d.name == model]
    if busy:
        return result(
            "deployment_active",
            f"deployment {busy[0]} of {model} is still active; not retrained (the next alert "
            "after it ends retrains)",
            deployment_id=busy[0],
        )
    since = time.time() - _span_seconds(policy.data.labelled_since)
    window, carried = _with_previous(project, model, labelled_window(project, model, since))
    if window.num_rows < policy.data.min_rows:
        return result(
            "no_data",
            f"{window.num_rows} labelled row(s) within {policy.data.labelled_since}; "
            f"retrain.data.min_rows is {policy.data.min_rows}: not retrained",
            rows_added=window.num_rows,
        )
    labelled = _store_window(project, window, alert)
    run_id = uuid.uuid4().hex
    reason = (
        f"retrain policy: alert #{alert.id} ({alert.rule}) on {alert.model}@{alert.version}; "
        f"{window.num_rows} labelled rows offered ({labelled.sha256[:12]}, {carried} carried "
        "from the previous policy run; the labelled_rows step says which trained)"
    )
    from keel.pipeline.runner import run_steps

    results = run_steps(
        project,
        policy_steps(project, labelled.sha256, alert.id, carried),
        console=console or Console(quiet=True),
        pipeline_run=run_id,
        trigger="event",
        reason=reason,
    )
    registered = next((r for r in results if r.step == "register"), None)
    facts = registered.facts if registered is not None else {}
    added = next((r.facts for r in results if r.step == LABELLED_STEP), {})
    found = {"rows_added": int(added.get("rows_added", window.num_rows)),
             "rows_excluded": int(added.get("rows_excluded", 0)),
             "excluded": dict(added.get("excluded", {})), "rows_carried": carried,
             **{k: int(added.get(k, 0)) for k in _SIDES},
             "labelled_sha256": labelled.sha256, "pipeline_run": run_id,
             "version": facts.get("version"), "gates": tuple(facts.get("gates", []))}  # fmt: skip
    if facts.get("unchanged") or registered is None or registered.status == "cached":
        done = result("unchanged", "the retrained model is identical to the latest version"
                      + _rows_note(found), **found)  # fmt: skip
        _record(project, done)
        return done
    if not facts.get("promoted"):
        failed = [g["gate"] for g in facts.get("gates", []) if not g.get("passed")]
        why = f"gates failed: {', '.join(failed)}" if failed else "awaiting approval"
        done = result("gates_failed", f"version {facts.get('version')}: {why}; not rolled out"
                      + _rows_note(found), **found)  # fmt: skip
        _record(project, done)
        return done
    version = int(facts["version"])
    from keel.registry.deployments import parse_checks, parse_interval, parse_steps

    deployment = rollouts.canary(
        model,
        version,
        steps=parse_steps(policy.steps),
        interval_s=parse_interval(policy.interval),
        checks=parse_checks(policy.checks),
        failures=policy.failures,
        min_requests=policy.min_requests,
        reason=f"retrain: alert #{alert.id} ({alert.rule}) -> pipeline run {run_id} -> "
        f"version {version} (+{window.num_rows} labelled rows)",
    )
    done = result(
        "canary",
        f"version {version} passed its gates; canary {deployment.id} started" + _rows_note(found),
        deployment_id=deployment.id,
        **found,
    )
    _record(project, done)
    return done


def _rows_note(found: Mapping[str, Any]) -> str:
    """Where the labelled rows went, for a result's message."""
    parts = [f"{found['rows_added']} labelled rows trained"]
    if found["rows_to_test"]:
        parts.append(f"{found['rows_to_test']} to the test side")
    if found["rows_equal_to_test"]:
        parts.append(f"left out: {found['rows_equal_to_test']} equal to test rows")
    if found["rows_excluded"]:
        parts.append(f"{found['rows_excluded']} refused by the training schema")
    return f" ({'; '.join(parts)})"


def _with_previous(project: Project, model: str, window: pa.Table) -> tuple[pa.Table, int]:
    """The labelled window joined to the previous policy run's rows (see the module's docs)."""
    from keel.data import read_snapshot
    from keel.errors import KeelError
    from keel.pipeline.labelled_rows import accumulate, previous_labelled

    sha = previous_labelled(project, model)
    previous = None
    if sha is not None:
        try:
            previous = read_snapshot(project.artifacts, sha)
        except KeelError:  # removed by gc or changed on disk: start afresh
            previous = None
    return accumulate(window, previous)


def _record(project: Project, done: RetrainResult) -> None:
    """The chain in one ``retrain`` event (``events`` table, subject: the model): alert ->
    labelled rows -> pipeline run -> version -> deployment."""
    import sqlalchemy as sa

    from keel.store.tables import events, utc_now

    row = {"kind": "retrain", "subject": done.model, "payload": done.to_dict()}
    with project.metadata.database.write() as conn:
        conn.execute(sa.insert(events).values(**row, created_at=utc_now()))


def _store_window(project: Project, window: pa.Table, alert: Alert) -> Artifact:
    """The labelled window as a ``snapshot`` artifact, recorded in the metadata store."""
    import tempfile

    import pyarrow.parquet as pq

    from keel.data.snapshots import schema_fingerprint

    with tempfile.TemporaryDirectory(prefix="keel-retrain-") as tmp:
        path = Path(tmp) / "labelled.parquet"
        pq.write_table(window, path, compression="zstd")
        artifact = project.artifacts.put(
            path,
            kind="snapshot",
            metadata={
                "rows": window.num_rows,
                "columns": window.column_names,
                "schema_fingerprint": schema_fingerprint(window.schema),
                "source": f"feedback-labelled predictions of {alert.model}",
                "alert": alert.id,
            },
        )
    project.metadata.record_artifact(artifact)
    return artifact


def _span_seconds(text: str) -> int:
    found = re.match(r"^\s*(\d+)\s*([smhdw])\s*$", text.lower())
    assert found is not None  # checked by RetrainDataConfig
    return int(found.group(1)) * _SECONDS[found.group(2)]


def run_for_alerts(
    project: Project, alerts: Sequence[Alert], *, console: Console | None = None
) -> list[RetrainResult]:
    """Run the policy once for the newest of ``alerts`` from the ``retrain.on`` rule (one
    retraining per pass: several alerts of one check describe the same problem)."""
    policy = check_policy(project)
    matching = [a for a in alerts if a.rule == policy.on]
    if not matching:
        return []
    return [run_policy(project, max(matching, key=lambda a: a.id), console=console)]
