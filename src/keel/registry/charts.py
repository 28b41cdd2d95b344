"""Small charts as inline SVG for model cards: lines (ROC, PR, reliability), points with
intervals (metric by slice, residual quantiles) and grouped bars (fairness, importance).

Hand-built so a card needs no plotting library, no JavaScript and no network: each function
returns one ``<svg>`` element (with a ``<title>`` for screen readers) that any browser draws
offline. Text is escaped; numbers are drawn as given (None is skipped and named in the label).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart", "interval_chart", "line_chart"]

WIDTH = 420
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 12, 28, 40

Series = tuple[str, Sequence[float], Sequence[float]]


def _open(kind: str, title: str, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" data-chart="{escape(kind)}" '
        f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{WIDTH / 2:.0f}" y="16" text-anchor="middle" font-size="13">'
        f"{escape(title)}</text>",
    ]


def _axes(height: int, x_label: str, y_label: str, ticks: Sequence[tuple[float, str]]) -> str:
    """The frame, the x-axis ticks (``(fraction, text)``) and both axis labels."""
    bottom, right = height - _BOTTOM, WIDTH - _RIGHT
    parts = [
        f'<rect x="{_LEFT}" y="{_TOP}" width="{right - _LEFT}" height="{bottom - _TOP}" '
        'fill="none" stroke="#999"/>'
    ]
    for fraction, text in ticks:
        x = _LEFT + fraction * (right - _LEFT)
        parts.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{text}</text>')
    parts.append(
        f'<text x="{(_LEFT + right) / 2:.0f}" y="{height - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    if y_label:
        parts.append(
            f'<text x="12" y="{(_TOP + bottom) / 2:.0f}" text-anchor="middle" '
            f'transform="rotate(-90 12 {(_TOP + bottom) / 2:.0f})">{escape(y_label)}</text>'
        )
    return "".join(parts)


def line_chart(
    kind: str, title: str, series: Sequence[Series], *, x_label: str, y_label: str,
    diagonal: bool = False,
) -> str:  # fmt: skip
    """Polylines on the unit square (ROC, precision-recall, reliability), with a legend.

    Args:
        kind: The ``data-chart`` attribute (``roc``, ``pr``, ``calibration``).
        series: ``(label, xs, ys)`` per line, values in [0, 1].
        diagonal: Draw the dashed y = x reference (chance for ROC, perfect calibration).
    """
    height = 300
    bottom, right = height - _BOTTOM, WIDTH - _RIGHT
    w, h = right - _LEFT, bottom - _TOP

    def point(x: float, y: float) -> str:
        return f"{_LEFT + x * w:.1f},{bottom - y * h:.1f}"

    parts = _open(kind, title, height)
    ticks = [(t / 4, f"{t / 4:g}") for t in range(5)]
    parts.append(_axes(height, x_label, y_label, ticks))
    for t in range(5):
        y = bottom - t / 4 * h
        parts.append(f'<text x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{t / 4:g}</text>')
    if diagonal:
        parts.append(
            f'<line x1="{_LEFT}" y1="{bottom}" x2="{right}" y2="{_TOP}" stroke="#bbb" '
            'stroke-dasharray="4 3"/>'
        )
    for i, (label, xs, ys) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        points = " ".join(point(x, y) for x, y in zip(xs, ys, strict=True))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        parts.append(
            f'<text x="{right - 6}" y="{bottom - 8 - 14 * i}" text-anchor="end" fill="{color}">'
            f"{escape(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _label_width(labels: Sequence[str]) -> int:
    """Room for the longest row label (about 6 px a character at 11 px), within limits."""
    return min(220, max(60, 12 + 6 * max((len(label) for label in labels), default=0)))


def _scale(values: Sequence[float]) -> tuple[float, float]:
    low, high = min([0.0, *values]), max([0.0, *values])
    if high - low < 1e-12:
        high = low + 1.0
    return low, high


def interval_chart(
    kind: str, title: str, rows: Sequence[tuple[str, float | None, float | None, float | None]],
    *, x_label: str,
) -> str:  # fmt: skip
    """One row per label: a dot at the value and a whisker from ``low`` to ``high``.

    Args:
        rows: ``(label, value, low, high)``; a None value is written as undefined.
    """
    height = _TOP + _BOTTOM + 22 * max(len(rows), 1)
    left = _label_width([r[0] + " (undefined)" * (r[1] is None) for r in rows])
    right = WIDTH - _RIGHT
    known = [v for _, *vals in rows for v in vals if v is not None]
    low_end, high_end = (min(known), max(known)) if known else (0.0, 1.0)
    if high_end - low_end < 1e-12:
        low_end, high_end = low_end - 0.5, high_end + 0.5
    pad = (high_end - low_end) * 0.05
    low_end, high_end = low_end - pad, high_end + pad

    def x_of(v: float) -> float:
        return left + (v - low_end) / (high_end - low_end) * (right - left)

    parts = _open(kind, title, height)
    parts.append(
        f'<rect x="{left}" y="{_TOP}" width="{right - left}" height="{height - _BOTTOM - _TOP}" '
        'fill="none" stroke="#999"/>'
    )
    for t in range(5):
        v = low_end + t / 4 * (high_end - low_end)
        parts.append(
            f'<text x="{x_of(v):.1f}" y="{height - _BOTTOM + 14}" text-anchor="middle">'
            f"{v:.3g}</text>"
        )
    parts.append(
        f'<text x="{(left + right) / 2:.0f}" y="{height - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    for i, (label, value, low, high) in enumerate(rows):
        y = _TOP + 14 + 22 * i
        shown = label if value is not None else f"{label} (undefined)"
        parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{escape(shown)}</text>')
        if low is not None and high is not None:
            parts.append(
                f'<line x1="{x_of(low):.1f}" y1="{y}" x2="{x_of(high):.1f}" y2="{y}" '
                'stroke="#555" stroke-width="1.5"/>'
            )
        if value is not None:
            parts.append(f'<circle cx="{x_of(value):.1f}" cy="{y}" r="4" fill="{PALETTE[0]}"/>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    kind: str, title: str, labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]], *, x_label: str,
    domain: tuple[float, float] | None = None,
) -> str:  # fmt: skip
    """Horizontal grouped bars: per label, one bar per series (None: no bar, marked n/a).

    Args:
        labels: The groups (``Female``, ``Male``) or features.
        series: ``(name, values by label)``, e.g. ``("selection rate", [0.1, 0.3])``.
        domain: The axis' ends (default: from 0 to the largest value, or below 0 to 0).
    """
    per = max(len(series), 1)
    band = 8 * per + 8
    height = _TOP + _BOTTOM + band * max(len(labels), 1) + 14 * (per if per > 1 else 0)
    left, right = _label_width(labels), WIDTH - _RIGHT
    low_end, high_end = domain or _scale([v for _, vs in series for v in vs if v is not None])

    def x_of(v: float) -> float:
        return left + (v - low_end) / (high_end - low_end) * (right - left)

    parts = _open(kind, title, height)
    bottom = height - _BOTTOM - 14 * (per if per > 1 else 0)
    parts.append(
        f'<rect x="{left}" y="{_TOP}" width="{right - left}" height="{bottom - _TOP}" '
        'fill="none" stroke="#999"/>'
    )
    for t in range(5):
        v = low_end + t / 4 * (high_end - low_end)
        parts.append(
            f'<text x="{x_of(v):.1f}" y="{bottom + 14}" text-anchor="middle">{v:.3g}</text>'
        )
    parts.append(
        f'<text x="{(left + right) / 2:.0f}" y="{bottom + 28}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    zero = x_of(0.0)
    for i, label in enumerate(labels):
        top = _TOP + 4 + band * i
        parts.append(
            f'<text x="{left - 6}" y="{top + band / 2:.1f}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
        for j, (name, values) in enumerate(series):
            value = values[i]
            y = top + 8 * j
            if value is None:
                parts.append(f'<text x="{left + 4}" y="{y + 7}" font-size="8">n/a</text>')
                continue
            x0, x1 = sorted((zero, x_of(value)))
            parts.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 0.5):.1f}" height="7" '
                f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(name)}: {value:.4g}</title>'
                "</rect>"
            )
    if per > 1:
        for j, (name, _) in enumerate(series):
            parts.append(
                f'<text x="{left}" y="{height - 8 - 14 * (per - 1 - j)}" '
                f'fill="{PALETTE[j % len(PALETTE)]}">{escape(name)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
