"""Model cards: one page per registered version, in Markdown and as self-contained HTML.

A card gathers what is already stored with the version (the package manifest, its lineage, the
train run's facts and the evaluation: metrics with intervals, slices, calibration or residuals,
worst slices, fairness, gate verdicts, importance) and the words of keel.yaml's ``card:``
section, and draws its plots as inline SVG (:mod:`keel.registry.charts`): no script, no CDN,
so it opens offline and can be attached to a review. ROC and precision-recall curves are the
thinned points stored with the evaluation (nothing is predicted again); only a version
evaluated before they were stored has them recomputed from its own test snapshot.

The register step stores both renderings as ``model-card`` artifacts (metadata: the package's
sha256 and the format); :func:`model_card` returns the stored one, or renders a version
registered before cards existed on demand.

Example:
    >>> html = model_card(project, "adult@3", fmt="html")
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from keel.errors import ConfigError, KeelError
from keel.evaluate.curves import curves_of
from keel.evaluate.evaluation import Evaluation
from keel.registry.charts import bar_chart, interval_chart, line_chart

if TYPE_CHECKING:
    from keel.project import Project
    from keel.types import Artifact, ModelVersion

__all__ = ["FORMATS", "KIND", "SECTIONS", "model_card", "render_card", "store_cards"]

KIND = "model-card"
FORMATS = ("html", "md")
CardFormat = Literal["html", "md"]
#: The card's sections: (anchor id, heading), in order; both formats carry every one.
SECTIONS = (
    ("model-details", "Model details"),
    ("intended-use", "Intended use"),
    ("data", "Data"),
    ("training-parameters", "Training parameters"),
    ("quantitative-analysis", "Quantitative analysis"),
    ("gates", "Gate verdicts"),
    ("caveats", "Caveats"),
)


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("keel.registry", "templates"),
        autoescape=select_autoescape(("html.j2",), default_for_string=False, default=False),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["cell"] = _cell
    return env


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and abs(value) < 10**-digits:
        return f"{value:.2e}"
    return f"{value:.{digits}f}" if abs(value) < 1e3 else f"{value:,.1f}"


def _cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, one line, and ``&``, ``<`` and
    ``>`` as entities, since Markdown passes raw HTML through (a category value such as
    ``<img src=x onerror=...>`` from the data would otherwise be markup wherever the card is
    rendered); every renderer shows the entities as the characters."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")


def _check_format(fmt: str) -> CardFormat:
    if fmt not in FORMATS:
        raise ConfigError(
            f"unknown card format {fmt!r}; use one of {', '.join(FORMATS)}.", field="format"
        )
    return "html" if fmt == "html" else "md"


def model_card(project: Project, ref: str, *, fmt: str = "html", fresh: bool = False) -> str:
    """The card of ``NAME@VERSION`` (or an alias): the one stored at registration, else (or
    with ``fresh``: always) rendered now, with keel.yaml's current ``card:`` words.

    Raises:
        NotFoundError: No such model or version.
        ConfigError: ``fmt`` is not ``html`` or ``md``.
    """
    chosen = _check_format(fmt)
    version = project.metadata.resolve(ref)
    stored = None if fresh else _stored(project, version.package_sha256, chosen)
    return stored if stored is not None else render_card(project, version, fmt=chosen)


def _stored(project: Project, package_sha256: str, fmt: str) -> str | None:
    for artifact in project.metadata.list_artifacts(kind=KIND, limit=10_000):
        meta = artifact.metadata or {}
        if meta.get("package_sha256") == package_sha256 and meta.get("format") == fmt:
            return project.artifacts.get(artifact.sha256).decode()
    return None


def store_cards(project: Project, version: ModelVersion) -> list[Artifact]:
    """Render the version's card in both formats and record them as ``model-card`` artifacts
    (metadata: model, version, package_sha256, format)."""
    facts = _facts(project, version)
    stored = []
    for fmt in ("html", "md"):
        text = _render(facts, fmt)
        meta = {"model": version.name, "version": version.version, "format": fmt,
                "package_sha256": version.package_sha256}  # fmt: skip
        artifact = project.artifacts.put(text.encode(), kind=KIND, metadata=meta)
        project.metadata.record_artifact(artifact)
        stored.append(artifact)
    return stored


def render_card(project: Project, version: ModelVersion, *, fmt: str = "html") -> str:
    """Render a version's card now (``html``: one self-contained page; ``md``: Markdown with
    the plots as ``data:`` SVG images)."""
    return _render(_facts(project, version), _check_format(fmt))


def _render(facts: dict[str, Any], fmt: CardFormat) -> str:
    charts = facts["charts"]
    if fmt == "md":
        charts = {k: _data_uri(v) for k, v in charts.items()}
    else:
        charts = {k: Markup(v) for k, v in charts.items()}
    template = _environment().get_template(f"card.{fmt}.j2")
    return template.render(**{**facts, "charts": charts, "sections": dict(SECTIONS)})


def _data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


# --- what the card says ----------------------------------------------------------------------


def _facts(project: Project, version: ModelVersion) -> dict[str, Any]:
    from keel.registry.package import model_file_of

    manifest = orjson.loads(project.artifacts.get(version.package_sha256))
    lineage = dict((manifest.get("lineage") or {}).get("artifacts") or {})
    raw = _json_artifact(project, lineage.get("evaluation"))
    evaluation = Evaluation.from_json(raw) if raw else None
    notes: dict[str, str] = {}
    charts: dict[str, str] = {}
    facts: dict[str, Any] = {
        "name": version.name,
        "version": version.version,
        "details": {
            "Name": version.name,
            "Version": version.version,
            "Flavor": manifest.get("flavor", ""),
            "Task": manifest.get("task", ""),
            "Classes": ", ".join(manifest.get("classes") or []) or "-",
            "Package sha256": version.package_sha256,
            "Model file sha256": manifest["files"][model_file_of(manifest)]["sha256"],
            "Created": version.created_at.isoformat(),
            "Registering run": version.run_id or "-",
            "Inputs": len((manifest.get("signature") or {}).get("inputs") or []),
        },
        "card": project.config.card,
        "data": _data(project, lineage),
        "training": _training(project, lineage.get("model")),
        "evaluation": evaluation,
        "notes": notes,
        "charts": charts,
    }
    if evaluation is None:
        notes["evaluation"] = "no evaluation is stored with this version."
        facts.update(
            metrics=[], slices=[], fairness=[], gates=[], caveats=list(project.config.card.caveats)
        )
        return facts
    facts["metrics"] = _metrics(evaluation)
    facts["slices"] = _slices(evaluation, charts)
    facts["fairness"] = _fairness(evaluation, charts)
    facts["gates"] = [g.to_json() for g in evaluation.gates]
    quantiles = evaluation.residuals.quantiles if evaluation.residuals else {}
    facts["quantiles"] = sorted(quantiles.items(), key=lambda kv: float(kv[0].lstrip("p")))
    _calibration_charts(evaluation, charts)
    if evaluation.task != "regression" and evaluation.residuals is None:
        _curve_charts(project, version.package_sha256, manifest, lineage, evaluation, charts, notes)
    facts["importance"] = _importance(raw.get("importance"), charts, notes)
    facts["permutation"] = _permutation(evaluation, charts)
    if facts["permutation"] and not facts["importance"]:
        notes["importance"] = (
            "no mean |SHAP| is stored for this version (a flavor without native contributions, "
            "evaluated without the explain extra): permutation importance only."
        )
    facts["caveats"] = _caveats(project, evaluation, notes)
    return facts


def _json_artifact(project: Project, sha: str | None) -> dict[str, Any]:
    if not sha:
        return {}
    try:
        value = orjson.loads(project.artifacts.get(sha))
    except KeelError:  # collected, or never stored: the card says what it lacks
        return {}
    return value if isinstance(value, dict) else {}


def _data(project: Project, lineage: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each artifact the version was built from, snapshots first, with rows and source."""
    out = []
    order = ("train_snapshot", "test_snapshot")
    for role in sorted(lineage, key=lambda r: (order.index(r) if r in order else 9, r)):
        sha = lineage[role]
        entry: dict[str, Any] = {"role": role, "sha256": sha, "rows": None, "source": ""}
        try:
            meta = project.metadata.get_artifact(sha).metadata or {}
        except KeelError:
            meta = {}
        entry["rows"] = meta.get("rows")
        entry["source"] = meta.get("source") or ", ".join(meta.get("files") or [])
        out.append(entry)
    return out


def _training(project: Project, model_sha: str | None) -> dict[str, Any]:
    """The train run's parameters and facts (rows, best iteration, split)."""
    if not model_sha:
        return {}
    producer = next(
        (e.run_id for e in project.metadata.lineage(model_sha) if e.direction == "output"), None
    )
    if producer is None:
        return {}
    facts = dict((project.metadata.get_run(producer).params or {}).get("facts") or {})
    out: dict[str, Any] = {f"params.{k}": v for k, v in sorted((facts.get("params") or {}).items())}
    for key in ("train_rows", "validation_rows", "best_iteration", "executor", "workers"):
        if key in facts:
            out[key] = facts[key]
    for key, value in sorted((facts.get("split") or {}).items()):
        out[f"split.{key}"] = value
    for key, value in sorted((facts.get("metrics") or {}).items()):
        out[f"training_metrics.{key}"] = value
    out["train_run"] = producer
    return out


def _metrics(evaluation: Evaluation) -> list[dict[str, Any]]:
    return [
        {"name": name, "value": e.value, "low": e.ci_low, "high": e.ci_high}
        for name, e in evaluation.overall.estimates.items()
    ]


def _headline(evaluation: Evaluation) -> str | None:
    """The task's lead metric (roc_auc, rmse, ...), else the first one stored."""
    from keel.train.tasks import task_for

    try:
        lead = str(task_for(evaluation.task).headline)
    except KeelError:  # a plug-in task that is not installed here
        lead = ""
    return (
        lead
        if lead in evaluation.overall.estimates
        else next(iter(evaluation.overall.estimates), None)
    )


def _slices(evaluation: Evaluation, charts: dict[str, str]) -> list[dict[str, Any]]:
    headline = _headline(evaluation)
    out = []
    for column, groups in evaluation.slices.items():
        rows = [
            {"group": group, "rows": m.rows, "small": m.rows < evaluation.min_slice_size,
             "metrics": {k: (e.value, e.ci_low, e.ci_high) for k, e in m.estimates.items()}}
            for group, m in groups.items()
        ]  # fmt: skip
        names = sorted({k for m in groups.values() for k in m.estimates})
        out.append({"column": column, "rows": rows, "names": names,
                    "gaps": dict(evaluation.gaps.get(column, {}))})  # fmt: skip
        if headline is None or not groups:
            continue
        points = []
        for group, m in groups.items():
            e = m.estimates.get(headline)
            label = f"{group} (n={m.rows})"
            points.append((label, None, None, None) if e is None else
                          (label, e.value, e.ci_low, e.ci_high))  # fmt: skip
        charts[f"slice:{column}"] = interval_chart(
            "slices", f"{headline} by {column}", points, x_label=f"{headline} (interval)"
        )
    return out


def _fairness(evaluation: Evaluation, charts: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for feature, audit in evaluation.fairness.items():
        groups = list(audit.groups)
        charts[f"fairness:{feature}"] = bar_chart(
            "fairness", f"Rates by {feature}", [g.group for g in groups],
            [("selection rate", [g.selection_rate for g in groups]),
             ("true positive rate", [g.tpr for g in groups]),
             ("false positive rate", [g.fpr for g in groups])],
            x_label="rate at the decision threshold", domain=(0.0, 1.0),
        )  # fmt: skip
        out.append({"feature": feature, "groups": groups, "disparities": dict(audit.disparities),
                    "undefined": dict(audit.undefined)})  # fmt: skip
    return out


def _calibration_charts(evaluation: Evaluation, charts: dict[str, str]) -> None:
    if evaluation.calibration is not None and evaluation.calibration.bins:
        bins = evaluation.calibration.bins
        charts["calibration"] = line_chart(
            "calibration", "Reliability curve",
            [("model", [b[3] for b in bins], [b[4] for b in bins])],
            x_label="mean predicted probability", y_label="observed rate", diagonal=True,
        )  # fmt: skip
    if evaluation.residuals is not None and evaluation.residuals.quantiles:
        q, r = evaluation.residuals.quantiles, evaluation.residuals
        rows = [
            ("p5 .. p95", q.get("p50"), q.get("p5"), q.get("p95")),
            ("p25 .. p75", q.get("p50"), q.get("p25"), q.get("p75")),
            ("mean +/- std", r.mean, r.mean - r.std, r.mean + r.std),
        ]
        charts["residuals"] = interval_chart(
            "residuals", "Residuals (prediction - truth)", rows, x_label="residual"
        )


def _curve_charts(
    project: Project, package_sha256: str, manifest: Mapping[str, Any], lineage: Mapping[str, str],
    evaluation: Evaluation, charts: dict[str, str], notes: dict[str, str],
) -> None:  # fmt: skip
    """ROC and PR curves: the thinned points stored with the evaluation; for a version
    evaluated before they were stored, recomputed from its test snapshot (loads the package)."""
    curves = evaluation.curves
    if curves is None:
        try:
            y, proba = _test_predictions(project, package_sha256, manifest, lineage)
        except (KeelError, ValueError, KeyError) as exc:
            notes["curves"] = f"ROC and PR curves could not be recomputed from the test data: {exc}"
            return
        curves = curves_of(y, proba, evaluation.classes)
    roc = [(c.label, c.x, c.y) for c in curves.roc]
    pr = [(c.label, c.x, c.y) for c in curves.pr]
    charts["roc"] = line_chart("roc", "ROC curve", roc, x_label="false positive rate",
                               y_label="true positive rate", diagonal=True)  # fmt: skip
    charts["pr"] = line_chart("pr", "Precision-recall curve", pr, x_label="recall",
                              y_label="precision")  # fmt: skip


def _test_predictions(
    project: Project, package_sha256: str, manifest: Mapping[str, Any], lineage: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    from keel.data import read_snapshot
    from keel.features.custom import importable_from
    from keel.registry.verify import load_package
    from keel.train.target import encode_target

    if "test_snapshot" not in lineage:
        raise ValueError("the version's lineage names no test snapshot")
    table = read_snapshot(project.artifacts, lineage["test_snapshot"])
    data = project.config.data
    if data.target not in table.column_names:
        raise ValueError(f"target '{data.target}' is not a column of the test snapshot")
    package = load_package(project, package_sha256)
    y, _ = encode_target(table.column(data.target), task=manifest["task"], target=data.target,
                         positive_label=data.positive_label,
                         classes=list(manifest.get("classes") or []) or None)  # fmt: skip
    coerced = package.pipeline.coerce(table)
    coerced.raise_errors("test data: ")
    with importable_from(project.root):
        proba = np.asarray(package.model.predict(package.pipeline.transform(coerced)))
    return y, proba


def _importance(raw: Any, charts: dict[str, str], notes: dict[str, str]) -> list[dict[str, Any]]:
    """Global importance when the evaluation holds it: ``{feature: value}`` (one method) or
    ``{method: {feature: value}}``; the top 20 features by the first method."""
    if not raw:
        notes["importance"] = "the evaluation holds no global importance: no plot."
        return []
    methods = (
        {"mean |SHAP|": raw} if _numbers(raw) else {k: v for k, v in raw.items() if _numbers(v)}
    )
    if not methods:
        notes["importance"] = "the stored importance is not in a form the card reads: no plot."
        return []
    first = next(iter(methods.values()))
    features = sorted(first, key=lambda f: -abs(float(first[f])))[:20]
    charts["importance"] = bar_chart(
        "importance", "Global importance: mean |SHAP|", features,
        [(m, [None if v.get(f) is None else float(v[f]) for f in features])
         for m, v in methods.items()],
        x_label="importance",
    )  # fmt: skip
    return [{"feature": f, **{m: v.get(f) for m, v in methods.items()}} for f in features]


def _permutation(evaluation: Evaluation, charts: dict[str, str]) -> list[dict[str, Any]]:
    """Permutation importance when stored: the top 20 columns by mean drop, drawn as a dot at
    the mean with a whisker of one standard deviation each side."""
    found = evaluation.permutation
    if found is None or not found.mean:
        return []
    columns = found.ranked()[:20]
    rows = [(c, found.mean[c], found.mean[c] - found.std[c], found.mean[c] + found.std[c])
            for c in columns]  # fmt: skip
    charts["permutation"] = interval_chart(
        "permutation",
        f"Permutation importance: drop in {found.metric} ({found.repeats} repeats, "
        f"{found.rows:,} rows)",
        rows,
        x_label=f"drop in {found.metric} (mean +/- std)",
    )
    return [{"feature": c, "mean": found.mean[c], "std": found.std[c]} for c in columns]


def _numbers(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool))
        for v in value.values()
    )


def _caveats(project: Project, evaluation: Evaluation, notes: Mapping[str, str]) -> list[str]:
    """The owners' caveats, then what the numbers themselves warn about."""
    found = list(project.config.card.caveats)
    for gate in evaluation.gates:
        if not gate.passed:
            found.append(f"gate failed: {gate.gate} ({gate.reason})")
    for column, groups in evaluation.slices.items():
        small = [g for g, m in groups.items() if m.rows < evaluation.min_slice_size]
        if small:
            found.append(f"slices of {column} below min_slice_size "
                         f"({evaluation.min_slice_size} rows; reported, never gated): "
                         + ", ".join(small))  # fmt: skip
    for feature, audit in evaluation.fairness.items():
        for group in audit.excluded:
            found.append(f"fairness by {feature}: group {group.group} ({group.rows} rows) is left "
                         f"out of the differences: {group.excluded}")  # fmt: skip
        for name, why in audit.undefined.items():
            found.append(f"fairness by {feature}: {name} is undefined: {why}")
    for finding in evaluation.worst_slices[:3]:
        found.append(f"worst slice {finding.name}: loss {finding.loss:.4g} against "
                     f"{finding.counterpart_loss:.4g} elsewhere ({finding.rows} rows)")  # fmt: skip
    found.extend(notes.values())
    return found
