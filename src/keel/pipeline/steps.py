"""The training pipeline's steps: ingest -> profile -> schema -> validate -> features -> train
-> evaluate -> register. Each reads artifacts and returns artifacts; the runner records them."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from keel.config import SourceConfig
from keel.errors import ConfigError, DataValidationError
from keel.pipeline.runner import Step, StepContext
from keel.project import Project
from keel.types import Artifact

__all__ = ["SCHEMA_FILE", "default_steps", "read_snapshot", "target_labels"]

SCHEMA_FILE = "schema.yaml"


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
        raise ConfigError("data.test is not set; add a test source to keel.yaml.")
    return _snapshot(ctx, test, "test")


def _raw_file_key(source: SourceConfig | None) -> Any:
    def key(project: Project, inputs: dict[str, Artifact]) -> str:
        from keel.data import source_fingerprint

        return "" if source is None else source_fingerprint(source, project.root)

    return key


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
    path = project.root / SCHEMA_FILE
    if path.exists():
        return path.read_text(encoding="utf-8")
    from keel.validate.schema import infer_schema, write_schema

    data = project.config.data
    schema = infer_schema(
        _json(project, statistics),
        target=data.target,
        sensitive=data.sensitive,
        drop=data.drop,
        max_null_fraction=data.max_null_fraction,
    )
    write_schema(schema, path)
    return path.read_text(encoding="utf-8")


def schema(ctx: StepContext) -> dict[str, Artifact]:
    """Infer schema.yaml on first run (for review); afterwards the reviewed file is the contract."""
    from keel.validate.schema import read_schema

    text = effective_schema_text(ctx.project, ctx.inputs["statistics"])
    parsed = read_schema(ctx.project.root / SCHEMA_FILE)
    target = ctx.project.config.data.target
    if parsed.target() != target:
        raise ConfigError(
            f"{SCHEMA_FILE}: data.target is '{target}' but the schema's target "
            f"column is '{parsed.target()}'. Set role: target on '{target}'."
        )
    ctx.facts["columns"] = len(parsed.columns)
    return {"schema": ctx.project.artifacts.put(text.encode(), kind="schema")}


def _schema_key(project: Project, inputs: dict[str, Artifact]) -> str:
    text = effective_schema_text(project, inputs["statistics"])
    return hashlib.sha256(text.encode()).hexdigest()


def _load_schema(project: Project, artifact: Artifact) -> Any:
    from keel.validate.schema import Schema

    return Schema.model_validate(yaml.safe_load(project.artifacts.get(artifact.sha256)))


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


def target_labels(project: Project, table: pa.Table) -> tuple[np.ndarray, list[str]]:
    """0/1 labels for the target column and the class names ``[negative, positive]``."""
    data = project.config.data
    values = np.asarray(table.column(data.target).to_pylist(), dtype=object)
    seen = sorted({str(v) for v in values if v is not None})
    if len(seen) != 2:
        raise DataValidationError(
            f"target '{data.target}' must have exactly 2 classes for a binary "
            f"model; found {len(seen)}: {seen[:10]}.",
            field=data.target,
        )
    positive = data.positive_label or seen[1]
    if positive not in seen:
        raise ConfigError(
            f"data.positive_label '{positive}' is not a value of '{data.target}' (values: {seen}).",
            field="data.positive_label",
        )
    negative = next(v for v in seen if v != positive)
    return (values == positive).astype(np.int64), [negative, positive]


def features(ctx: StepContext) -> dict[str, Artifact]:
    """Fit the feature pipeline on the training snapshot; its state is JSON."""
    from keel.features.pipeline import FeaturePipeline

    contract = _load_schema(ctx.project, ctx.inputs["schema"])
    table = read_snapshot(ctx.project, ctx.inputs["train_snapshot"])
    inputs = {name: contract.columns[name].type for name in contract.features()}
    temporal = [name for name, kind in inputs.items() if kind in ("date", "timestamp")]
    if temporal:
        raise ConfigError(
            f"{SCHEMA_FILE}: {temporal} are {inputs[temporal[0]]} columns with role feature; the "
            "feature pipeline takes numbers, strings and booleans. Set their role to timestamp "
            "(or ignored) in schema.yaml."
        )
    cfg = ctx.project.config.features
    pipe = FeaturePipeline(
        inputs=inputs,
        numeric_impute=cfg.numeric_impute,
        categorical_impute=cfg.categorical_impute,
        scale=cfg.scale,
        max_categories=cfg.max_categories,
    ).fit(table)
    ctx.facts.update(inputs=len(inputs), features=pipe.n_features_)
    return {"features": _put_json(ctx, pipe.state(), "features")}


def train(ctx: StepContext) -> dict[str, Artifact]:
    """Train LightGBM on the transformed training data, with early stopping."""
    from keel.features.pipeline import FeaturePipeline
    from keel.train.lightgbm import train_lightgbm

    table = read_snapshot(ctx.project, ctx.inputs["train_snapshot"])
    pipe = FeaturePipeline.from_state(_json(ctx.project, ctx.inputs["features"]))
    y, classes = target_labels(ctx.project, table)
    x = pipe.transform(table)
    model_cfg = ctx.project.config.model
    columns = [
        TextColumn("  train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} trees"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=ctx.console, transient=True) as progress:
        task = progress.add_task("train", total=model_cfg.params.n_estimators)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        text, facts = train_lightgbm(x, y, model_cfg, on_iteration=advance)
    ctx.facts.update(facts, classes=classes)
    model = ctx.project.artifacts.put(
        text.encode(), kind="model-file", metadata={"flavor": "lightgbm", **facts}
    )
    return {"model": model}


def evaluate(ctx: StepContext) -> dict[str, Artifact]:
    """Metrics on the test data, overall and per slice (e.g. sex, race)."""
    from keel.evaluate.metrics import binary_metrics, slice_metrics
    from keel.features.pipeline import FeaturePipeline
    from keel.train.lightgbm import load_booster

    table = read_snapshot(ctx.project, ctx.inputs["test_snapshot"])
    pipe = FeaturePipeline.from_state(_json(ctx.project, ctx.inputs["features"]))
    booster = load_booster(ctx.project.artifacts.get(ctx.inputs["model"].sha256).decode())
    y, classes = target_labels(ctx.project, table)
    proba = np.asarray(booster.predict(pipe.transform(table)), dtype=np.float64)
    slices = ctx.project.config.evaluate.slices
    missing = [s for s in slices if s not in table.column_names]
    if missing:
        raise ConfigError(
            f"evaluate.slices: {missing} not in the data (columns: {table.column_names})."
        )
    groups = {s: np.asarray(table.column(s).to_pylist(), dtype=object) for s in slices}
    report = {
        "dataset": "test",
        "classes": classes,
        "metrics": binary_metrics(y, proba),
        "slices": slice_metrics(y, proba, groups),
    }
    ctx.facts["metrics"] = report["metrics"]
    return {"evaluation": _put_json(ctx, report, "evaluation")}


# --- register --------------------------------------------------------------------------------


def register(ctx: StepContext) -> dict[str, Artifact]:
    """Package the model, register it as a new version, move the alias if the gates pass."""
    from keel.evaluate.metrics import check_gates
    from keel.registry.package import build_package

    project, cfg = ctx.project, ctx.project.config
    evaluation = _json(project, ctx.inputs["evaluation"])
    lineage = {name: a.sha256 for name, a in ctx.inputs.items()}
    package = build_package(
        project.artifacts,
        name=cfg.model.name,
        booster_text=project.artifacts.get(ctx.inputs["model"].sha256).decode(),
        pipeline_state=_json(project, ctx.inputs["features"]),
        classes=evaluation["classes"],
        metrics=evaluation["metrics"] | {"slices": evaluation["slices"]},
        statistics=_json(project, ctx.inputs["statistics"]),
        lineage={"artifacts": lineage},
    )
    project.metadata.record_artifact(package)
    version = project.metadata.register_model_version(
        cfg.model.name,
        package_sha256=package.sha256,
        run_id=ctx.run_id,
        metrics=evaluation["metrics"],
    )
    gates = check_gates(evaluation["metrics"], cfg.evaluate.parsed_gates())
    promoted = all(g["passed"] for g in gates)
    if promoted:
        project.metadata.set_alias(
            cfg.model.name,
            cfg.registry.alias,
            version.version,
            reason="gates passed: " + ", ".join(g["gate"] for g in gates),
        )
    ctx.facts.update(
        version=version.version,
        gates=gates,
        promoted=promoted,
        alias=cfg.registry.alias if promoted else None,
    )
    return {"package": package}


def default_steps(project: Project) -> list[Step]:
    """The steps of ``keel run`` for a project, in order."""
    data = project.config.data
    return [
        Step(
            "ingest_train",
            ingest_train,
            (),
            lambda p: p.config.data.train,
            _raw_file_key(data.train),
        ),
        Step(
            "ingest_test", ingest_test, (), lambda p: p.config.data.test, _raw_file_key(data.test)
        ),
        Step("profile", profile, ("train_snapshot",)),
        Step("schema", schema, ("statistics",), lambda p: p.config.data.target, _schema_key),
        Step("validate", validate, ("schema", "statistics", "train_snapshot", "test_snapshot")),
        Step("features", features, ("schema", "train_snapshot"), lambda p: p.config.features),
        Step(
            "train",
            train,
            ("train_snapshot", "features"),
            lambda p: [p.config.model, p.config.data.target, p.config.data.positive_label],
        ),
        Step(
            "evaluate",
            evaluate,
            ("test_snapshot", "features", "model"),
            lambda p: [
                p.config.evaluate.slices,
                p.config.data.target,
                p.config.data.positive_label,
            ],
        ),
        Step(
            "register",
            register,
            (
                "model",
                "features",
                "statistics",
                "evaluation",
                "schema",
                "train_snapshot",
                "test_snapshot",
                "validation",
            ),
            lambda p: [p.config.model.name, p.config.evaluate.gates, p.config.registry.alias],
        ),
    ]
