"""The Python API for registered models: the registry, loading, prediction, monitoring."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import DataValidationError, NotFoundError

if TYPE_CHECKING:
    from keel.data.reader import ReadOptions
    from keel.evaluate.explain import Explanation
    from keel.project import Project
    from keel.registry.package import ModelPackage
    from keel.registry.registry import Registry
    from keel.serve.batch import Scored
from keel.api.projects import _project, _reading


def _package(project: Project, sha256: str) -> ModelPackage:
    """A registered model package, verified (hashes; the signature when
    registry.require_signature is on; scikit-learn types) and loaded with the project's custom
    feature modules importable."""
    from keel.registry.verify import load_package

    return load_package(project, sha256)


class Model:
    """A registered model version, loaded and verified, ready to predict."""

    def __init__(self, package: ModelPackage, name: str, version: int) -> None:
        self.package = package
        self.name = name
        self.version = version

    @property
    def classes(self) -> list[str]:
        """The class labels by code (classification; empty for regression)."""
        return list(self.package.classes)

    @property
    def positive_label(self) -> str | None:
        """The class a binary classifier's probability is of (``>50K``), else None."""
        return positive_label(self.package)

    def predict(self, data: Any) -> Any:
        """Class labels (or regression values) for a DataFrame or Arrow table (batch path)."""
        return self.package.predict(data)

    def predict_proba(self, data: Any) -> Any:
        """P(:attr:`positive_label`) (binary), or per-class probabilities in the order of
        :attr:`classes` (multiclass), for a DataFrame or Arrow table."""
        return self.package.predict_proba(data)

    def predict_rows(self, rows: list[dict[str, Any]]) -> tuple[list[Any], list[Any] | None]:
        """The online path: request dicts in, (labels or values, probabilities or None) out;
        a binary classifier's probabilities are P(:attr:`positive_label`)."""
        return self.package.predict_rows(rows)

    def explain(self, rows: Any) -> Explanation:
        """Each input column's contribution to the raw margin (exact TreeSHAP for tree models,
        shap's Permutation estimate for others: the ``explain`` extra), for request dicts, a
        DataFrame or an Arrow table; see :mod:`keel.evaluate.explain`.

        Each row of ``to_json()["rows"]`` holds what :meth:`predict` answers for it as
        ``prediction`` (the label; a regression's value) and ``probability`` (binary:
        P(:attr:`positive_label`); multiclass: ``probabilities`` by class), as ``keel
        predict`` writes them. Rows are in the order given: a DataFrame's keep its index
        (``Explanation.index``; ``"index"`` in each row), request dicts and Arrow rows are
        numbered by position from 0. (``keel explain`` numbers them by file line instead: the
        header is line 1 of a CSV, so its first row is line 2.)
        """
        from keel.evaluate.explain import explain_rows, explain_table

        if isinstance(rows, list | tuple):
            return explain_rows(self.package, rows, prefix="rows")
        return explain_table(self.package, rows)

    def __repr__(self) -> str:
        return f"Model({self.name}@{self.version}, sha256={self.package.sha256[:12]})"


def positive_label(package: ModelPackage) -> str | None:
    """The class a binary classifier's ``probability`` is of: its signature's ``of`` (the
    second class, ``classes[1]``); None for other tasks."""
    if package.task_spec.kind != "binary":
        return None
    outputs = package.signature.get("outputs") or []
    named = next((o.get("of") for o in outputs if o.get("name") == "probability"), None)
    return str(named) if named is not None else str(package.classes[1])


def load_model(ref: str, *, project: str | Path | None = None) -> Model:
    """Load ``name``, ``name@version`` or ``name@alias`` from the registry, verifying hashes.

    A bare ``name`` is ``name@<registry.alias>`` of the project's keel.yaml (``production``
    by default), else its newest version.
    """
    with _project(project) as proj:
        version = proj.metadata.resolve(ref)
        package = _package(proj, version.package_sha256)
        return Model(package, version.name, version.version)


def models(project: str | Path | None = None) -> list[dict[str, Any]]:
    """Registered models with their latest version and aliases."""
    with _project(project) as proj:
        return [_plain(m) for m in proj.metadata.list_models()]


def registry(project: str | Path | None = None, *, actor: str | None = None) -> Registry:
    """The project's model registry: promote, approve, rollback, archive, audit, ...

    ``actor`` is who the audit log records (default ``KEEL_ACTOR``, else the OS user). Close it
    (or use ``with``) to release the project's database::

        with keel.registry() as reg:
            reg.promote("churn", 3, alias="production", reason="better AUC")
    """
    from keel.registry.registry import Registry

    proj = _project(project)
    return Registry(proj.metadata.database, proj.config.registry, actor=actor, on_close=proj.close)


def show_model(ref: str, *, project: str | Path | None = None) -> dict[str, Any]:
    """A model's versions (or one version's details when ``ref`` names one).

    Returns:
        ``{"name", "aliases", "versions": [{"version", "package_sha256", "model_sha256",
        "run_id", "created_at", "aliases", "metrics", "slices", "gates", "importance",
        "fairness"}]}``;
        ``importance`` holds mean |SHAP| and permutation importance per input column;
        ``gates`` holds each gate's ``gate``, ``path``, ``op``, ``bound``, ``value``,
        ``passed`` and ``reason`` from the version's evaluation; ``slices`` holds the test
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
                (m["aliases"] for m in proj.metadata.list_models() if m["name"] == name),
                {},
            ),
        }


def model_card(
    ref: str, format: str = "html", project: str | Path | None = None, *, fresh: bool = False
) -> str:
    """A registered version's model card: ``html`` (one self-contained page, plots as inline
    SVG, nothing fetched) or ``md`` (Markdown, plots as ``data:`` images).

    The card stored when the version was registered is returned; a version registered before
    cards existed (or any, with ``fresh=True``: after editing keel.yaml's ``card:``) gets one
    rendered now (:mod:`keel.registry.card`).

    Raises:
        NotFoundError: No such model, version or alias.
        ConfigError: ``format`` is not ``html`` or ``md``.

    Example:
        >>> Path("card.html").write_text(keel.model_card("adult@production"))
    """
    from keel.registry.card import model_card as card_of

    with _project(project) as proj:
        return card_of(proj, ref, fmt=format, fresh=fresh)


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
        "gates": _gates(manifest, project),
        "importance": _importance(manifest, project),
        "fairness": _fairness(manifest, project),
    }


def _fairness(manifest: dict[str, Any], project: Project) -> dict[str, Any]:
    """The fairness audit of ``data.sensitive`` from the version's evaluation: ``{feature:
    {disparity: value or None, "undefined": {disparity: why}}}`` (``{}`` when none)."""
    import orjson

    sha = ((manifest.get("lineage") or {}).get("artifacts") or {}).get("evaluation")
    try:
        evaluation = orjson.loads(project.artifacts.get(sha)) if sha else {}
    except NotFoundError:
        evaluation = {}
    return {  # the disparities are the audit's *_difference and *_ratio keys
        feature: {
            **{k: v for k, v in audit.items() if k.endswith(("_difference", "_ratio"))},
            "undefined": audit.get("undefined") or {},
        }
        for feature, audit in (evaluation.get("fairness") or {}).items()
    }


def _importance(manifest: dict[str, Any], project: Project) -> dict[str, Any]:
    """Global importance from the version's evaluation: ``{"mean_abs_shap": {column: value},
    "permutation": {"metric", "repeats", "rows", "columns": {column: {"mean", "std"}}}}``
    (each ``{}``/None when not stored)."""
    import orjson

    sha = ((manifest.get("lineage") or {}).get("artifacts") or {}).get("evaluation")
    try:
        evaluation = orjson.loads(project.artifacts.get(sha)) if sha else {}
    except NotFoundError:
        evaluation = {}
    return {
        "mean_abs_shap": dict(evaluation.get("importance") or {}),
        "permutation": evaluation.get("permutation_importance"),
    }


def _gates(manifest: dict[str, Any], project: Project) -> list[dict[str, Any]]:
    """Each gate's value, bound and verdict, from the evaluation the version was registered
    with (``[]`` for versions evaluated before gates were stored)."""
    import orjson

    sha = ((manifest.get("lineage") or {}).get("artifacts") or {}).get("evaluation")
    if not sha:
        return []
    try:
        evaluation = orjson.loads(project.artifacts.get(sha))
    except NotFoundError:
        return []
    return list(evaluation.get("gates") or [])


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
    format: str | None = None,
    features: str = "auto",
) -> dict[str, Any]:
    """Batch-score a CSV or Parquet file into a Parquet, CSV, JSON Lines or JSON file.

    The output's format is ``format`` (``parquet``, ``csv``, ``jsonl``, ``json``: one array)
    when given, else the one its suffix names (``.parquet``/``.pq``, ``.csv``,
    ``.jsonl``/``.ndjson``, ``.json``); an unknown suffix is a ConfigError naming it, raised
    before anything is read. Rows whose values do not convert to the model's input types are
    not scored: they go to ``<output>.rejects.csv`` with their line numbers (``rejected`` and
    ``rejects`` say so). ``read`` says how to read a CSV (delimiter, header, ...; default:
    detected; NA tokens: the training source's); ``dialect`` is what it was read as,
    ``bad_lines`` the lines that could not be read as rows. A binary classifier's
    ``probability`` column is P(``target`` = ``positive_label``): the answer names both
    (None for other tasks; a multiclass output's ``probability_<class>`` columns name theirs).

    A model trained with feature views scores a file of entity keys as the server scores a
    request of them: the view features the file lacks are filled batch by batch, as
    ``features`` says: ``auto`` (default) joins them point in time as of each row's
    ``features.entity_timestamp`` column (the training join) when the file has it, else reads
    the online store's latest values (as the server does); ``as-of`` or ``online`` insist on
    one (an error names the missing column, or the view to ``keel features materialize``);
    ``file`` fills nothing (the file must carry them). A view feature column the file carries
    keeps its own values; the filled ones are output columns too. ``features`` in the answer
    says how they were filled (None: nothing was), with ``unknown_entities``: per view, the
    rows whose entity the online store has no row for, scored with its features missing
    (imputed as in training), as the server does. See :mod:`keel.serve.viewfill`.

    Example:
        >>> keel.predict("adult@production", "new.csv", "scored.csv")["format"]
        'csv'
        >>> keel.predict("movielens", "keys.csv", "out.csv")["features"]["described"]
        "6 features of 2 views (movies, users) joined as of 'rated_at'"
    """
    from keel.data.export import table_format

    fmt = table_format(output, format, option="output", override="format")
    with _project(project) as proj:
        version = proj.metadata.resolve(ref)
        package = _package(proj, version.package_sha256)
        read = _reading(read, proj)
        try:
            scored = _score_file(
                package, source, Path(output), fmt, str(version.version), read, proj, features
            )
        except DataValidationError as exc:
            raise with_views_hint(proj, version.package_sha256, exc) from exc
        positive = positive_label(package)
        return {
            "model": version.name,
            "version": version.version,
            "rows": scored.rows,
            "output": str(output),
            "format": fmt,
            "positive_label": positive,
            "target": None if positive is None else proj.config.data.target,
            "rejected": scored.rejected,
            "rejects": None if scored.rejects is None else str(scored.rejects),
            "warnings": scored.warnings,
            "dialect": None if scored.dialect is None else scored.dialect.to_dict(),
            "bad_lines": [line.to_dict() for line in scored.bad_lines],
            "features": None if scored.features is None else scored.features.to_dict(),
        }


def with_views_hint(
    project: Project, package_sha256: str, exc: DataValidationError
) -> DataValidationError:
    """``exc`` as it is, or, when the missing input columns are features of the views the
    model was trained with, with what to do about them added to its message."""
    from keel.features.store import views_hint

    missing = exc.details.get("missing") if exc.field == "columns" else None
    hint = views_hint(project, package_sha256, missing) if isinstance(missing, list) else None
    if hint is None:
        return exc
    return DataValidationError(f"{exc.message} {hint}", field=exc.field, details=exc.details)


def explain_hint(ref: str, project: str | Path | None, exc: DataValidationError) -> Exception:
    """:func:`with_views_hint` for ``keel explain``, which loads the model by reference."""
    with _project(project) as proj:
        return with_views_hint(proj, proj.metadata.resolve(ref).package_sha256, exc)


def _score_file(
    package: ModelPackage,
    source: str | Path,
    output: Path,
    fmt: str,
    version: str,
    read: ReadOptions | None,
    project: Project,
    features: str,
) -> Scored:
    """Score ``source`` into ``output`` as ``fmt``, written once as the batches are scored
    (through a temporary file beside it, renamed when done); the rejects file lands beside
    ``output``; view features filled as ``features`` says."""
    from keel.serve.batch import predict_file

    return predict_file(
        package, source, output, version=version, read=read, fmt=fmt, project=project,
        features=features,
    )  # fmt: skip


def monitor(
    ref: str,
    *,
    source: str | Path | None = None,
    project: str | Path | None = None,
    read: ReadOptions | None = None,
    version: str | None = None,
    role: str | None = None,
    window: str | None = None,
    step: str | None = None,
    since: str | None = None,
    until: str | None = None,
    compact: bool = False,
    features: str = "auto",
) -> dict[str, Any]:
    """Drift of served inputs (or a file) against the model's training statistics, per window:
    PSI, Jensen-Shannon, Wasserstein, a test with its BH-adjusted p-value per feature, the
    output's drift, and CBPE-estimated accuracy and ROC AUC for a binary classifier.

    The logged rows of ``ref``'s version are read (``version="all"``: every version; ``role``:
    one deployment role; ``since``/``until``: ISO times) in ``window`` s (``1d``, ``1000rows``;
    ``step`` slides them; default keel.yaml's ``monitor.window``, else one window). A window
    with fewer than ``monitor.min_rows`` rows says ``not_enough_data``. A ``source`` file is
    read as ``read`` says and must hold every model input column (else DataValidationError
    naming the likely fix), except the view features of a model trained with feature views:
    those it lacks are filled from its entity keys as ``features`` says, as :func:`predict`
    fills them (the report's ``features`` says how; None: nothing was filled). ``compact``:
    first compact the log's closed files in the same open
    project (:func:`keel.monitor.compact.compact`; a failure to compact is a note: the log reads
    right either way). See :func:`keel.monitor.check.check_model`.
    """
    from tempfile import TemporaryDirectory

    from keel.features.custom import importable_from
    from keel.monitor.check import check_model

    with (
        _project(project) as proj,
        importable_from(proj.root),
        TemporaryDirectory(prefix="keel-monitor-") as scratch,
    ):
        notes = _compacted(proj, ref) if compact and source is None else []
        try:
            filled = None
            if source is not None:
                which = ref if version in (None, "all") else f"{ref.partition('@')[0]}@{version}"
                filled = _fill_file(proj, which, Path(source), read, features, Path(scratch))
            report = check_model(
                proj,
                ref,
                source=source if filled is None else filled.path,
                read=read,
                version=version,
                role=role,
                window=window,
                step=step,
                since=since,
                until=until,
            )
        except DataValidationError as exc:
            if source is None:
                raise
            raise with_views_hint(proj, proj.metadata.resolve(ref).package_sha256, exc) from exc
        report["notes"] = [*report.get("notes", []), *notes]
        if filled is not None:  # the file as given, not the filled copy that was read
            report |= {
                "source": str(source),
                "dialect": filled.dialect,
                "bad_lines": filled.bad_lines,
                "features": filled.features,
            }
        elif source is not None:
            report["features"] = None
        return report


@dataclass(frozen=True)
class _FilledFile:
    """A file with its view features filled, written beside the scratch, and what was read."""

    path: Path
    dialect: dict[str, Any] | None
    bad_lines: list[dict[str, Any]]
    features: dict[str, Any]


def _fill_file(
    project: Project,
    ref: str,
    source: Path,
    read: ReadOptions | None,
    features: str,
    scratch: Path,
) -> _FilledFile | None:
    """``source`` with the view features it lacks filled batch by batch into a Parquet file in
    ``scratch`` (read as the check reads it: the inputs as text, the training NA tokens);
    None when nothing is to be filled."""
    from dataclasses import replace

    import orjson

    from keel.data.export import TableWriter
    from keel.data.files import open_data, read_batches, retyped
    from keel.data.reader import CsvFile, dialect_of, file_columns
    from keel.features.pipeline import FeaturePipeline
    from keel.serve.batch import BATCH_ROWS
    from keel.serve.viewfill import plan_fill

    sha = project.metadata.resolve(ref).package_sha256
    manifest = orjson.loads(project.artifacts.get(sha))
    inputs = list(FeaturePipeline.from_state(manifest["features"]).inputs)
    opened = open_data(source, replace(_reading(read, project), text=tuple(inputs)))
    fill = plan_fill(project, sha, inputs, file_columns(opened), features, where=str(source))
    if fill is None:
        return None
    target = scratch / "filled.parquet"

    def write() -> None:
        fill.restart()
        writer = TableWriter(target, "parquet")
        failed = True
        try:
            for table in read_batches(opened, None, BATCH_ROWS):
                writer.write(fill.fill(table))
            failed = False
        finally:
            writer.close(failed=failed)

    try:
        retyped(opened, write)
    finally:
        fill.close()
    dialect = dialect_of(opened)
    bad = opened.bad_lines if isinstance(opened, CsvFile) else ()
    return _FilledFile(
        target,
        None if dialect is None else dialect.to_dict(),
        [line.to_dict() for line in bad],
        fill.result().to_dict(),
    )


def _compacted(project: Project, ref: str) -> list[str]:
    """Compact the model's closed log files before they are read; a failure is a note."""
    from keel.errors import KeelError

    model = ref.partition("@")[0]
    log = Path(project.predictions_dir) / model
    if project.config.monitor.retention_days is None and not any(log.glob("*/*.jsonl")):
        return []  # no JSON Lines file and no retention: nothing to do (nothing imported)
    from keel.monitor.compact import compact

    try:
        compact(project, model)
    except KeelError:
        pass  # an unknown model: the check that follows says so
    except OSError as exc:
        return [f"the prediction log was not compacted: {exc}"]
    return []
