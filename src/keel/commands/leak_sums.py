"""Regression targets computed from other columns: what ``keel init`` sets aside as leaks.

A count that is the sum of two other counts (bike sharing: ``cnt = casual + registered``), a
price given once in dollars and once in cents, a log of the target: a model that sees such a
column scores R^2 0.99+ in evaluation and is useless in production, where the column is not
known before the target. Two checks on a bounded, evenly spaced sample of the profiled rows:

* one numeric column whose ranks match the target's (|Spearman| >= :data:`LEAK_SPEARMAN`): the
  target itself or a monotone transform of it;
* a least-squares fit of the target on a few numeric columns (forward selection, then every
  column that is not needed dropped) with R^2 >= :data:`LEAK_R2`: the formula is named in the
  reason (``cnt = 1.00*casual + 1.00*registered``).

Constant columns, ids and row counters, and columns missing in more than a tenth of the rows
are no candidates. All the arithmetic is on one Gram matrix (NumPy), so trying a column costs a
solve of at most :data:`LEAK_MAX_TERMS` unknowns, whatever the number of rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from keel.validate.infer_roles import SetAside

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["LEAK_R2", "LEAK_SPEARMAN", "regression_leaks"]

#: A regression target that a least-squares fit on a few numeric columns explains to this R^2
#: is computed from them. Real predictive relations in the shared datasets stay far below it,
#: even fitted on every numeric column at once: California housing 0.64, student G3 0.85 (G1
#: and G2 are earlier grades, known before G3: inputs, not leaks), Adult hours-per-week 0.03,
#: bike sharing cnt 0.39 without casual and registered. An accounting identity gives 1.0, and
#: rounding or a few corrected rows keep it above 0.999.
LEAK_R2 = 0.999
#: A single numeric column whose ranks match the target's to this |Spearman| is the target
#: or a monotone transform of it (a log, a unit change, a rounded copy); the closest real
#: predictor in the shared datasets is student G2 for G3 (0.957).
LEAK_SPEARMAN = 0.9999
#: Rows of the profile sample the checks use (evenly spaced over it).
FIT_ROWS = 50_000
#: The fewest complete rows for a check, and rows needed per term of a formula.
MIN_ROWS = 50
ROWS_PER_TERM = 20
#: The most columns a formula may name.
LEAK_MAX_TERMS = 8
#: Numeric columns tried as terms (the first ones in file order): bounded work on wide files.
MAX_COLUMNS = 200
#: A column missing in more than this share of the sampled rows is no candidate.
MAX_MISSING = 0.1


def regression_leaks(table: pa.Table, target: str, aside: set[str]) -> list[SetAside]:
    """The numeric columns of ``table`` that a regression ``target`` is computed from.

    Args:
        table: The profiled rows.
        target: The numeric target column.
        aside: Columns already set aside (ids, counters): no candidates.

    Returns:
        One :class:`SetAside` (kind ``leak``) per column, its reason naming the evidence: the
        rank correlation, or the formula found and its R^2.
    """
    import numpy as np

    names, matrix, y = _numeric_rows(table, target, aside)
    if y.size < MIN_ROWS or not names or float(np.ptp(y)) == 0.0:
        return []
    found = _monotone(names, matrix, y, target)
    kept = [i for i, name in enumerate(names) if name not in {f.name for f in found}]
    if kept and y.size >= MIN_ROWS:
        found += _formula(names, matrix, y, target, kept)
    return found


def _numeric_rows(
    table: pa.Table, target: str, aside: set[str]
) -> tuple[list[str], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The candidate columns, their complete rows (an evenly spaced sample) and the target."""
    import numpy as np

    table = table.filter(pc.is_valid(table.column(target)))
    if table.num_rows > FIT_ROWS:
        rows = np.linspace(0, table.num_rows - 1, FIT_ROWS).round().astype(np.int64)
        table = table.take(pa.array(rows))
    names = []
    for name in table.column_names:
        values = table.column(name)
        numeric = pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
        if name == target or name in aside or not numeric:
            continue
        if values.null_count > MAX_MISSING * table.num_rows:
            continue
        names.append(name)
        if len(names) == MAX_COLUMNS:
            break
    columns = [_floats(table.column(name)) for name in names]
    y = _floats(table.column(target))
    if not columns:
        return [], np.empty((y.size, 0)), y
    matrix = np.column_stack(columns)
    complete = np.isfinite(matrix).all(axis=1) & np.isfinite(y)
    matrix, y = matrix[complete], y[complete]
    varies = np.ptp(matrix, axis=0) > 0 if y.size else np.zeros(len(names), dtype=bool)
    return [n for n, v in zip(names, varies, strict=True) if v], matrix[:, varies], y


def _floats(values: pa.ChunkedArray) -> npt.NDArray[np.float64]:
    import numpy as np

    cast = pc.cast(values, pa.float64())
    return np.asarray(pc.fill_null(cast, float("nan")).to_numpy(), dtype=np.float64)


def _monotone(
    names: list[str], matrix: npt.NDArray[np.float64], y: npt.NDArray[np.float64], target: str
) -> list[SetAside]:
    """The columns whose ranks match the target's (Spearman's rho, ties given average ranks)."""
    import numpy as np

    ranked = np.column_stack([_ranks(matrix[:, i]) for i in range(matrix.shape[1])])
    ranked -= ranked.mean(axis=0)
    ry = _ranks(y)
    ry -= ry.mean()
    rho = (ranked.T @ ry) / (np.linalg.norm(ranked, axis=0) * np.linalg.norm(ry))
    found = []
    for i in np.flatnonzero(np.abs(rho) >= LEAK_SPEARMAN):
        way = "rises" if rho[i] > 0 else "falls"
        found.append(
            SetAside(
                names[i],
                "leak",
                f"it {way} with '{target}' on {y.size:,} sampled rows (Spearman "
                f"{rho[i]:+.4f}): the target itself or a transform of it leaks the target",
            )
        )
    return found


def _ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Ranks 1..n, ties given their average rank."""
    import numpy as np

    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average = ends - (counts - 1) / 2.0
    return np.asarray(average[inverse], dtype=np.float64)


def _formula(
    names: list[str],
    matrix: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    target: str,
    kept: list[int],
) -> list[SetAside]:
    """The fewest columns a least-squares fit explains the target with to R^2 >= LEAK_R2."""
    import numpy as np

    x = matrix[:, kept]
    means, scales = x.mean(axis=0), x.std(axis=0)
    z = (x - means) / scales
    centred = y - y.mean()
    gram, cross, total = z.T @ z, z.T @ centred, float(centred @ centred)
    most = min(LEAK_MAX_TERMS, x.shape[1], y.size // ROWS_PER_TERM)
    chosen: list[int] = []
    r2 = 0.0
    while len(chosen) < most and r2 < LEAK_R2:
        trials = [(_r2(gram, cross, total, [*chosen, j]), j) for j in range(x.shape[1])
                  if j not in chosen]  # fmt: skip
        best, j = max(trials)
        if best <= r2 + 1e-9:
            break
        chosen.append(j)
        r2 = best
    if r2 < LEAK_R2:
        return []
    for j in list(chosen):  # forward selection may have taken a column the others make moot
        rest = [k for k in chosen if k != j]
        if rest and _r2(gram, cross, total, rest) >= LEAK_R2:
            chosen = rest
    chosen.sort()  # the formula names its columns in file order
    r2 = _r2(gram, cross, total, chosen)
    coefficients = _solve(gram, cross, chosen) / scales[chosen]
    intercept = float(y.mean() - coefficients @ means[chosen])
    terms = [(float(c), names[kept[j]]) for c, j in zip(coefficients, chosen, strict=True)]
    shown = _spelled(target, terms, intercept, float(np.std(y)))
    columns = ", ".join(names[kept[j]] for j in chosen)
    why = (
        f"'{target}' is computed from {columns}: {shown} (least squares, R^2 {r2:.4f} on "
        f"{y.size:,} sampled rows); a value known only with the target leaks it"
    )
    return [SetAside(names[kept[j]], "leak", why) for j in chosen]


def _solve(
    gram: npt.NDArray[np.float64], cross: npt.NDArray[np.float64], chosen: list[int]
) -> npt.NDArray[np.float64]:
    import numpy as np

    solution = np.linalg.lstsq(gram[np.ix_(chosen, chosen)], cross[chosen], rcond=None)[0]
    return np.asarray(solution, dtype=np.float64)


def _r2(
    gram: npt.NDArray[np.float64],
    cross: npt.NDArray[np.float64],
    total: float,
    chosen: list[int],
) -> float:
    """R^2 of the least-squares fit on the ``chosen`` standardised columns (with intercept)."""
    if total <= 0.0:
        return 0.0
    explained = float(_solve(gram, cross, chosen) @ cross[chosen])
    return min(explained / total, 1.0)


def _spelled(target: str, terms: list[tuple[float, str]], intercept: float, spread: float) -> str:
    """``cnt = 1.00*casual + 1.00*registered`` (the intercept only when it matters)."""
    parts = []
    for coefficient, name in terms:
        sign = "-" if coefficient < 0 else "+"
        parts.append(f"{sign} {_number(abs(coefficient))}*{name}")
    if abs(intercept) > 1e-3 * spread:
        parts.append(f"{'-' if intercept < 0 else '+'} {_number(abs(intercept))}")
    text = " ".join(parts)
    text = text[2:] if text.startswith("+ ") else "-" + text[2:]
    return f"{target} = {text}"


def _number(value: float) -> str:
    return f"{value:.2f}" if 0.01 <= value < 10_000 else f"{value:.3g}"
