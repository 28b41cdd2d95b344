"""The work of Keel's own steps: ingest -> profile -> schema -> validate -> features -> train
-> register. Each reads artifacts and returns artifacts; the runner records them. What each step
reads and writes is declared in :mod:`keel.pipeline.standard`; the ``evaluate`` step is
:mod:`keel.pipeline.evaluate_step`, the training-data preparation :mod:`keel.pipeline.training`,
and what the steps' cache keys read :mod:`keel.pipeline.sections`."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

from keel.config import SourceConfig
from keel.errors import ConfigError, DataValidationError
from keel.pipeline import contract
from keel.pipeline.runner import StepContext
from keel.pipeline.sections import train_section
from keel.pipeline.training import target_labels, training_data
from keel.project import Project
from keel.types import Artifact

if TYPE_CHECKING:  # imported where used: a cached `keel run` needs neither NumPy nor Arrow
    import pyarrow as pa

__all__ = ["SCHEMA_FILE", "coerce_inputs", "read_snapshot", "target_labels", "train_section"]

SCHEMA_FILE = contract.SCHEMA_FILE


def read_snapshot(project: Project, artifact: Artifact) -> pa.Table:
    """The table in a Parquet snapshot artifact (bytes verified against its sha256)."""
    from keel.data import read_snapshot as read

    return read(project.artifacts, artifact)


def _json(project: Project, artifact: Artifact) -> Any:
    return orjson.loads(project.artifacts.get(artifact.sha256))


def _put_json(ctx: StepContext, value: Any, kind: str, **metadata: Any) -> Artifact:
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    return ctx.project.artifacts.put(data, kind=kind, metadata=metadata)


# --- ingest ----------------------------------------------------------------------------------


def _snapshot(ctx: StepContext, source: SourceConfig, split: str) -> dict[str, Artifact]:
    from keel.data import ingest

    result = ingest(source, ctx.project.root, ctx.project, split=split)
    ctx.facts.update(
        rows=result.rows,
        columns=len(result.snapshot.metadata["columns"]),
        new_rows=result.new_rows,
        bad_rows=result.bad_rows,
    )
    if result.skipped_null_watermark:
        ctx.facts["skipped_null_watermark"] = result.skipped_null_watermark
    for warning in result.warnings:
        ctx.warn(warning)
    outputs = {f"{split}_snapshot": result.snapshot}
    if result.quarantine is not None:
        outputs[f"{split}_quarantine"] = result.quarantine
    return outputs


def ingest_train(ctx: StepContext) -> dict[str, Artifact]:
    """CSV/Parquet -> cleaned Parquet snapshot of the training data."""
    return _snapshot(ctx, ctx.project.config.data.train, "train")


def ingest_test(ctx: StepContext) -> dict[str, Artifact]:
    """CSV/Parquet -> cleaned Parquet snapshot of the held-out test data."""
    test = ctx.project.config.data.test
    if test is None:
        raise ConfigError(
            "data.test is not set, so there is no test source to ingest; keel run holds out "
            "split.test_fraction of data.train instead (the 'split' step).",
            field="data.test",
        )
    return _snapshot(ctx, test, "test")


# --- profile and schema ----------------------------------------------------------------------


def profile(ctx: StepContext) -> dict[str, Artifact]:
    """Statistics of the training snapshot; their bins are the reference for drift. Text
    columns that are numbers but for a few stray cells are recorded with them, for the schema
    step to point out (:func:`keel.pipeline.contract.with_strays`)."""
    from keel.validate.statistics import compute_statistics

    # streamed from the verified Parquet file in batches: bounded memory on large snapshots
    snapshot = ctx.project.artifacts.local_path(ctx.inputs["train_snapshot"].sha256)
    statistics = contract.with_strays(compute_statistics(snapshot), snapshot)
    ctx.facts["columns"] = len(statistics["columns"])
    return {"statistics": _put_json(ctx, statistics, "statistics", rows=statistics["rows"])}


def schema(ctx: StepContext) -> dict[str, Artifact]:
    """Infer schema.yaml on first run (for review); afterwards the reviewed file is the contract.

    When the data's columns or types no longer match it, the run stops with the difference and
    ``keel schema infer --update`` (or, with ``schema: auto``, refreshes it and warns).
    """
    from keel.pipeline.contract import check_schema, new_schema_notes, refreshed_message
    from keel.validate.schema import read_schema

    statistics = _json(ctx.project, ctx.inputs["statistics"])
    update = check_schema(ctx.project, statistics)
    if update.changes:
        ctx.warn(refreshed_message(update))
        ctx.facts["refreshed_changes"] = len(update.changes)
    text = (ctx.project.root / SCHEMA_FILE).read_text(encoding="utf-8")
    parsed = read_schema(ctx.project.root / SCHEMA_FILE)
    # the project's first schema run: say what the new schema chose for it (and, on a
    # refresh, what a changed column's new type hides)
    first = len(ctx.project.metadata.list_runs(step="schema", limit=2)) == 1
    created = new_schema_notes(ctx.project, parsed, statistics) if first else ()
    for note in update.notes or created:
        ctx.warn(note)
    target = ctx.project.config.data.target
    if parsed.target() != target:
        raise ConfigError(
            f"{SCHEMA_FILE}: data.target is '{target}' but the schema's target "
            f"column is '{parsed.target()}'. Set role: target on '{target}'."
        )
    ctx.facts["columns"] = len(parsed.columns)
    return {"schema": ctx.project.artifacts.put(text.encode(), kind="schema")}


def _load_schema(project: Project, artifact: Artifact) -> Any:
    import yaml

    from keel.validate.schema import Schema

    return Schema.from_dict(yaml.safe_load(project.artifacts.get(artifact.sha256)))


# --- validate --------------------------------------------------------------------------------


def validate(ctx: StepContext) -> dict[str, Artifact]:
    """Check train against the schema and test against train's statistics; errors stop the run.

    Writes the JSON report and a self-contained HTML report of the test split (per-column
    distributions, train vs test, and every anomaly). Every warning is kept with the run
    (``keel runs show``); the first five are printed. Without ``data.test`` the test side is
    the split's, so its row count is judged against ``split.test_fraction``.
    """
    from keel.validate.anomalies import ExpectedRows, validate_data

    contract = _load_schema(ctx.project, ctx.inputs["schema"])
    reference = _json(ctx.project, ctx.inputs["statistics"])
    config = ctx.project.config
    target = config.data.target
    expected = None
    if config.data.test is None:  # the split step held the test side out of train
        fraction = config.split.test_fraction
        why = f"split.test_fraction {fraction:g}"
        expected = ExpectedRows(ratio=fraction / (1 - fraction), why=why)
    reports = {
        split: validate_data(
            read_snapshot(ctx.project, ctx.inputs[f"{split}_snapshot"]),
            schema=contract,
            reference=reference if split == "test" else None,
            target=target,
            name=split,
            expected_rows=expected if split == "test" else None,
        )
        for split in ("train", "test")
    }
    found = [a.to_dict() | {"split": s} for s, r in reports.items() for a in r.anomalies]
    errors = [a for a in found if a["severity"] == "error"]
    # inputs that name rows (the project's mistake) first, then the rest in the order found
    warned = sorted((a for a in found if a["severity"] == "warning"),
                    key=lambda a: a["kind"] != "id_feature")  # fmt: skip
    ctx.warn_all([a["message"] for a in warned])
    summary = {"ok": not errors, "anomalies": found}
    ctx.facts.update(errors=len(errors), warnings=len(found) - len(errors))
    html = ctx.project.artifacts.put(
        reports["test"].to_html().encode(), kind="report", metadata={"report": "validation"}
    )
    ctx.project.metadata.record_artifact(html)
    if errors:
        lines = "\n".join(f"  - [{a['split']}] {a['message']}" for a in errors)
        raise DataValidationError(
            f"data validation failed with {len(errors)} blocking anomalies:\n{lines}\n"
            f"Fix the data, or edit {SCHEMA_FILE} if it is too strict. HTML report: "
            f"{ctx.project.artifacts.uri(html.sha256)}",
            details=summary,
        )
    return {"validation": _put_json(ctx, summary, "validation"), "validation_report": html}


# --- features, train, evaluate ---------------------------------------------------------------


def features(ctx: StepContext) -> dict[str, Artifact]:
    """Fit the feature pipeline on the training snapshot; its state is JSON.

    Columns get the defaults of ``features`` in keel.yaml unless ``features.transforms``
    declares their chain; ``features.custom`` functions are imported with the project
    directory on ``sys.path``. The target is passed to the fit when a chain target-encodes.
    """
    from keel.features.custom import importable_from
    from keel.features.pipeline import FeaturePipeline
    from keel.validate.coerce import Coercer

    contract = _load_schema(ctx.project, ctx.inputs["schema"])
    table = read_snapshot(ctx.project, ctx.inputs["train_snapshot"])
    names = contract.features()
    if not names:
        raise ConfigError(_no_inputs_message(contract, ctx.project.config.data.drop))
    inputs = {name: contract.columns[name].type for name in names}
    cfg = ctx.project.config.features
    pipe = FeaturePipeline(
        inputs=inputs,
        numeric_impute=cfg.numeric_impute,
        categorical_impute=cfg.categorical_impute,
        scale=cfg.scale,
        max_categories=cfg.max_categories,
        transforms=[t.model_dump() for t in cfg.transforms],
        custom=[c.model_dump() for c in cfg.custom],
        rules=Coercer.from_schema(contract, names).state(),
    )
    encodes = any(s.kind == "target_encode" for t in cfg.transforms for s in t.steps)
    y = target_labels(ctx.project, table)[0] if encodes else None
    coerced = coerce_inputs(ctx, pipe, table, "train")
    with importable_from(ctx.project.root):
        pipe.fit(coerced, y)
    ctx.facts.update(inputs=len(inputs), features=pipe.n_features_)
    return {"features": _put_json(ctx, pipe.state(), "features")}


def _no_inputs_message(contract: Any, drop: list[str]) -> str:
    """Why no column is left for the model to learn from, and how to give one back."""
    dropped = [name for name in drop if name in contract.columns]
    roles = {
        name: column.role
        for name, column in contract.columns.items()
        if column.role not in ("target", "feature", "sensitive") and name not in dropped
    }
    reasons = []
    if dropped:
        reasons.append(f"keel.yaml's data.drop sets aside {', '.join(dropped)}")
    if roles:
        said = ", ".join(f"{name} (role: {role})" for name, role in roles.items())
        reasons.append(f"{SCHEMA_FILE} gives {said}")
    why = "; ".join(reasons) or "the data has no column but the target"
    fixes = []
    if dropped:
        fixes.append("delete a column's line from keel.yaml's data.drop")
    if roles:
        fixes.append(f"set 'role: feature' on a column in {SCHEMA_FILE}")
    fix = " or ".join(fixes) or "add input columns to the data"
    return (
        f"no model inputs: every column but the target '{contract.target()}' is set aside "
        f"({why}). A model needs at least one input: {fix}, then run keel run again."
    )


#: Coercion findings the validate step reports on the same snapshot, from the same training
#: data (schema.yaml's ranges and domains): said once, there.
VALIDATED_KINDS = frozenset({"out_of_range", "unseen_category"})


def coerce_inputs(
    ctx: StepContext, pipe: Any, table: pa.Table, split: str, *, validated: bool = False
) -> Any:
    """The model inputs of ``table`` through the pipeline's coercion rules (the same ones
    serving applies); what did not fit is a run warning, or stops the run when it is an error.
    ``validated``: the validate step checked this snapshot, so its range and category findings
    (:data:`VALIDATED_KINDS`) are not warned twice in two wordings."""
    coerced = pipe.coerce(table)
    for issue in coerced.warnings:
        if validated and issue.kind in VALIDATED_KINDS:
            continue
        ctx.warn(f"{split} data: {issue.message} ({issue.count} rows; {issue.kind})")
    coerced.raise_errors(f"{split} data: ")
    return coerced


def train(ctx: StepContext) -> dict[str, Artifact]:
    """Train ``model.flavor`` (or the tuned ``best_params``) on the transformed training data,
    early stopping on the ``split:`` validation rows; k-fold CV first when ``split.folds``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from keel.settings import executor_settings
    from keel.train import fit
    from keel.train.bundle import put_bundle
    from keel.train.ray_train import (
        DATA_PARALLEL_FLAVORS,
        check_data_parallel,
        fit_data_parallel,
    )
    from keel.train.splits import cross_validate

    project, cfg = ctx.project, ctx.project.config
    data = training_data(project, ctx.inputs["train_snapshot"], ctx.inputs["features"])
    x, y, classes, weights = data.x, data.y, data.classes, data.weights
    flavor: str = cfg.model.flavor
    params = cfg.model.param_mapping()
    if "best_params" in ctx.inputs:
        best = _json(project, ctx.inputs["best_params"])
        flavor, params = str(best["flavor"]), dict(best["params"])
    # executor: ray with resources.workers > 1: the final fit runs data-parallel on Ray Train
    # (cross-validation stays local). A flavor AutoML picked that cannot fits in process; one
    # the user named fails here, before any work.
    executor, address = executor_settings(cfg)
    workers = cfg.resources.workers if executor == "ray" else 1
    if cfg.model.flavor != "auto":
        check_data_parallel(flavor, workers)
    parallel = workers > 1 and flavor in DATA_PARALLEL_FLAVORS
    split, task = cfg.split, cfg.model.task
    common: dict[str, Any] = {
        "flavor": flavor,
        "task": task,
        "params": params,
        "seed": cfg.model.seed,
    }
    stopping = cfg.model.early_stopping_rounds
    if split.folds:
        cv = cross_validate(
            x,
            y,
            **common,
            folds=split.folds,
            method=split.method,
            values=data.values,
            column=split.column,
            sample_weight=weights,
            early_stopping_rounds=stopping,
            validation_fraction=cfg.model.validation_fraction,
        )
        ctx.facts["cv"] = cv
    fit_rows, valid_rows = data.fit_rows, data.valid_rows
    total = int(params.get("n_estimators", params.get("epochs", 1)) or 1)
    columns = [
        TextColumn("  train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} iterations"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=ctx.console, transient=True) as progress:
        bar = progress.add_task("train", total=total)
        arguments: dict[str, Any] = {
            **common,
            "x_valid": x[valid_rows],
            "y_valid": y[valid_rows],
            "early_stopping_rounds": stopping,
            "sample_weight": None if weights is None else weights[fit_rows],
            "on_iteration": lambda i, _: progress.update(bar, completed=i, total=max(total, i)),
        }
        if parallel:
            result = fit_data_parallel(x[fit_rows], y[fit_rows], **arguments, workers=workers,
                                       resources=cfg.resources, address=address)  # fmt: skip
        else:
            result = fit(x[fit_rows], y[fit_rows], **arguments)
    facts = dict(result.facts, executor=executor, workers=result.facts.get("workers", 1))
    if stopping and result.best_iteration is not None and result.best_iteration >= total > 1:
        knob = "n_estimators" if "n_estimators" in params else "epochs"
        ctx.warn(
            f"early stopping never stopped: the best iteration is the last one "
            f"({result.best_iteration} of model.params.{knob} {total}), so the model may still "
            f"be improving. Raise {knob} (e.g. to {2 * total})."
        )
    if split.folds:
        facts["metrics"] |= {f"cv_{k}": v for k, v in ctx.facts["cv"]["mean"].items()}
    ctx.facts.update(facts, classes=classes, split=split.model_dump(mode="json"))
    model = put_bundle(project.artifacts, result.model, task=task, classes=classes, facts=facts)
    return {"model": model}


# --- register --------------------------------------------------------------------------------


def register(ctx: StepContext) -> dict[str, Artifact]:
    """Package the model, register it as a new version, move the alias if the gates pass."""
    from keel.errors import KeelError
    from keel.evaluate.evaluation import Evaluation
    from keel.registry.card import store_cards
    from keel.registry.package import build_package
    from keel.registry.registry import Registry
    from keel.train.bundle import load_bundle

    project, cfg = ctx.project, ctx.project.config
    evaluation = _json(project, ctx.inputs["evaluation"])
    lineage = {name: a.sha256 for name, a in ctx.inputs.items()}
    _, bundle, files = load_bundle(project.artifacts, ctx.inputs["model"])
    state = _json(project, ctx.inputs["features"])
    same = _same_as_latest(project, cfg.model.name, files[bundle["model_file"]], state)
    if same is not None:  # byte-identical model and features: nothing new to register
        number, existing = same
        ctx.facts.update(version=number, unchanged=True, promoted=False, gates=[], alias=None)
        _judge_unchanged(ctx, number, evaluation)
        return {"package": existing}
    package = build_package(
        project.artifacts,
        name=cfg.model.name,
        flavor=bundle["flavor"],
        task=bundle["task"],
        model_files=files,
        model_file=bundle["model_file"],
        pipeline_state=state,
        classes=evaluation["classes"],
        metrics=evaluation["metrics"] | {"slices": evaluation["slices"]},
        statistics=_json(project, ctx.inputs["statistics"]),
        lineage={"artifacts": lineage},
    )
    project.metadata.record_artifact(package)
    if cfg.registry.sign:  # Ed25519 over the manifest (KEEL_SIGNING_KEY), before it is visible
        from keel.registry.signing import sign_package

        sign_package(project, package.sha256)
    # Through the registry: audited, evented (webhooks), and honouring registry.approvals.
    registry = Registry(project.metadata.database, cfg.registry)
    version = registry.register(
        cfg.model.name,
        package_sha256=package.sha256,
        run_id=ctx.run_id,
        metrics=evaluation["metrics"],
    )
    try:  # the card (Markdown + HTML) is a view of what is stored: it never undoes the version
        store_cards(project, project.metadata.resolve(f"{cfg.model.name}@{version.version}"))
    except (KeelError, OSError, ValueError) as exc:
        ctx.warn(f"model card not stored ({exc}); 'keel models card' renders it on demand")
    # every gate's verdict was judged and stored with the evaluation (keel.evaluate.gates)
    gates = [g.to_json() for g in Evaluation.from_json(evaluation).gates]
    ctx.facts.update(version=version.version)
    _promote(ctx, registry, version.version, gates)
    return {"package": package}


def _promote(ctx: StepContext, registry: Any, version: int, gates: list[dict[str, Any]]) -> None:
    """Move registry.alias to ``version`` when every gate passed (or open the request that
    approvals need); the outcome goes to the step's facts."""
    from keel.registry.records import PromotionRequest

    cfg = ctx.project.config
    promoted = all(g["passed"] for g in gates)
    pending: str | None = None
    running = _deployment_under(registry, cfg.model.name, cfg.registry.alias) if promoted else None
    if running is not None:  # the alias names a running deployment's primary: leave it
        promoted = False
        ctx.facts.update(deployment=running.id)
        ctx.warn(
            f"{cfg.registry.alias} not moved to version {version}: {running.kind} deployment "
            f"{running.id} of {cfg.model.name} is running with version {running.spec.primary} "
            f"as its primary, which moving the alias would change under it. End it first "
            f"(keel deployments promote|abort {cfg.model.name}), then: keel models promote "
            f"{cfg.model.name} {version} --alias {cfg.registry.alias}."
        )
    if promoted:
        outcome = registry.promote(
            cfg.model.name,
            version,
            alias=cfg.registry.alias,
            reason="gates passed: " + ", ".join(g["gate"] for g in gates),
        )
        if isinstance(outcome, PromotionRequest):  # the alias needs approvals: it waits
            promoted, pending = False, outcome.id
    ctx.facts.update(gates=gates, promoted=promoted, alias=cfg.registry.alias if promoted else None)
    if pending is not None:
        ctx.facts.update(pending_request=pending)


def _deployment_under(registry: Any, name: str, alias: str) -> Any:
    """The active deployment of ``name`` whose primary is the version ``alias`` holds (a
    canary, shadow or A/B test routes from it), else None."""
    from keel.errors import NotFoundError
    from keel.registry.rollout import Rollouts

    try:
        holder = registry.resolve(f"{name}@{alias}").version
    except NotFoundError:
        return None
    active = Rollouts(registry.database, alias=alias).active()
    return next((d for d in active if d.name == name and d.spec.primary == holder), None)


def _judge_unchanged(ctx: StepContext, version: int, evaluation: dict[str, Any]) -> None:
    """The gates of a rerun whose model is the latest version's, byte for byte.

    A version that failed its gates and never held registry.alias takes it once the gates it
    is judged by now pass (the user fixed a gate, not the model); a version that held the alias
    and was moved off it (a rollback) is not moved back by a rerun: a warning says how.
    """
    from keel.errors import NotFoundError
    from keel.evaluate.evaluation import Evaluation
    from keel.registry.registry import Registry

    cfg = ctx.project.config
    gates = [g.to_json() for g in Evaluation.from_json(evaluation).gates]
    ctx.facts.update(gates=gates)
    if not all(g["passed"] for g in gates):
        return
    registry = Registry(ctx.project.metadata.database, cfg.registry)
    name, alias = cfg.model.name, cfg.registry.alias
    try:
        if registry.resolve(f"{name}@{alias}").version == version:
            return  # it holds the alias already
    except NotFoundError:
        pass  # no version holds it
    moves = registry.alias_history(name, alias, limit=10_000)
    if any(move.version == version for move in moves):
        ctx.warn(
            f"version {version} passes its gates but was moved off {name}@{alias} before; "
            f"a rerun does not move it back: keel models promote {name} {version} --alias "
            f"{alias}"
        )
        return
    _promote(ctx, registry, version, gates)


def _same_as_latest(
    project: Project, name: str, model: bytes, features: Any
) -> tuple[int, Artifact] | None:
    """The latest version and its package when its model file and feature pipeline are this
    run's, byte for byte (a rerun with --no-cache, or a change that did not reach the model)."""
    from keel.errors import NotFoundError
    from keel.registry.package import model_file_of

    try:
        versions = project.metadata.list_versions(name)
    except NotFoundError:
        return None
    if not versions:
        return None
    latest = versions[-1]
    manifest = orjson.loads(project.artifacts.get(latest.package_sha256))
    recorded = manifest["files"][model_file_of(manifest)]["sha256"]
    if recorded != hashlib.sha256(model).hexdigest() or manifest["features"] != features:
        return None
    return latest.version, project.metadata.get_artifact(latest.package_sha256)
