"""The Python API: the same verbs as the CLI, returning plain data.

>>> import keel
>>> keel.init("adult-demo", example="adult")
>>> summary = keel.run("adult-demo")
>>> model = keel.load_model("adult@production", project="adult-demo")
>>> model.predict(df)
"""

from __future__ import annotations

import difflib
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
from rich.console import Console

from keel.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from keel.data.reader import ReadOptions
    from keel.project import Project
    from keel.registry.lineage import LineageGraph
    from keel.registry.package import ModelPackage

__all__ = [
    "compare_runs",
    "get_run",
    "infer_schema",
    "ingest",
    "init",
    "load_data",
    "load_model",
    "models",
    "monitor",
    "predict",
    "reproduce",
    "resolve_data",
    "run",
    "runs",
    "show_model",
    "snapshots",
    "validate",
]

#: Bundled example projects (``keel init --example NAME``): the data files ship with each.
EXAMPLES = ("adult", "bike-sharing", "california-housing")


def _project(path: str | Path | None) -> Project:
    """Open a project; imported here so that ``keel validate FILE`` (which needs none) does
    not load the metadata store's SQLAlchemy."""
    from keel.project import Project

    return Project(path)


def _package(project: Project, sha256: str) -> ModelPackage:
    """A registered model package, loaded with the project's custom feature modules importable."""
    from keel.features.custom import importable_from
    from keel.registry.package import ModelPackage

    with importable_from(project.root):
        return ModelPackage.load(project.artifacts, sha256)


def _examples_root() -> Path:
    """The bundled examples: beside the package when installed, else in the source tree."""
    here = Path(__file__).resolve()
    for candidate in (here.parent / "examples", here.parents[2] / "examples"):
        if candidate.is_dir():
            return candidate
    raise NotFoundError("the bundled examples are not installed; reinstall keel from source.")


def init(
    directory: str | Path,
    *,
    example: str | None = None,
    source: str | Path | None = None,
    target: str | None = None,
    copy: bool = True,
    force: bool = False,
) -> Path:
    """Scaffold a project: a bundled example, or a keel.yaml for a data file of your own.

    Args:
        directory: The project directory (created when missing).
        example: A bundled example (see :data:`EXAMPLES`); ``adult`` when no ``source``.
        source: A CSV or Parquet file to write a keel.yaml for, with ``target``; every
            inferred choice (task, positive label, gates, slices) is commented in the file.
        target: The column to predict (with ``source``).
        copy: Copy ``source`` into ``directory/data/`` (default) rather than reference it.
        force: Overwrite an existing keel.yaml.

    Returns:
        The project directory.

    Raises:
        ConfigError: An unknown example; both an example and a source, or a target without a
            source; an unreadable source or an unknown target; a keel.yaml already there.

    Example:
        >>> keel.init("penguins", source="penguins.csv", target="species")
    """
    if source is not None:
        if example is not None:
            raise ConfigError("give either an example or a source file (--from), not both.")
        from keel.commands.init import init_from_file

        return init_from_file(directory, source, target, copy=copy, force=force).directory
    if target is not None:
        raise ConfigError("target (--target) goes with a source file: add --from FILE.")
    example = example or "adult"
    if example not in EXAMPLES:
        close = difflib.get_close_matches(example, EXAMPLES, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        msg = f"unknown example '{example}'.{hint} Examples: {', '.join(EXAMPLES)}."
        raise ConfigError(msg, field="--example")
    target_dir = Path(directory)
    if (target_dir / "keel.yaml").exists() and not force:
        raise ConfigError(
            f"{target_dir / 'keel.yaml'} already exists. Use another directory or --force."
        )
    bundled = _examples_root() / example
    target_dir.mkdir(parents=True, exist_ok=True)
    for item in bundled.iterdir():
        if item.name in (".keel", "schema.yaml"):
            continue
        destination = target_dir / item.name
        if item.is_dir():
            shutil.copytree(item, destination, dirs_exist_ok=True)
        else:
            shutil.copy2(item, destination)
    return target_dir


def run(
    project: str | Path | None = None,
    *,
    console: Console | None = None,
    cache: bool = True,
    explain: bool = False,
    trigger: str = "manual",
    reason: str | None = None,
) -> dict[str, Any]:
    """Run the pipeline (Keel's steps and the project's custom ones), reusing cached steps
    unless ``cache=False``.

    Args:
        project: The project directory (default: the nearest keel.yaml).
        console: Where progress goes (default: nowhere).
        cache: False executes every step even when an identical run exists.
        explain: Print per step whether its cache hit, and what changed when it did not.
        trigger: What started the run: ``manual``, ``schedule``, ``event`` or ``retry``.
        reason: Why, in words (the schedule or event), recorded with every step run.

    Returns:
        ``{"project", "pipeline_run", "trigger", "steps": [{"step", "status", "seconds",
        "run_id", "outputs", "facts", "warnings", "explain"}], "model": {"name", "version",
        "promoted", "alias", "metrics", "gates"}}``.
    """
    import uuid

    from keel.pipeline.runner import run_steps
    from keel.pipeline.standard import pipeline_steps

    pipeline_run = uuid.uuid4().hex
    with _project(project) as proj:
        results = run_steps(
            proj,
            pipeline_steps(proj),
            console=console or Console(quiet=True),
            use_cache=cache,
            explain=explain,
            pipeline_run=pipeline_run,
            trigger=trigger,
            reason=reason,
        )
        register = next((r.facts for r in results if r.step == "register"), {})
        evaluate = next(r for r in results if r.step == "evaluate").facts
        return {
            "project": str(proj.root),
            "pipeline_run": pipeline_run,
            "trigger": trigger,
            "steps": [
                {
                    "step": r.step,
                    "status": r.status,
                    "seconds": round(r.seconds, 4),
                    "run_id": r.run_id,
                    "outputs": r.outputs,
                    "facts": r.facts,
                    "warnings": list(r.warnings),
                    "explain": r.explain,
                }
                for r in results
            ],
            "model": {
                "name": proj.config.model.name,
                "version": register.get("version"),
                "promoted": register.get("promoted"),
                "alias": register.get("alias"),
                "gates": register.get("gates", []),
                "metrics": evaluate.get("metrics", {}),
            },
        }


def tune(
    project: str | Path | None = None, *, trials: int = 10, console: Console | None = None
) -> dict[str, Any]:
    """Run ``trials`` more trials of the project's search (resuming its study), then the rest of
    the pipeline; the model is retrained and registered when the best trial changed.

    Returns:
        ``{"study", "trials_before", "trials_run", "best_trial", "best_value", "metric",
        "best_params", "steps", "model": {"name", "version", "promoted", "metrics"}}``.
    """
    from keel.pipeline.tune import extend_search

    with _project(project) as proj:
        return extend_search(proj, trials, console or Console(quiet=True))


def reproduce(run: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """Re-execute a recorded run on its recorded inputs; report whether every output hash matches.

    Returns:
        ``{"run", "step", "match", "code_changed", "outputs": {name: {"recorded", "reproduced",
        "match"}}}``.
    """
    from keel.pipeline.reproduce import reproduce_run

    with _project(project) as proj:
        return reproduce_run(proj, run)


def runs(
    filter: str | None = None,
    *,
    sort: str | None = None,
    limit: int = 50,
    project: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Tracked runs matching a filter, sorted: params, metrics, tags, resources, data.

    Example:
        >>> keel.runs('metrics.roc_auc > 0.9 and step = "evaluate"', sort="metrics.roc_auc desc")

    Raises:
        ConfigError: A malformed filter or sort (the message shows the position and the forms).
    """
    from keel.tracking import find_runs

    with _project(project) as proj:
        return find_runs(proj.metadata, filter, sort=sort, limit=limit)


def get_run(run: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """One run (id or prefix of 6+ hex digits): facts, learning curves, environment, lineage."""
    from keel.tracking import show_run

    with _project(project) as proj:
        return show_run(proj.metadata, run)


def pipeline_runs(*, limit: int = 50, project: str | Path | None = None) -> list[dict[str, Any]]:
    """Pipeline runs (one per ``keel run``), newest first: trigger, status, steps."""
    from keel.store import pipeline_runs as records

    with _project(project) as proj:
        return [run.to_dict() for run in records.recent(proj.metadata.database, limit)]


def get_pipeline_run(ref: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """One pipeline run (id or unique prefix): trigger, reason, status, each step's outcome
    (run id, status, cache hit or miss, seconds, CPU seconds, peak memory while it ran).

    Raises:
        NotFoundError: No pipeline run matches, or the prefix matches several.
    """
    from keel.store import pipeline_runs as records

    with _project(project) as proj:
        return records.get(proj.metadata.database, ref).to_dict()


def lineage(
    ref: str,
    *,
    direction: Literal["up", "down"] = "up",
    max_nodes: int = 500,
    project: str | Path | None = None,
) -> LineageGraph:
    """Where ``ref`` came from (``up``) or what it influenced (``down``), down to served
    predictions; ``ref`` is an artifact sha256, run id, NAME@VERSION, NAME@ALIAS or request id.
    """
    from keel.registry.lineage import trace
    from keel.serve.lookup import LoggedPredictions

    proj = _project(project)
    source = LoggedPredictions(proj.predictions_dir)
    return trace(proj.metadata, ref, direction=direction, predictions=source, max_nodes=max_nodes)


def compare_runs(run_ids: list[str], *, project: str | Path | None = None) -> dict[str, Any]:
    """Runs side by side (params, metrics, data, environment), each row marked if it differs."""
    from keel.tracking import compare_runs as compare

    with _project(project) as proj:
        return compare(proj.metadata, run_ids)


class Model:
    """A registered model version, loaded and verified, ready to predict."""

    def __init__(self, package: ModelPackage, name: str, version: int) -> None:
        self.package = package
        self.name = name
        self.version = version

    def predict(self, data: Any) -> Any:
        """Class labels (or regression values) for a DataFrame or Arrow table (batch path)."""
        return self.package.predict(data)

    def predict_proba(self, data: Any) -> Any:
        """P(positive class), or per-class probabilities (multiclass), for a DataFrame/table."""
        return self.package.predict_proba(data)

    def predict_rows(self, rows: list[dict[str, Any]]) -> tuple[list[Any], list[Any] | None]:
        """The online path: request dicts in, (labels or values, probabilities or None) out."""
        return self.package.predict_rows(rows)

    def __repr__(self) -> str:
        return f"Model({self.name}@{self.version}, sha256={self.package.sha256[:12]})"


def load_model(ref: str, *, project: str | Path | None = None) -> Model:
    """Load ``name``, ``name@version`` or ``name@alias`` from the registry, verifying hashes."""
    with _project(project) as proj:
        version = proj.metadata.resolve(ref)
        package = _package(proj, version.package_sha256)
        return Model(package, version.name, version.version)


def models(project: str | Path | None = None) -> list[dict[str, Any]]:
    """Registered models with their latest version and aliases."""
    with _project(project) as proj:
        return [_plain(m) for m in proj.metadata.list_models()]


def show_model(ref: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """A model's versions (or one version's details when ``ref`` names one).

    Returns:
        ``{"name", "aliases", "versions": [{"version", "package_sha256", "model_sha256",
        "run_id", "created_at", "aliases", "metrics", "slices"}]}``; ``slices`` holds the test
        metrics per value of each ``evaluate.slices`` column (``{"sex": {"Female": {...},
        "_gap": {...}}}``), from the package's manifest.
    """
    with _project(project) as proj:
        name = ref.split("@", 1)[0]
        versions = proj.metadata.list_versions(name)
        if not versions:
            proj.metadata.resolve(ref)  # raises NotFoundError with the known models
        chosen = proj.metadata.resolve(ref) if "@" in ref else None
        return {
            "name": name,
            "versions": [
                _version(v, proj) for v in versions if chosen is None or v.version == chosen.version
            ],
            "aliases": next(
                (m["aliases"] for m in proj.metadata.list_models() if m["name"] == name), {}
            ),
        }


def _version(v: Any, project: Project) -> dict[str, Any]:
    import orjson

    from keel.registry.package import model_file_of

    manifest = orjson.loads(project.artifacts.get(v.package_sha256))
    return {
        "version": v.version,
        "package_sha256": v.package_sha256,
        "model_sha256": manifest["files"][model_file_of(manifest)]["sha256"],
        "run_id": v.run_id,
        "created_at": v.created_at.isoformat(),
        "aliases": list(v.aliases),
        "metrics": v.metrics,
        "slices": (manifest.get("metrics") or {}).get("slices") or {},
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def predict(
    ref: str,
    source: str | Path,
    output: str | Path,
    *,
    project: str | Path | None = None,
    read: ReadOptions | None = None,
) -> dict[str, Any]:
    """Batch-score a CSV or Parquet file into a Parquet file.

    Rows whose values do not convert to the model's input types are not scored: they go to
    ``<output>.rejects.csv`` with their line numbers (``rejected`` and ``rejects`` say so).
    ``read`` says how to read a CSV (delimiter, header, ...; default: detected; NA tokens:
    the training source's); ``dialect`` is what it was read as, ``bad_lines`` the lines that
    could not be read as rows.
    """
    from keel.serve.batch import predict_file

    with _project(project) as proj:
        version = proj.metadata.resolve(ref)
        package = _package(proj, version.package_sha256)
        read = _reading(read, proj)
        scored = predict_file(package, source, output, version=str(version.version), read=read)
        return {
            "model": version.name,
            "version": version.version,
            "rows": scored.rows,
            "output": str(output),
            "rejected": scored.rejected,
            "rejects": None if scored.rejects is None else str(scored.rejects),
            "warnings": scored.warnings,
            "dialect": None if scored.dialect is None else scored.dialect.to_dict(),
            "bad_lines": [line.to_dict() for line in scored.bad_lines],
        }


def monitor(
    ref: str,
    *,
    source: str | Path | None = None,
    project: str | Path | None = None,
    read: ReadOptions | None = None,
) -> dict[str, Any]:
    """PSI drift of served inputs (or a file) against the model's training statistics.

    A ``source`` file is read as ``read`` says (default: its dialect detected, the training
    source's NA tokens); it must hold
    every model input column (else DataValidationError naming the likely fix). The result's
    ``dialect`` is what it was read as, ``bad_lines`` the lines that could not be read.
    """
    from dataclasses import replace

    from keel.data.columns import check_columns
    from keel.data.files import open_data
    from keel.data.reader import CsvFile, dialect_of
    from keel.monitor.drift import compute_drift, log_table
    from keel.serve.predlog import read_prediction_log

    with _project(project) as proj:
        version = proj.metadata.resolve(ref)
        package = _package(proj, version.package_sha256)
        current: pa.Table | Path | CsvFile
        if source is not None:  # read in batches by compute_drift, whatever its size
            # the inputs read as text: the model's coercion parses them as serving does
            options = replace(_reading(read, proj), text=tuple(package.pipeline.inputs))
            current, origin = open_data(Path(source), options), str(source)
            check_columns(current, list(package.pipeline.inputs), of="model input")
        else:
            rows = [r["inputs"] for r in read_prediction_log(proj.predictions_dir, version.name)]
            current = log_table(rows, list(package.pipeline.inputs))
            origin = f"prediction log ({proj.predictions_dir / version.name})"
        cfg = proj.config.monitor
        columns = list(package.pipeline.inputs)
        report = compute_drift(
            package.statistics,
            current,
            columns=columns,
            warn=cfg.psi.warn,
            alert=cfg.psi.alert,
            min_rows=cfg.min_rows,
            coercer=package.pipeline.coercer(),
        )
        dialect = dialect_of(current)
        bad = current.bad_lines if isinstance(current, CsvFile) else ()
        return {
            "model": version.name,
            "version": version.version,
            "source": origin,
            **report,
            "dialect": None if dialect is None else dialect.to_dict(),
            "bad_lines": [line.to_dict() for line in bad],
        }


def _reading(read: ReadOptions | None, project: Project) -> ReadOptions:
    """``read``, with the training source's NA tokens unless it names its own: a file to
    score is read as the training data was."""
    from dataclasses import replace

    from keel.data.reader import ReadOptions

    read = read or ReadOptions()
    tokens = tuple(project.config.data.train.na_values)
    return read if read.na_values or not tokens else replace(read, na_values=tokens)


# --- data verbs ------------------------------------------------------------------------------

_SHA_PREFIX = re.compile(r"^[0-9a-fA-F]{6,64}$")
DataLike = Any  # a pyarrow Table, a pandas DataFrame, a CSV/Parquet path, or a snapshot sha


def resolve_data(
    data: DataLike, *, project: str | Path | None = None, keep_csv: bool = False
) -> pa.Table | Path:
    """A table, or a Parquet file to stream, for anything that names data.

    Args:
        data: A pyarrow Table, a pandas DataFrame, a CSV or Parquet path, or the sha256 (or a
            unique prefix of at least 6 hex digits) of a snapshot in the project.
        project: The project to look snapshots up in (default: nearest keel.yaml).
        keep_csv: Return a CSV file's path too (for a reader that streams it) instead of its
            table.

    Raises:
        ConfigError: ``data`` is neither an existing file nor a snapshot of the project.
    """
    if isinstance(data, pa.Table):
        return data
    if hasattr(data, "to_records") and hasattr(data, "columns"):  # a pandas DataFrame
        return pa.Table.from_pandas(data, preserve_index=False)
    path = Path(str(data)).expanduser()
    if path.exists():
        if path.suffix.lower() in (".parquet", ".pq"):
            return path
        from keel.data.sources import CSV_SUFFIXES, read_table

        if keep_csv and path.suffix.lower() in CSV_SUFFIXES:
            return path
        return read_table(path)
    hint = "Pass a CSV or Parquet path, or a snapshot sha from 'keel data list'."
    if not _SHA_PREFIX.match(str(data)):
        raise ConfigError(f"'{data}' is neither a file nor a snapshot: no such file. {hint}")
    try:
        with _project(project) as proj:
            artifact = proj.metadata.get_artifact(str(data))
            if artifact.kind != "snapshot":
                msg = f"artifact {artifact.short} is a {artifact.kind}, not a snapshot."
                raise ConfigError(msg, field="data")
            return proj.artifacts.local_path(artifact.sha256)
    except (NotFoundError, ConfigError) as exc:
        why = exc.message.rstrip(".")
        msg = f"'{data}' is neither a file nor a snapshot of the project ({why}). {hint}"
        raise ConfigError(msg, field="data") from exc


def load_data(data: DataLike, *, project: str | Path | None = None) -> pa.Table:
    """Like :func:`resolve_data`, read into one table."""
    import pyarrow.parquet as pq

    found = resolve_data(data, project=project)
    return pq.read_table(found) if isinstance(found, Path) else found


def ingest(*, split: str = "all", project: str | Path | None = None) -> dict[str, Any]:
    """Ingest the declared source(s) into snapshots now; bad rows go to a quarantine artifact.

    Returns:
        Split name -> :class:`keel.data.IngestResult`.
    """
    from keel.data import ingest as ingest_source

    with _project(project) as proj:
        sources = {"train": proj.config.data.train, "test": proj.config.data.test}
        if split not in (*sources, "all"):
            raise ConfigError(f"split must be train, test or all; got '{split}'.", field="split")
        if split == "test" and sources["test"] is None:
            raise ConfigError("data.test is not set in keel.yaml; add a test source.")
        wanted = [name for name in sources if split in ("all", name)]
        return {
            name: ingest_source(source, proj.root, proj, split=name)
            for name in wanted
            if (source := sources[name]) is not None
        }


def snapshots(project: str | Path | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
    """Recorded snapshots, newest first."""
    from keel.data import list_snapshots

    with _project(project) as proj:
        return list_snapshots(proj, limit=limit)


def infer_schema(
    data: DataLike,
    *,
    target: str | None = None,
    sensitive: list[str] | None = None,
    project: str | Path | None = None,
) -> Any:
    """Infer a :class:`keel.validate.schema.Schema` (types, nullability, domains, roles)."""
    from keel.validate.schema import infer_schema as infer
    from keel.validate.statistics import compute_statistics

    statistics = compute_statistics(resolve_data(data, project=project))
    wanted = [c for c in [target, *(sensitive or [])] if c]
    missing = [c for c in wanted if c not in statistics["columns"]]
    if missing:
        raise ConfigError(
            f"no column '{missing[0]}' in {data} (columns: {', '.join(statistics['columns'])}).",
            field=missing[0],
        )
    return infer(statistics, target=target, sensitive=sensitive or [])


def validate(
    data: DataLike,
    *,
    schema: Any = None,
    reference: Any = None,
    target: str | None = None,
    outliers: bool = False,
    label_noise: bool = False,
    project: str | Path | None = None,
    read: ReadOptions | None = None,
) -> Any:
    """Validate data against a schema and a reference; returns a ``ValidationReport``.

    Args:
        data: What to check (see :func:`resolve_data`), or a file opened by
            :func:`keel.data.reader.open_file`.
        schema: A ``Schema``, a schema.yaml path, or None to infer one from the reference.
        reference: Data (as ``data``), a statistics dict, or a statistics JSON file or artifact.
        target: The label column (label shift, label noise).
        outliers: Also look for outlying rows (sampled).
        label_noise: Also look for likely mislabeled rows (sampled; needs ``target``).
        project: Where snapshot shas are looked up.
        read: How to read a CSV ``data`` (delimiter, header, ...); default: detected.

    Raises:
        DataValidationError: None of the schema's (or reference's) columns is in the data:
            the message says how the file was read and the likely fix.

    Example:
        >>> report = keel.validate("new.csv", reference="train.parquet", target="income")
        >>> report.ok, [a.kind for a in report.anomalies]
    """
    from keel.data.columns import check_columns
    from keel.data.files import open_data
    from keel.data.reader import CsvFile
    from keel.validate.anomalies import validate_data
    from keel.validate.schema import Schema, read_schema

    contract = schema if isinstance(schema, Schema) or schema is None else read_schema(Path(schema))
    ref = None if reference is None else _load_reference(reference, project)
    name = Path(str(data)).name if isinstance(data, str | Path) else "data"
    opened = (
        data if isinstance(data, CsvFile) else resolve_data(data, project=project, keep_csv=True)
    )
    if isinstance(opened, Path):  # files are streamed, not loaded
        opened = open_data(opened, read)
    if isinstance(opened, CsvFile):
        name = opened.path.name
    expected = (
        list(contract.columns) if contract is not None else list((ref or {}).get("columns", []))
    )
    of = "schema" if contract is not None else "reference"
    check_columns(opened, expected, of=of, some_missing_ok=True, where=name)
    return validate_data(
        opened,
        schema=contract,
        reference=ref,
        target=target,
        name=name,
        outliers=outliers,
        label_noise=label_noise,
    )


def _load_reference(reference: Any, project: str | Path | None) -> dict[str, Any]:
    """Statistics of the reference: given, from a JSON file or artifact, or computed."""
    if isinstance(reference, dict):
        return reference
    if isinstance(reference, str | Path):
        path = Path(str(reference)).expanduser()
        if path.suffix.lower() == ".json" and path.exists():
            return _statistics(path.read_bytes(), str(path))
        if not path.exists():
            with _project(project) as proj:
                artifact = proj.metadata.get_artifact(str(reference))
                if artifact.kind == "statistics":
                    return _statistics(proj.artifacts.get(artifact.sha256), artifact.short)
    from keel.validate.statistics import compute_statistics

    # the reference's statistics in one streamed pass: a large file is never held whole
    return compute_statistics(resolve_data(reference, project=project, keep_csv=True))


def _statistics(blob: bytes, where: str) -> dict[str, Any]:
    import orjson

    try:
        value = orjson.loads(blob)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc}).") from exc
    if not isinstance(value, dict) or "columns" not in value or "rows" not in value:
        raise ConfigError(f"{where}: not Keel statistics (needs 'rows' and 'columns').")
    return value
