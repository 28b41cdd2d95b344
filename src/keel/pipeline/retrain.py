"""The closed loop: an alert of the ``retrain.on`` rule retrains with the labelled window and
rolls a version that passes its gates out as a canary.

One policy run (:func:`run_policy`) does, and records, each link of the chain:

1. **Data.** The logged inputs of the predictions made within ``retrain.data.labelled_since``
   that have a live feedback label, with the label as the target, are stored as a ``snapshot``
   artifact (content-addressed, so its sha256 names exactly these rows).
2. **Pipeline.** The project's own pipeline runs with one more step, ``labelled_rows``, after
   validation and before the features step: it appends those rows to the training snapshot
   that the features and train steps read (the test data stays as it was, so the gates judge
   the new model on the same rows as the old; the profile, schema and validation are those of
   the declared training data, and the logged rows were checked against the model's inputs
   when they were served).
   keel.yaml's ``data.train`` is unchanged; the added rows are in the run's lineage (the step's
   output snapshot names the labelled artifact and the alert). The run's trigger is ``event``
   and its reason names the alert.
3. **Gates.** The register step judges the gates as always but, when they pass, moves
   ``retrain.candidate_alias`` instead of ``registry.alias``: the champion comparison still
   reads the alias holder, and production moves only when the canary promotes.
4. **Canary.** A new version that passed its gates becomes a canary deployment with the
   policy's steps, interval, checks and failures; a running ``keel serve`` steps, promotes or
   rolls it back. Its reason links alert -> pipeline run -> version.

The scheduler's ``on: alert`` schedules run the plain pipeline; the policy runs from
``keel monitor run NAME --retrain`` (once, or with ``--every``), which sees the new alerts
themselves and so needs no event cursor of its own.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console

from keel.config import RetrainConfig
from keel.errors import ConfigError, DataValidationError
from keel.pipeline.declare import StepSpec, step
from keel.types import Artifact

if TYPE_CHECKING:
    from keel.project import Project
    from keel.store.alert_store import Alert

__all__ = [
    "LABELLED_STEP",
    "RetrainResult",
    "check_policy",
    "labelled_window",
    "policy_steps",
    "run_for_alerts",
    "run_policy",
]

LABELLED_STEP = "labelled_rows"
"""The step a policy run adds: it appends the labelled window to the training snapshot."""
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "model": self.model,
            "alert_id": self.alert_id,
            "rule": self.rule,
            "status": self.status,
            "rows_added": self.rows_added,
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


def labelled_window(project: Project, name: str, since: float) -> pa.Table:
    """The logged inputs of ``name``'s predictions made at or after ``since`` (epoch seconds)
    that have a live label, with the label in a column named like ``data.target``.

    Memory holds the labels and one log block at a time, plus the matched rows.

    Raises:
        NotFoundError: No model of that name.
    """
    from keel.features.pipeline import FeaturePipeline
    from keel.monitor.feedback import LabelSpec
    from keel.monitor.labelled import (
        Lookup,
        canonical_value,
        joined_key,
        key_arrow_types,
        read_logged,
    )
    from keel.monitor.window import LogFilter
    from keel.store.feedback_store import read_live
    from keel.validate.arrays import from_numpy

    resolved = project.metadata.resolve(name)
    manifest = orjson.loads(project.artifacts.get(resolved.package_sha256))
    inputs = dict(FeaturePipeline.from_state(manifest["features"]).inputs)
    key = tuple(project.config.monitor.feedback.key)
    spec = LabelSpec.of(resolved.name, str(manifest.get("task", "binary")),
                        [str(c) for c in manifest.get("classes", [])], inputs, key)  # fmt: skip
    labels = read_live(project.metadata.database, resolved.name)
    target = project.config.data.target
    by_id = [i for i, label in enumerate(labels) if label.request_id is not None]
    ids = Lookup(
        joined_key([pa.array([str(labels[i].request_id) for i in by_id], pa.string()),
                    from_numpy(np.array([labels[i].instance for i in by_id], dtype=np.int64))]),
        np.array(by_id, dtype=np.int64),
    )  # fmt: skip
    by_key = [i for i, label in enumerate(labels) if label.request_id is None and label.key]
    keys = None
    if by_key and spec.key:
        columns = [
            pa.array([canonical_value((labels[i].key or {}).get(n), t) for i in by_key], t)
            for n, t in spec.key.items()
        ]
        keys = Lookup(joined_key(columns), np.array(by_key, dtype=np.int64))
    types = key_arrow_types(inputs, tuple(inputs))
    parts: list[pa.Table] = []
    chosen: list[np.ndarray] = []
    log_dir = Path(project.predictions_dir)
    for block in read_logged(log_dir, resolved.name, select=LogFilter(since=since), keys=types):
        position, index = ids.find([block.request_id, from_numpy(block.instance.astype(np.int64))])
        if keys is not None:
            more, more_index = keys.find([block.keys.column(n) for n in spec.key])
            fresh = ~np.isin(more, position)
            position = np.concatenate([position, more[fresh]])
            index = np.concatenate([index, more_index[fresh]])
        if position.size:
            parts.append(block.keys.take(pa.array(position)))
            chosen.append(index)
    schema = pa.schema([pa.field(n, t) for n, t in types.items()])
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    picked = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    values = [labels[i].label for i in picked.tolist()]
    if spec.task == "regression":
        column = pa.array(np.asarray(values, dtype=np.float64))
    else:
        column = pa.array([str(v) for v in values], pa.string())
    return table.append_column(target, column)


@step(
    name=LABELLED_STEP,
    inputs={"train_snapshot": "snapshot"},
    outputs={"train_snapshot": "snapshot"},
)
def add_labelled_rows(ctx: Any, train_snapshot: Artifact) -> dict[str, Artifact]:
    """Append the labelled window (``ctx.params['labelled']``, a snapshot's sha256) to the
    training snapshot, each column cast to the training data's type."""
    from keel.data import read_snapshot

    train = read_snapshot(ctx.project.artifacts, train_snapshot)
    added = read_snapshot(ctx.project.artifacts, str(ctx.params["labelled"]))
    columns = []
    for field in train.schema:
        if field.name not in added.column_names:
            columns.append(pa.nulls(added.num_rows, field.type))
            continue
        try:
            columns.append(pc.cast(added.column(field.name), field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            msg = (
                f"retrain: the logged column {field.name!r} does not fit the training data's "
                f"type {field.type} ({exc}); check what clients send for it."
            )
            raise DataValidationError(msg, field=field.name) from exc
    extra = pa.Table.from_arrays(columns, schema=train.schema)
    joined = pa.concat_tables([train, extra])
    ctx.facts.update(rows_added=extra.num_rows, rows=joined.num_rows,
                     labelled=ctx.params["labelled"], alert=ctx.params.get("alert"))  # fmt: skip
    out: Artifact = ctx.put_table(
        joined,
        parent=train_snapshot,
        retrain={"labelled": ctx.params["labelled"], "rows_added": extra.num_rows,
                 "alert": ctx.params.get("alert")},
    )  # fmt: skip
    return {"train_snapshot": out}


def policy_steps(project: Project, labelled: str, alert_id: int) -> list[StepSpec]:
    """The project's pipeline with ``labelled_rows`` after its snapshot steps, and a register
    step that moves ``retrain.candidate_alias`` instead of ``registry.alias``."""
    from keel.pipeline.declare import spec_of
    from keel.pipeline.standard import pipeline_steps

    steps = pipeline_steps(project)
    declared = spec_of(add_labelled_rows)
    assert declared is not None
    extra = replace(declared, params={"labelled": labelled, "alert": alert_id})
    place = next(i for i, s in enumerate(steps) if s.name == _BEFORE)
    steps = [*steps[:place], extra, *steps[place:]]
    return [replace(s, fn=_register_candidate) if s.name == "register" else s for s in steps]


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
    window = labelled_window(project, model, since)
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
        f"+{window.num_rows} labelled rows ({labelled.sha256[:12]})"
    )
    from keel.pipeline.runner import run_steps

    results = run_steps(
        project,
        policy_steps(project, labelled.sha256, alert.id),
        console=console or Console(quiet=True),
        pipeline_run=run_id,
        trigger="event",
        reason=reason,
    )
    registered = next((r for r in results if r.step == "register"), None)
    facts = registered.facts if registered is not None else {}
    found = {"rows_added": window.num_rows, "labelled_sha256": labelled.sha256,
             "pipeline_run": run_id, "version": facts.get("version"),
             "gates": tuple(facts.get("gates", []))}  # fmt: skip
    if facts.get("unchanged") or registered is None or registered.status == "cached":
        return result("unchanged", "the retrained model is identical to the latest version",
                      **found)  # fmt: skip
    if not facts.get("promoted"):
        failed = [g["gate"] for g in facts.get("gates", []) if not g.get("passed")]
        why = f"gates failed: {', '.join(failed)}" if failed else "awaiting approval"
        return result("gates_failed", f"version {facts.get('version')}: {why}; not rolled out",
                      **found)  # fmt: skip
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
        f"version {version} passed its gates; canary {deployment.id} started",
        deployment_id=deployment.id,
        **found,
    )
    _record(project, done)
    return done


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
