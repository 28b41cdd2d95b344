"""The work of Keel's own steps: ingest -> profile -> schema -> validate -> features -> train
-> evaluate -> register. Each reads artifacts and returns artifacts; the runner records them.
What each step reads and writes is declared in :mod:`keel.pipeline.standard`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from keel.config import SourceConfig
from keel.errors import ConfigError, DataValidationError
from keel.pipeline import contract
from keel.pipeline.runner import StepContext
from keel.project import Project
from keel.types import Artifact

if TYPE_CHECKING:  # imported where used: a cached `keel run` needs neither NumPy nor Arrow
    import numpy as np
    import pyarrow as pa

__all__ = ["SCHEMA_FILE", "read_snapshot", "target_labels"]

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
    """Statistics of the training snapshot; their bins are the reference for drift."""
    from keel.validate.statistics import compute_statistics

    # streamed from the verified Parquet file in batches: bounded memory on large snapshots
    statistics = compute_statistics(
        ctx.project.artifacts.local_path(ctx.inputs["train_snapshot"].sha256)
    )
    ctx.facts["columns"] = len(statistics["columns"])
    return {"statistics": _put_json(ctx, statistics, "statistics", rows=statistics["rows"])}


def effective_schema_text(project: Project, statistics: Artifact) -> str:
    """schema.yaml's text if the project has one (reviewed), else the schema inferred now."""
    return contract.schema_text(project, _json(project, statistics))


def schema(ctx: StepContext) -> dict[str, Artifact]:
    """Infer schema.yaml on first run (for review); afterwards the reviewed file is the contract.

    When the data's columns or types no longer match it, the run stops with the difference and
    ``keel schema infer --update`` (or, with ``schema: auto``, refreshes it and warns).
    """
    from keel.pipeline.contract import check_schema, holdout_notes, refreshed_message
    from keel.validate.schema import read_schema

    update = check_schema(ctx.project, _json(ctx.project, ctx.inputs["statistics"]))
    if update.changes:
        ctx.warn(refreshed_message(update))
        ctx.facts["refreshed_changes"] = len(update.changes)
    text = (ctx.project.root / SCHEMA_FILE).read_text(encoding="utf-8")
    parsed = read_schema(ctx.project.root / SCHEMA_FILE)
    # the project's first schema run: say what the new schema chose for it
    first = len(ctx.project.metadata.list_runs(step="schema", limit=2)) == 1
    for note in update.notes or (holdout_notes(ctx.project, parsed) if first else ()):
        ctx.warn(note)
    target = ctx.project.config.data.target
    if parsed.target() != target:
        raise ConfigError(
            f"{SCHEMA_FILE}: data.target is '{target}' but the schema's target "
            f"column is '{parsed.target()}'. Set role: target on '{target}'."
        )
    ctx.facts["columns"] = len(parsed.columns)
    return {"schema": ctx.project.artifacts.put(text.encode(), kind="schema")}


def schema_key(project: Project, inputs: dict[str, Artifact]) -> str:
    """The schema step's extra cache key: the text of schema.yaml (inferred first if none)."""
    text = effective_schema_text(project, inputs["statistics"])
    return hashlib.sha256(text.encode()).hexdigest()


def _load_schema(project: Project, artifact: Artifact) -> Any:
    import yaml

    from keel.validate.schema import Schema

    return Schema.from_dict(yaml.safe_load(project.artifacts.get(artifact.sha256)))


# --- validate --------------------------------------------------------------------------------


def validate(ctx: StepContext) -> dict[str, Artifact]:
    """Check train against the schema and test against train's statistics; errors stop the run.

    Writes the JSON report and a self-contained HTML report of the test split (per-column
    distributions, train vs test, and every anomaly).
    """
    from keel.validate.anomalies import validate_data

    contract = _load_schema(ctx.project, ctx.inputs["schema"])
    reference = _json(ctx.project, ctx.inputs["statistics"])
    target = ctx.project.config.data.target
    reports = {
        split: validate_data(
            read_snapshot(ctx.project, ctx.inputs[f"{split}_snapshot"]),
            schema=contract,
            reference=reference if split == "test" else None,
            target=target,
            name=split,
        )
        for split in ("train", "test")
    }
    found = [a.to_dict() | {"split": s} for s, r in reports.items() for a in r.anomalies]
    errors = [a for a in found if a["severity"] == "error"]
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


def target_labels(
    project: Project, table: pa.Table, classes: list[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """The target encoded for ``model.task``: 0/1 and ``[negative, positive]`` (binary), codes
    and class names (multiclass), floats and ``[]`` (regression). Pass the training
    ``classes`` to encode evaluation data the way the model was trained."""
    from keel.train.target import encode_target

    data = project.config.data
    if data.target not in table.column_names:
        raise DataValidationError(
            f"target '{data.target}' is not a column of the data ({table.column_names[:20]}).",
            field="data.target",
        )
    return encode_target(
        table.column(data.target),
        task=project.config.model.task,
        target=data.target,
        positive_label=data.positive_label,
        classes=classes,
    )


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


def coerce_inputs(ctx: StepContext, pipe: Any, table: pa.Table, split: str) -> Any:
    """The model inputs of ``table`` through the pipeline's coercion rules (the same ones
    serving applies); what did not fit is a run warning, or stops the run when it is an error."""
    coerced = pipe.coerce(table)
    for issue in coerced.warnings:
        ctx.warn(f"{split} data: {issue.message} ({issue.count} rows; {issue.kind})")
    coerced.raise_errors(f"{split} data: ")
    return coerced


def features_section(project: Project) -> Any:
    """The features step's cache section: the config plus each custom function's source hash,
    so editing a ``@keel.feature`` function re-fits the pipeline."""
    from keel.features.custom import CustomFeature, importable_from

    cfg = project.config.features
    with importable_from(project.root):
        hashes = {c.function: CustomFeature.create(c.model_dump()).sha256 for c in cfg.custom}
    return [cfg, hashes] if hashes else cfg


def train_section(project: Project) -> list[Any]:
    """The train step's cache section; a data-parallel fit (Ray Train) is another model, so its
    worker count joins the key (a local fit's key is unchanged)."""
    from keel.settings import executor_settings

    cfg = project.config
    section: list[Any] = [cfg.model, cfg.split, cfg.data.target, cfg.data.positive_label]
    if executor_settings(cfg)[0] == "ray" and cfg.resources.workers > 1:
        section.append({"workers": cfg.resources.workers, "cpus": cfg.resources.cpus})
    return section


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
    if split.folds:
        facts["metrics"] |= {f"cv_{k}": v for k, v in ctx.facts["cv"]["mean"].items()}
    ctx.facts.update(facts, classes=classes, split=split.model_dump(mode="json"))
    model = put_bundle(project.artifacts, result.model, task=task, classes=classes, facts=facts)
    return {"model": model}


def sample_weights(
    project: Project, table: pa.Table, *, inputs: Mapping[str, Any]
) -> np.ndarray | None:
    column = project.config.model.sample_weight
    if column is None:
        return None
    if column in inputs:
        raise ConfigError(
            f"model.sample_weight: column '{column}' is also a model input; a weight must not be "
            f"a feature. Add it to data.drop (or set its role to ignored in {SCHEMA_FILE}).",
            field="model.sample_weight",
        )
    import numpy as np

    values = _column_values(table, column, field="model.sample_weight")
    try:
        weights = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        msg = f"model.sample_weight: column '{column}' is not numeric. Name a numeric column."
        raise DataValidationError(msg, field="model.sample_weight") from exc
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise DataValidationError(
            f"model.sample_weight: column '{column}' has missing, infinite or negative weights; "
            "weights must be finite and >= 0.",
            field="model.sample_weight",
        )
    return weights


def _column_values(table: pa.Table, column: str | None, *, field: str = "split.column") -> Any:
    if column is None or column not in table.column_names:
        raise ConfigError(
            f"{field}: column '{column}' is not in the training data (columns: "
            f"{table.column_names[:20]}).",
            field=field,
        )
    return table.column(column).to_numpy()


@dataclass(frozen=True)
class TrainingData:
    """The training rows as the ``train`` and ``tune`` steps see them, made once, one way.

    Attributes:
        x: The feature matrix (out-of-fold target encodings: no row sees its own label).
        y: The encoded target.
        classes: Class names by code (empty for regression).
        weights: ``model.sample_weight`` per row, or None.
        values: The ``split.column`` values for time and group splits, else None.
        fit_rows: Rows the model is fitted on.
        valid_rows: Rows early stopping watches (``model.validation_fraction``, per ``split:``).
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    weights: np.ndarray | None
    values: Any
    fit_rows: np.ndarray
    valid_rows: np.ndarray


def training_data(project: Project, snapshot: Artifact, features: Artifact) -> TrainingData:
    """The training snapshot transformed by the fitted feature pipeline and split into fit and
    validation rows: the one preparation both the final fit and every search trial use.

    Raises:
        ConfigError: ``split.column`` or ``model.sample_weight`` names no column, or the weight
            column is a model input.
        DataValidationError: Weights are missing, negative or not numbers; a value does not
            convert to its input's type.
    """
    from keel.features.custom import importable_from
    from keel.features.pipeline import FeaturePipeline
    from keel.train.splits import validation_split

    cfg = project.config
    table = read_snapshot(project, snapshot)
    with importable_from(project.root):  # custom feature modules live in the project
        pipe = FeaturePipeline.from_state(_json(project, features))
        y, classes = target_labels(project, table)
        x = pipe.transform_training(table, y)
    weights = sample_weights(project, table, inputs=pipe.inputs)
    split = cfg.split
    values = _column_values(table, split.column) if split.method in ("time", "group") else None
    fit_rows, valid_rows = validation_split(
        y,
        task=cfg.model.task,
        fraction=cfg.model.validation_fraction,
        seed=cfg.model.seed,
        method=split.method,
        values=values,
        column=split.column,
    )
    return TrainingData(x, y, classes, weights, values, fit_rows, valid_rows)


def evaluate(ctx: StepContext) -> dict[str, Artifact]:
    """Metrics with bootstrap intervals on the test data, overall and per slice; calibration or
    residuals; worst slices; fairness by ``data.sensitive``; the champion comparison; and
    every gate's verdict (:mod:`keel.evaluate.evaluation`)."""
    from dataclasses import replace

    from keel.evaluate.evaluation import evaluate_predictions
    from keel.evaluate.explain import ModelParts, global_importance
    from keel.evaluate.footprint import measure_footprint
    from keel.features.pipeline import FeaturePipeline
    from keel.pipeline.evaluation_inputs import champion_predictions, evaluation_columns
    from keel.train.bundle import load_bundle

    project, cfg = ctx.project, ctx.project.config
    table = read_snapshot(project, ctx.inputs["test_snapshot"])
    pipe = FeaturePipeline.from_state(_json(project, ctx.inputs["features"]))
    model, bundle, files = load_bundle(project.artifacts, ctx.inputs["model"])
    y, classes = target_labels(project, table, classes=bundle["classes"] or None)
    x = pipe.transform(coerce_inputs(ctx, pipe, table, "test"))
    prediction = model.predict(x)
    slices, sensitive, search = evaluation_columns(project, table, list(pipe.inputs))
    sample = table.select(list(pipe.inputs)).slice(0, 200).to_pylist()
    footprint = measure_footprint(pipe, model, sample, files)
    try:
        evaluation = evaluate_predictions(
            bundle["task"], y, prediction, config=cfg.evaluate, classes=classes,
            flavor=bundle["flavor"], slices=slices, sensitive=sensitive, search=search,
            champion=champion_predictions(ctx, table, classes), footprint=footprint,
        )  # fmt: skip
    except ValueError as exc:  # the comparison's metric is not one of the task's
        field = "evaluate.challenger_vs_champion.metric"
        raise ConfigError(f"{field}: {exc}.", field=field) from exc
    parts = ModelParts(pipe, model, bundle["task"], bundle["flavor"], list(classes))
    evaluation = replace(evaluation, importance=global_importance(parts, x))  # mean |SHAP|
    report = evaluation.to_json()
    # numbers only: a metric that cannot be computed (None) is left out of the tracked facts
    ctx.facts["metrics"] = {
        k: v
        for k, v in report["metrics"].items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    failed = [g.gate for g in evaluation.gates if not g.passed]
    ctx.facts.update(gates_judged=len(evaluation.gates), gates_failed=len(failed),
                     worst_slices=len(evaluation.worst_slices))  # fmt: skip
    return {"evaluation": _put_json(ctx, report, "evaluation")}


# --- register --------------------------------------------------------------------------------


def register(ctx: StepContext) -> dict[str, Artifact]:
    """Package the model, register it as a new version, move the alias if the gates pass."""
    from keel.errors import KeelError
    from keel.evaluate.evaluation import Evaluation
    from keel.registry.card import store_cards
    from keel.registry.package import build_package
    from keel.registry.records import PromotionRequest
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
    promoted = all(g["passed"] for g in gates)
    pending: str | None = None
    if promoted:
        outcome = registry.promote(
            cfg.model.name,
            version.version,
            alias=cfg.registry.alias,
            reason="gates passed: " + ", ".join(g["gate"] for g in gates),
        )
        if isinstance(outcome, PromotionRequest):  # the alias needs approvals: it waits
            promoted, pending = False, outcome.id
    ctx.facts.update(
        version=version.version,
        gates=gates,
        promoted=promoted,
        alias=cfg.registry.alias if promoted else None,
    )
    if pending is not None:
        ctx.facts.update(pending_request=pending)
    return {"package": package}


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
