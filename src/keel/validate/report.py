"""The HTML validation report: every anomaly, and each column's distribution against the reference.

Self-contained: one page with inline CSS and inline SVG bar charts, no script and no CDN, so it
opens offline and can be attached to a ticket. Rendered with Jinja2 (autoescaped) from
``templates/validation.html.j2``.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

if TYPE_CHECKING:
    from keel.validate.anomalies import ColumnProfile, ValidationReport

__all__ = ["bar_chart", "render_html"]

_WIDTH, _ROW, _LABEL = 560, 16, 150
_COLOURS = {"reference": "#9aa5b1", "current": "#2563eb"}


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("keel.validate", "templates"),
        autoescape=select_autoescape(("html", "j2")),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: ValidationReport) -> str:
    """The report as one self-contained HTML page.

    Args:
        report: Output of :func:`keel.validate.anomalies.validate_data`.

    Returns:
        The page's text (UTF-8, no external resources).
    """
    by_column: dict[str | None, list[Any]] = {}
    for anomaly in report.anomalies:
        by_column.setdefault(anomaly.column, []).append(anomaly)
    columns = [
        {
            "profile": profile,
            "chart": bar_chart(profile),
            "anomalies": by_column.get(profile.name, []),
            "metrics": _metrics_text(profile.metrics),
        }
        for profile in report.profiles
    ]
    template = _environment().get_template("validation.html.j2")
    return template.render(
        report=report,
        errors=len(report.errors),
        warnings=len(report.anomalies) - len(report.errors),
        columns=columns,
        colours=_COLOURS,
    )


def _metrics_text(metrics: dict[str, Any]) -> str:
    if not metrics:
        return ""
    parts = [f"PSI {metrics['psi']:.3f}", f"JS {metrics['js']:.3f} (base 2)"]
    if metrics.get("wasserstein") is not None:
        parts.append(f"W1 {metrics['wasserstein']:.3f} ref. std")
    return ", ".join(parts)


def bar_chart(profile: ColumnProfile, max_bars: int = 30) -> Markup:
    """Horizontal bars per bin: reference (grey) above current (blue), as inline SVG.

    Args:
        profile: The column's bins and proportions.
        max_bars: Bins shown at most (the largest, by either side); the rest are summed into
            one ``(N more)`` bar so the chart stays readable for many categories.
    """
    labels, current = list(profile.labels), list(profile.current)
    reference = list(profile.reference) if profile.reference is not None else None
    if len(labels) > max_bars:
        weight = [max(c, r) for c, r in zip(current, reference or current, strict=True)]
        keep = sorted(sorted(range(len(labels)), key=lambda i: -weight[i])[: max_bars - 1])
        rest = [i for i in range(len(labels)) if i not in set(keep)]
        labels = [labels[i] for i in keep] + [f"({len(rest)} more)"]
        current = [current[i] for i in keep] + [sum(current[i] for i in rest)]
        if reference is not None:
            reference = [reference[i] for i in keep] + [sum(reference[i] for i in rest)]
    series = (
        [("current", current)]
        if reference is None
        else [("reference", reference), ("current", current)]
    )
    top = max([max(values, default=0.0) for _, values in series] + [1e-12])
    band = _ROW * len(series) + 6
    height = band * len(labels) + 4
    scale = (_WIDTH - _LABEL - 60) / top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'role="img" aria-label="distribution of {escape(profile.name)}">'
    ]
    for row, label in enumerate(labels):
        y = row * band + 2
        parts.append(
            f'<text x="{_LABEL - 6}" y="{y + band / 2}" text-anchor="end" '
            f'dominant-baseline="middle">{escape(label[:24])}</text>'
        )
        for offset, (side, values) in enumerate(series):
            width = values[row] * scale
            bar_y = y + offset * _ROW
            parts.append(
                f'<rect x="{_LABEL}" y="{bar_y}" width="{width:.1f}" height="{_ROW - 3}" '
                f'fill="{_COLOURS[side]}"><title>{side}: {values[row]:.2%}</title></rect>'
                f'<text x="{_LABEL + width + 4:.1f}" y="{bar_y + (_ROW - 3) / 2}" '
                f'dominant-baseline="middle" class="v">{values[row]:.1%}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # every interpolated text is escaped above
