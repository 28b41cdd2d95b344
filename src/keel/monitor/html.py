"""A monitoring report for people (one HTML page) and for dashboards (Prometheus text).

:func:`render_html` turns ``keel monitor``'s JSON report (and the alerts of its period) into one
self-contained page: no script, no stylesheet or font to fetch, charts as inline SVG (built
here and with :mod:`keel.registry.charts`, as model cards are). Sections: a summary, drift per
feature over time (a heatmap of PSI by window, coloured by the feature's warn and alert levels),
the latest window's drift by feature, prediction drift, CBPE's estimated performance with its
error band, realised performance and latency when the report has them, and the alerts.

:func:`render_prometheus` writes the latest window's gauges in the Prometheus text exposition
format (version 0.0.4), for a textfile collector or a push gateway.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from keel.monitor.rules import realised_metrics
from keel.registry.charts import PALETTE, bar_chart

__all__ = ["evidence_chart", "render_html", "render_prometheus"]

MAX_WINDOWS = 120
"""Windows drawn in the over-time charts (the most recent)."""
_MAX_FEATURES = 40
_MAX_EVIDENCE = 20
_COLOURS = {"stable": "#d8f0d2", "moderate": "#ffe08a", "drift": "#f28b82", None: "#eeeeee"}
_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
    "font-size:12px;text-align:left}th{background:#f4f4f4}section{margin-bottom:2em}"
    ".note{color:#666}.critical{color:#b00020;font-weight:bold}.warning{color:#b26a00}"
)
_SVG_NS = ' xmlns="http://www.w3.org/2000/svg"'


def render_html(
    report: Mapping[str, Any],
    alerts: Sequence[Mapping[str, Any]] = (),
    *,
    generated_at: datetime | None = None,
) -> str:
    """The report as one HTML page (UTF-8 text)."""
    windows = list(report.get("windows") or [])[-MAX_WINDOWS:]
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    title = f"Monitoring report: {report.get('model')}@{report.get('version')}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _summary(report, len(windows), when),
        _section("drift", "Drift per feature over time", _heatmap(report, windows)),
        _section("drift-latest", "Drift by feature, latest window", _latest(report, windows)),
        _section("prediction-drift", "Prediction drift", _prediction(windows, report)),
        _section("estimated-performance", "Estimated performance (CBPE)", _estimated(windows)),
        _section("realised-performance", "Realised performance", _realised(windows, report)),
        _section("latency", "Latency", _latency(windows, report) + _operations(report)),
        _section("alerts", "Alerts", _alerts(alerts)),
        "</body></html>",
    ]
    return "\n".join(parts).replace(_SVG_NS, "")


def evidence_chart(alert: Mapping[str, Any]) -> str:
    """An alert's quantity over the windows up to its span, with the rule's threshold (SVG)."""
    evidence = alert.get("evidence") or {}
    context = list(evidence.get("context") or evidence.get("windows") or [])
    title = f"#{alert.get('id')} {alert.get('rule')}: {alert.get('condition')}"
    lines = [(str(evidence.get("quantity", "value")), [w.get("value") for w in context], None)]
    return _series_chart("alert-evidence", title, context, lines,
                         [("threshold", alert.get("threshold"))])  # fmt: skip


def render_prometheus(report: Mapping[str, Any]) -> str:
    """The latest window's gauges in Prometheus' text exposition format."""
    windows = report.get("windows") or []
    latest: Mapping[str, Any] = windows[-1] if windows else report
    base = {"model": str(report.get("model")), "version": str(report.get("version"))}
    if report.get("role"):
        base["role"] = str(report["role"])
    out: list[str] = []

    def gauge(name: str, help_text: str, samples: Sequence[tuple[Mapping[str, str], Any]]) -> None:
        kept = [(labels, v) for labels, v in samples if _finite(v)]
        if not kept:
            return
        out.append(f"# HELP keel_monitor_{name} {help_text}")
        out.append(f"# TYPE keel_monitor_{name} gauge")
        for labels, value in kept:
            out.append(f"keel_monitor_{name}{_labels({**base, **labels})} {float(value)!r}")

    gauge("window_rows", "Logged rows in the latest window.", [({}, latest.get("rows"))])
    start = _seconds(str(latest.get("start") or ""))
    gauge("window_start_timestamp_seconds", "Start of the latest window.", [({}, start)])
    gauge(
        "enough_data",
        "1 when the latest window has at least monitor.min_rows rows.",
        [({}, int(latest.get("verdict") != "not_enough_data"))],
    )
    columns = latest.get("columns") or []
    # a distance over too few rows is noise (PSI 10 from a handful): left out, so that a rule
    # such as keel_monitor_feature_psi > 0.2 never fires on it; enough_data says why
    judged = [c for c in columns if c.get("verdict") != "not_enough_data"]
    for metric, text in (
        ("psi", "PSI"),
        ("js", "Jensen-Shannon distance"),
        ("wasserstein", "Wasserstein-1 in training standard deviations"),
    ):
        gauge(
            f"feature_{metric}",
            f"{text} of a feature against training, latest window (absent without enough rows).",
            [({"feature": str(c["column"])}, c.get(metric)) for c in judged],
        )
    gauge(
        "feature_drift",
        "1 when the feature's verdict is drift (BH-controlled).",
        [({"feature": str(c["column"])}, int(c.get("verdict") == "drift")) for c in columns],
    )
    gauge(
        "drifted_features",
        "Features whose verdict is drift.",
        [({}, len(latest.get("drifted_columns") or []))],
    )
    enough = latest.get("verdict") != "not_enough_data"
    prediction = (latest.get("prediction") or {}) if enough else {}
    for metric in ("psi", "js"):
        gauge(
            f"prediction_{metric}",
            f"{metric.upper()} of the model's output against the training target.",
            [({}, prediction.get(metric))],
        )
    performance = latest.get("performance") or {}
    for metric in ("accuracy", "roc_auc"):
        gauge(f"estimated_{metric}", f"CBPE-estimated {metric}.", [({}, performance.get(metric))])
        gauge(
            f"estimated_{metric}_error",
            f"Standard error of the estimated {metric}.",
            [({}, performance.get(f"{metric}_error"))],
        )
    for metric, value in _realised_values(latest).items():
        gauge(f"realised_{metric}", f"Realised {metric} from labels.", [({}, value)])
    latency = latest.get("latency") or {}
    gauge(
        "latency_ms",
        "Latency percentiles in milliseconds.",
        [
            ({"quantile": k.removesuffix("_ms")}, v)
            for k, v in latency.items()
            if k.startswith("p") and k.endswith("_ms")
        ],
    )
    for key, help_text in (
        ("requests", "Requests the servers answered in the latest window."),
        ("error_rate", "Share of them answered 5xx."),
        ("throughput_rps", "Requests per second."),
        ("log_dropped", "Requests the prediction log dropped."),
    ):
        gauge(key, help_text, [({}, latency.get(key))])
    slo = latest.get("slo") or {}
    if slo:
        gauge("slo_breached", "1 when an SLO of monitor.slo is breached, else 0.",
              [({}, 1.0 if slo.get("status") == "breached" else 0.0)])  # fmt: skip
    return "\n".join(out) + "\n"


# -- sections ---------------------------------------------------------------------------------


def _section(anchor: str, heading: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(heading)}</h2>{body}</section>'


def _summary(report: Mapping[str, Any], shown: int, when: str) -> str:
    rows = [
        ("model", f"{report.get('model')}@{report.get('version')}"),
        ("versions read", ", ".join(report.get("versions") or []) or "-"),
        ("role", report.get("role") or "all"),
        ("source", report.get("source")),
        ("windows", f"{report.get('window')} ({shown} shown)" if shown else "the whole log"),
        ("rows", report.get("rows")),
        ("training rows", report.get("reference_rows")),
        ("verdict", f"{report.get('verdict')} (latest window: {report.get('latest_verdict')})"),
        ("generated", when),
    ]
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    notes = "".join(f'<p class="note">{escape(str(n))}</p>' for n in report.get("notes") or [])
    return f'<section id="summary"><table>{table}</table>{notes}</section>'


def _heatmap(report: Mapping[str, Any], windows: Sequence[Mapping[str, Any]]) -> str:
    if not windows:
        return '<p class="note">One window (the whole log): see the latest-window section.</p>'
    features = [str(c["column"]) for c in report.get("columns") or []][:_MAX_FEATURES]
    if not features:
        return '<p class="note">No feature was compared.</p>'
    cell, left, top = max(4, min(24, 840 // len(windows))), 150, 24
    width, height = left + cell * len(windows) + 10, top + 16 * len(features) + 40
    svg = [
        f'<svg{_SVG_NS} role="img" data-chart="drift-heatmap" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        "<title>PSI per feature and window</title>",
    ]
    for i, name in enumerate(features):
        y = top + 16 * i
        svg.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{escape(name)}</text>')
        for j, window in enumerate(windows):
            found = {str(c["column"]): c for c in window.get("columns") or []}.get(name)
            verdict = found.get("verdict") if found else None
            colour = _COLOURS.get(verdict, _COLOURS[None])
            psi = "n/a" if not found or found.get("psi") is None else f"{found['psi']:.4f}"
            svg.append(
                f'<rect x="{left + cell * j}" y="{y}" width="{cell - 1}" height="14" '
                f'fill="{colour}"><title>{escape(name)} {escape(str(window.get("start")))}: '
                f"PSI {psi} ({escape(str(verdict or 'no data'))})</title></rect>"
            )
    for j in sorted({0, len(windows) // 2, len(windows) - 1}):
        x = left + cell * j
        label = _short(str(windows[j].get("start")))
        svg.append(f'<text x="{x}" y="{height - 12}">{escape(label)}</text>')
    svg.append("</svg>")
    legend = " ".join(
        f'<span style="background:{c};padding:0 6px">{escape(str(k or "not enough data"))}</span>'
        for k, c in _COLOURS.items()
    )
    return "".join(svg) + f"<p>{legend}</p>"


def _latest(report: Mapping[str, Any], windows: Sequence[Mapping[str, Any]]) -> str:
    latest = windows[-1] if windows else report
    columns = list(latest.get("columns") or [])[:_MAX_FEATURES]
    if not columns:
        return '<p class="note">No feature was compared.</p>'
    chart = bar_chart(
        "drift-latest",
        f"PSI by feature, window {_short(str(latest.get('start') or 'all'))}",
        [str(c["column"]) for c in columns],
        [("PSI", [c.get("psi") for c in columns])],
        x_label="PSI",
    )
    head = "<tr><th>feature</th><th>PSI</th><th>JS</th><th>W1/std</th><th>p (BH)</th>"
    rows = "".join(
        f"<tr><td>{escape(str(c['column']))}</td><td>{_num(c.get('psi'))}</td>"
        f"<td>{_num(c.get('js'))}</td><td>{_num(c.get('wasserstein'))}</td>"
        f"<td>{_num(c.get('p_adjusted'), '{:.2g}')}</td><td>{escape(str(c.get('verdict')))}</td>"
        "</tr>"
        for c in columns
    )
    return chart + f"<table>{head}<th>verdict</th></tr>{rows}</table>"


def _prediction(windows: Sequence[Mapping[str, Any]], report: Mapping[str, Any]) -> str:
    series = [(w.get("prediction") or {}).get("psi") for w in windows]
    if not any(_finite(v) for v in series):
        overall = (report.get("prediction") or {}).get("psi")
        if _finite(overall):
            return f"<p>Output PSI against the training target: {overall:.4f}</p>"
        return '<p class="note">No prediction drift in this report.</p>'
    warn = report.get("thresholds", {}).get("alert")
    lines = [("output PSI", series, None)]
    return _series_chart(
        "prediction-drift",
        "Output PSI per window",
        windows,
        lines,
        [("alert", warn)] if _finite(warn) else [],
    )


def _estimated(windows: Sequence[Mapping[str, Any]]) -> str:
    charts = []
    for metric in ("roc_auc", "accuracy"):
        values = [(w.get("performance") or {}).get(metric) for w in windows]
        errors = [(w.get("performance") or {}).get(f"{metric}_error") for w in windows]
        if not any(_finite(v) for v in values):
            continue
        lines: list[tuple[str, Sequence[Any], Sequence[Any] | None]] = [
            (f"estimated {metric}", values, errors)
        ]
        realised = [_realised_values(w).get(metric) for w in windows]
        if any(_finite(v) for v in realised):
            lines.append((f"realised {metric}", realised, None))
        charts.append(
            _series_chart(
                f"estimated-{metric}",
                f"{metric}: CBPE estimate ± 1 standard error",
                windows,
                lines,
                [],
            )
        )
    if not charts:
        return (
            '<p class="note">No estimate: CBPE needs a binary classifier and windows with at '
            "least monitor.min_rows rows.</p>"
        )
    return "".join(charts)


def _realised(windows: Sequence[Mapping[str, Any]], report: Mapping[str, Any]) -> str:
    if not windows:
        return _realised_whole(report)
    metrics = sorted({m for w in windows for m in _realised_values(w)})
    if not metrics:
        return '<p class="note">No labelled windows yet (keel feedback sends labels).</p>'
    return "".join(
        _series_chart(
            f"realised-{m}",
            f"realised {m} per window",
            windows,
            [(m, [_realised_values(w).get(m) for w in windows], None)],
            [],
        )
        for m in metrics
    )


def _realised_whole(report: Mapping[str, Any]) -> str:
    """Realised performance of a report with no windows (the whole log is one window)."""
    section = report.get("realised") or {}
    values = _realised_values(report)
    if not values:
        return '<p class="note">No labelled windows yet (keel feedback sends labels).</p>'
    metrics = section.get("metrics") or {}
    cells = []
    for name in sorted(values):
        low, high = (metrics.get(name) or {}).get("low"), (metrics.get(name) or {}).get("high")
        interval = f" [{_num(low, '{:.5g}')}, {_num(high, '{:.5g}')}]" if _finite(low) else ""
        cells.append(f"{escape(name)} {_num(values[name], '{:.5g}')}{interval}")
    return (
        f"<p>From {escape(str(section.get('labelled', '-')))} labelled rows: "
        f"{', '.join(cells)} (95% bootstrap intervals).</p>"
    )


def _latency(windows: Sequence[Mapping[str, Any]], report: Mapping[str, Any]) -> str:
    keys = sorted({k for w in windows for k in (w.get("latency") or {}) if k.endswith("_ms")})
    if not keys and not windows and report.get("latency"):
        return ""  # the whole log is one window: _operations gives its figures
    if not keys:
        return '<p class="note">The report has no latency figures for these windows.</p>'
    lines = [(k, [(w.get("latency") or {}).get(k) for w in windows], None) for k in keys]
    return _series_chart("latency", "latency per window (ms)", windows, lines, [])


def _operations(report: Mapping[str, Any]) -> str:
    """The selection's traffic and its SLO verdict (keel.monitor.operations)."""
    latency, slo = report.get("latency") or {}, report.get("slo") or {}
    parts = []
    if latency:
        parts.append(
            f"<p>{latency['requests']} requests, error rate {_num(latency.get('error_rate'))}, "
            f"p50 {_num(latency.get('p50_ms'), '{:.3g}')} ms, p95 "
            f"{_num(latency.get('p95_ms'), '{:.3g}')} ms, p99 "
            f"{_num(latency.get('p99_ms'), '{:.3g}')} ms, {latency.get('log_dropped', 0)} "
            "dropped by the prediction log.</p>"
        )
    if slo:
        shown = ", ".join(
            f"{escape(k)} {_num(o['value'], '{:.4g}')} (target {o['target']:g}): {o['status']}"
            for k, o in slo["objectives"].items()
        )
        parts.append(f"<p>SLO <strong>{escape(str(slo['status']))}</strong>: {shown}.</p>")
    return "".join(parts)


def _alerts(alerts: Sequence[Mapping[str, Any]]) -> str:
    if not alerts:
        return '<p class="note">No alert in this period.</p>'
    head = (
        "<tr><th>id</th><th>severity</th><th>rule</th><th>window</th><th>value</th>"
        "<th>message</th><th>status</th><th>fired</th></tr>"
    )
    rows = "".join(
        f'<tr><td>{a["id"]}</td><td class="{escape(str(a["severity"]))}">'
        f"{escape(str(a['severity']))}</td><td>{escape(str(a['rule']))}</td>"
        f"<td>{escape(_short(str(a['window_start'])))} .. {escape(_short(str(a['window_end'])))}"
        f"</td><td>{_num(a.get('value'))}</td><td>{escape(str(a['message']))}</td>"
        f"<td>{escape(str(a['status']))}</td><td>{escape(str(a['fired_at'])[:19])}</td></tr>"
        for a in alerts
    )
    charts = "".join(
        f"<details><summary>evidence of alert #{a['id']}</summary>{evidence_chart(a)}</details>"
        for a in alerts[:_MAX_EVIDENCE]
        if a.get("evidence")
    )
    return f"<table>{head}{rows}</table>{charts}"


# -- a time-series chart with an optional band -------------------------------------------------


def _series_chart(
    kind: str,
    title: str,
    windows: Sequence[Mapping[str, Any]],
    lines: Sequence[tuple[str, Sequence[Any], Sequence[Any] | None]],
    levels: Sequence[tuple[str, Any]],
) -> str:
    """Values per window as polylines (gaps where missing), ``± errors`` as a shaded band."""
    width, height, left, right, top, bottom = 640, 260, 56, 12, 28, 40
    known = [float(v) for _, vs, _ in lines for v in vs if _finite(v)]
    for _, values, errors in lines:
        for v, e in zip(values, errors or [None] * len(values), strict=True):
            if _finite(v) and _finite(e):
                known += [float(v) - float(e), float(v) + float(e)]
    known += [float(v) for _, v in levels if _finite(v)]
    low, high = (min(known), max(known)) if known else (0.0, 1.0)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    pad = (high - low) * 0.08
    low, high = low - pad, high + pad
    n = len(windows)

    def x(i: int) -> float:
        return left + (i + 0.5) / max(n, 1) * (width - left - right)

    def y(v: float) -> float:
        return top + (high - v) / (high - low) * (height - top - bottom)

    svg = [
        f'<svg{_SVG_NS} role="img" data-chart="{escape(kind)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-size="13">'
        f"{escape(title)}</text>",
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" fill="none" stroke="#999"/>',
    ]
    for t in range(5):
        v = low + t / 4 * (high - low)
        svg.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    for j in sorted({0, n // 2, n - 1} if n else set()):
        label = escape(_short(str(windows[j].get("start"))))
        svg.append(f'<text x="{x(j):.1f}" y="{height - 22}" text-anchor="middle">{label}</text>')
    for label, level in levels:
        if _finite(level):
            svg.append(
                f'<line x1="{left}" y1="{y(level):.1f}" x2="{width - right}" y2="{y(level):.1f}" '
                f'stroke="#b00020" stroke-dasharray="4 3"><title>{escape(label)} {level:g}'
                "</title></line>"
            )
    for k, (label, values, errors) in enumerate(lines):
        colour = PALETTE[k % len(PALETTE)]
        if errors is not None:
            svg.extend(_band(values, errors, x, y, colour))
        for run in _runs(values):
            points = " ".join(f"{x(i):.1f},{y(float(values[i])):.1f}" for i in run)
            svg.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
            )
            for i in run:
                svg.append(
                    f'<circle cx="{x(i):.1f}" cy="{y(float(values[i])):.1f}" r="2.5" '
                    f'fill="{colour}"><title>{escape(label)} '
                    f"{escape(str(windows[i].get('start')))}: {float(values[i]):.4g}</title>"
                    "</circle>"
                )
        svg.append(
            f'<text x="{width - right - 6}" y="{top + 14 + 14 * k}" text-anchor="end" '
            f'fill="{colour}">{escape(label)}</text>'
        )
    svg.append("</svg>")
    return "".join(svg)


def _band(values: Sequence[Any], errors: Sequence[Any], x: Any, y: Any, colour: str) -> list[str]:
    out = []
    for run in _runs(values):
        run = [i for i in run if _finite(errors[i])]
        if len(run) < 2:
            continue
        upper = [f"{x(i):.1f},{y(float(values[i]) + float(errors[i])):.1f}" for i in run]
        lower = [f"{x(i):.1f},{y(float(values[i]) - float(errors[i])):.1f}" for i in run[::-1]]
        out.append(
            f'<polygon points="{" ".join(upper + lower)}" fill="{colour}" '
            'fill-opacity="0.18" stroke="none"/>'
        )
    return out


def _runs(values: Sequence[Any]) -> list[list[int]]:
    """Index runs of consecutive finite values."""
    runs: list[list[int]] = []
    current: list[int] = []
    for i, v in enumerate(values):
        if _finite(v):
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


# -- helpers -----------------------------------------------------------------------------------


def _realised_values(window: Mapping[str, Any]) -> dict[str, float]:
    """A window's realised metrics (as :mod:`keel.monitor.rules` reads them), finite only."""
    return {k: float(v) for k, v in realised_metrics(window).items() if _finite(v)}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any, fmt: str = "{:.4f}") -> str:
    return fmt.format(value) if _finite(value) else "-"


def _short(text: str) -> str:
    return text.replace("T", " ").removesuffix(" 00:00:00Z").removesuffix(":00Z")


def _seconds(text: str) -> float | None:
    if not text or text.isdigit():
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _labels(labels: Mapping[str, str]) -> str:
    def quoted(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{quoted(v)}"' for k, v in labels.items()) + "}"
