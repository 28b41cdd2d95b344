"""A fitted pipeline's row plan: request rows to features with no per-value dispatch.

The row path (:meth:`keel.validate.coerce.Coercer.row`, then each chain's ``fill``) decides,
for every value of every row, which rule and which transform apply: ~100 Python calls a row.
Most served rows need none of that: every field present once, numbers that are plain ints or
floats inside their range, categories among the training ones. :class:`RowPlan` is made
once when the pipeline is fitted or loaded and answers those rows straight from tables: the
numbers' bounds, the affine constants of their impute/standardize chains, and for each
category input a dict from each raw value the coercer passes unchanged (and without a
finding) to its one-hot output column.

A row the plan cannot vouch for (a missing, unknown or ignored field, a value of another
type, text for a number, a number out of range or with a fraction for an ``int``, NaN, an
unseen category, anything needing a warning or an error) is reported, not guessed: the
caller sends it down the row path, which gives its values, warnings and error exactly as it
always has. For the rows the plan does answer, the numbers are bit for bit the row path's
(the same IEEE operations, in the same order, on the same float conversions).

A pipeline gets no plan (:meth:`RowPlan.of` returns None) when a chain is not an affine
number chain or a one-hot (those are filled by the row path), when it has custom features or
date inputs, or when two chains read one category input.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain as chained
from operator import itemgetter, le, sub, truediv
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from keel.features.columnwise import Fused

if TYPE_CHECKING:
    from keel.validate.coerce import InputRule

__all__ = ["RowPlan"]

_NAN = float("nan")  # the canonical NaN both paths write for a missing number
_MAX = sys.float_info.max  # bounds are finite: an infinity is out of every range
_NONE = type(None)
_NUMBER_TYPES = frozenset({int, float, _NONE})
_CATEGORY_TYPES = frozenset({str, bool, _NONE})
_WHOLE = frozenset({int})
#: What the coercer trims around text (see keel.validate.coerce).
_SPACE = " \t\n\r\x0b\x0c"


@dataclass(frozen=True)
class RowPlan:
    """Tables for the rows that need no rule's judgement (see the module docstring).

    Attributes:
        size: How many fields a plain row has (one per input).
        get: The row's values, numbers first (in ``numbers`` order), then categories.
        numbers: How many number inputs.
        lows: Each number's lowest accepted value (finite).
        highs: Each number's highest accepted value (finite).
        integral: Whether each number must be whole (``int`` inputs).
        affine: Per affine chain: (number index, output column, fill or None, mean, scale).
        direct: Whether the affine chains read the numbers in order, one each (then a row of
            whole numbers is scaled in one ``map``).
        lookups: Per category input: raw value -> output column (-1: none).
        width: Output columns (the pipeline's ``n_features_``).
        arrays: For many rows: lows, highs and integral as (numbers, 1) arrays, then the
            affine chains' number indices, fills (NaN: none), means, scales and columns;
            last those columns as a list.
        parts: For many rows: the numbers' getter and the categories' getter (each a tuple
            of the row's values; None without such inputs).
        fractional: For many rows: whether each number may hold a fraction, (numbers, 1);
            None when every number may.
        nan_only_missing: Whether the affine arithmetic makes NaN only from a missing number
            (no scale is 0): then rows without one need no NaN canonicalised.
    """

    size: int
    get: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    numbers: int
    lows: tuple[float, ...]
    highs: tuple[float, ...]
    integral: tuple[bool, ...]
    affine: tuple[tuple[int, int, float | None, float, float], ...]
    direct: bool
    means: tuple[float, ...]
    scales: tuple[float, ...]
    lookups: tuple[dict[Any, int], ...]
    width: int
    arrays: tuple[Any, ...]
    parts: tuple[Callable[[Mapping[str, Any]], tuple[Any, ...]] | None, ...]
    fractional: np.ndarray | None
    nan_only_missing: bool

    @classmethod
    def of(cls, rules: Sequence[InputRule], fused: Fused, width: int) -> RowPlan | None:
        """The plan of a fitted pipeline (its coercion rules and sorted chains), or None when
        some of its chains need the row path."""
        if fused.other or any(rule.type in ("date", "timestamp") for rule in rules):
            return None
        numbers = [rule for rule in rules if rule.type in ("int", "float")]
        if fused.affine is not None:  # in the affine chains' order: see ``direct``
            order = {name: i for i, name in enumerate(reversed(fused.affine.names))}
            numbers.sort(key=lambda rule: -order.get(rule.name, -1))
        categories = [rule for rule in rules if rule.type in ("string", "bool")]
        onehot = {name: (impute, encoder, offset) for name, impute, encoder, offset in fused.onehot}
        if len(onehot) != len(fused.onehot) or not set(onehot) <= {r.name for r in categories}:
            return None  # two one-hot chains on one input, or one on a custom feature
        affine = _affine(fused, [rule.name for rule in numbers])
        lookups = [_lookup(rule, onehot.get(rule.name)) for rule in categories]
        if affine is None or any(lookup is None for lookup in lookups):
            return None
        names = [rule.name for rule in (*numbers, *categories)]
        if not names:
            return None
        getter = _getter(names)
        lows = tuple(-_MAX if r.min is None else max(float(r.min), -_MAX) for r in numbers)
        highs = tuple(_MAX if r.max is None else min(float(r.max), _MAX) for r in numbers)
        integral = tuple(rule.type == "int" for rule in numbers)
        return cls(
            size=len(names),
            get=getter,
            numbers=len(numbers),
            lows=lows,
            highs=highs,
            integral=integral,
            affine=affine,
            direct=all(entry[0] == i for i, entry in enumerate(affine)),
            means=tuple(entry[3] for entry in affine),
            scales=tuple(entry[4] for entry in affine),
            lookups=tuple(_Lookup(lookup) for lookup in lookups if lookup is not None),
            width=width,
            arrays=_arrays(lows, highs, integral, affine),
            parts=(
                _getter([rule.name for rule in numbers]) if numbers else None,
                _getter([rule.name for rule in categories]) if categories else None,
            ),
            fractional=(
                np.array([not whole for whole in integral]).reshape(-1, 1)
                if any(integral)
                else None
            ),
            nan_only_missing=all(entry[4] != 0.0 for entry in affine),
        )

    # --- one row -----------------------------------------------------------------------------

    def fill(self, row: Any, out: np.ndarray) -> bool:
        """Write a plain row's features into ``out`` (a zeroed vector); False (``out``
        untouched) when the row needs the row path."""
        if type(row) is not dict or len(row) != self.size:
            return False
        try:
            values = self.get(row)
        except KeyError:
            return False
        cats = values[self.numbers :]
        if not set(map(type, cats)) <= _CATEGORY_TYPES:
            return False
        found: list[int | None] = list(map(dict.get, self.lookups, cats))
        if None in found:
            return False
        written = self._scaled(values[: self.numbers])
        if written is None:
            return False
        ones = cast(list[int], found)
        if ones and min(ones) < 0:
            ones = [column for column in ones if column >= 0]
        columns = self.arrays[-1] if not ones else [*self.arrays[-1], *ones]
        if out.flags.c_contiguous:
            out.put(columns, written + [1.0] * len(ones))
        else:
            out[columns] = written + [1.0] * len(ones)
        return True

    def _scaled(self, values: tuple[Any, ...]) -> list[float] | None:
        """The affine chains' outputs for a row's numbers, or None when a number is not
        plain (its type, range or fraction needs the rule)."""
        if self.direct:
            try:
                if set(map(type, values)) <= _WHOLE:  # the usual JSON row: whole numbers
                    numbers = list(map(float, values))
                    if all(map(le, self.lows, numbers)) and all(map(le, numbers, self.highs)):
                        return list(map(truediv, map(sub, numbers, self.means), self.scales))
                    return None
            except OverflowError:  # an int too large for a float: the rule says what it is
                return None
        read = self._numbers(values)
        if read is None:
            return None
        written = []
        for k, _, fill, mean, scale in self.affine:
            number = read[k]
            if number != number:
                if fill is None:
                    written.append(_NAN)
                    continue
                number = fill
            written.append((number - mean) / scale)
        return written

    def _numbers(self, values: tuple[Any, ...]) -> list[float] | None:
        """The numbers as the coercer reads them (NaN: missing), or None when one is not
        plain (its type, range or fraction needs the rule)."""
        numbers = []
        for value, low, high, integral in zip(
            values, self.lows, self.highs, self.integral, strict=True
        ):
            kind = type(value)
            if value is None:
                numbers.append(_NAN)
                continue
            if kind is int:
                try:
                    value = float(value)
                except OverflowError:
                    return None
            elif kind is not float or (integral and not value.is_integer()):
                return None
            if not low <= value <= high:  # also NaN and infinities: the rule reads them
                return None
            numbers.append(value)
        return numbers

    # --- many rows ---------------------------------------------------------------------------

    def fill_many(self, rows: Sequence[Any]) -> tuple[np.ndarray, np.ndarray] | None:
        """Plain rows' features a column at a time: ``(matrix, needs_row_path)``, where the
        rows flagged True have garbage in the matrix; None when the rows are not all dicts
        of the inputs' names or hold values of other types (then ask :meth:`fill` per row).
        """
        n = len(rows)
        if set(map(type, rows)) != {dict} or set(map(len, rows)) != {self.size}:
            return None
        numbers_of, categories_of = self.parts
        try:
            numbers = None if numbers_of is None else list(map(numbers_of, rows))  # per row
            cats = (
                [] if categories_of is None else list(zip(*map(categories_of, rows), strict=True))
            )
        except KeyError:
            return None
        out = np.zeros((n, self.width + 1), dtype=np.float64)  # last: where -1 writes
        bad = np.zeros(n, dtype=bool)
        if numbers is not None:
            found = self._fill_numbers(numbers, out)
            if found is None:
                return None
            bad |= found
        if cats:  # one per input
            if not set(map(type, chained.from_iterable(cats))) <= _CATEGORY_TYPES:
                return None
            gets = [lookup.__getitem__ for lookup in self.lookups]  # a miss: -2
            flat = chained.from_iterable(map(map, gets, cats))
            at = np.fromiter(flat, dtype=np.intp, count=n * len(cats)).reshape(len(cats), n)
            if at.min() < -1:  # a value the plan cannot vouch for: that row's rule decides
                missed = at == -2
                bad |= missed.any(axis=0)
                at[missed] = -1
            out[np.arange(n), at] = 1.0
        return np.ascontiguousarray(out[:, :-1]), bad

    def _fill_numbers(self, rows: list[tuple[Any, ...]], out: np.ndarray) -> np.ndarray | None:
        """Write the affine chains' columns from each row's numbers; the rows whose numbers
        need their rule."""
        if not set(map(type, chained.from_iterable(rows))) <= _NUMBER_TYPES:
            return None
        count = len(rows) * self.numbers
        try:  # None is NaN
            x = np.fromiter(chained.from_iterable(rows), dtype=np.float64, count=count)
        except OverflowError:
            return None
        x = x.reshape(len(rows), self.numbers).T  # (inputs, rows)
        lows, highs, _, k, fills, means, scales, at, _ = self.arrays
        missing = np.isnan(x)
        plain = (lows <= x) & (x <= highs)
        if self.fractional is not None:  # int inputs: whole numbers only
            plain &= (np.floor(x) == x) | self.fractional
        bad: np.ndarray = ~(missing | plain).all(axis=0)
        if len(k):
            a = x[: len(k)] if self.direct else x[k]
            gaps = bool(missing.any())
            if gaps:
                a = np.where(missing[: len(k)] if self.direct else missing[k], fills, a)
            a = (a - means) / scales
            if gaps or not self.nan_only_missing:
                a[np.isnan(a)] = np.nan  # one NaN bit pattern, as the row path writes
            out[:, at] = a.T
        return bad


class _Lookup(dict[Any, int]):
    """A category input's raw value -> output column; a value without one reads -2."""

    __slots__ = ()

    def __missing__(self, key: Any) -> int:
        return -2


def _getter(names: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A row's values of ``names``, as a tuple (a KeyError when one is missing)."""
    return itemgetter(*names) if len(names) > 1 else _Field(names[0])


class _Field:
    """``itemgetter`` of one name, as a 1-tuple (a class: the plan pickles)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return (row[self.name],)


def _arrays(
    lows: tuple[float, ...],
    highs: tuple[float, ...],
    integral: tuple[bool, ...],
    affine: tuple[tuple[int, int, float | None, float, float], ...],
) -> tuple[Any, ...]:
    """:attr:`RowPlan.arrays`: the bounds and affine constants shaped for many rows."""
    return (
        np.array(lows, dtype=np.float64).reshape(-1, 1),
        np.array(highs, dtype=np.float64).reshape(-1, 1),
        np.array(integral, dtype=bool),
        np.array([e[0] for e in affine], dtype=np.intp),
        np.array([_NAN if e[2] is None else e[2] for e in affine]).reshape(-1, 1),
        np.array([e[3] for e in affine], dtype=np.float64).reshape(-1, 1),
        np.array([e[4] for e in affine], dtype=np.float64).reshape(-1, 1),
        np.array([e[1] for e in affine], dtype=np.intp),
        [e[1] for e in affine],  # (a list: joined with one-hot columns per row)
    )


def _affine(
    fused: Fused, numbers: list[str]
) -> tuple[tuple[int, int, float | None, float, float], ...] | None:
    """Each affine chain as (number index, column, fill or None, mean, scale), or None when
    a constant is not finite (then the arithmetic could make a NaN the row path spells)."""
    affine = fused.affine
    if affine is None:
        return ()
    index = {name: i for i, name in enumerate(numbers)}
    entries = []
    for j, name in enumerate(affine.names):
        if name not in index:
            return None
        fill = float(affine.fills[j]) if affine.imputed[j] else None
        mean, scale = float(affine.means[j]), float(affine.scales[j])
        if not all(map(math.isfinite, (mean, scale, 0.0 if fill is None else fill))):
            return None
        entries.append((index[name], int(affine.columns[j]), fill, mean, scale))
    return tuple(entries)


def _lookup(rule: InputRule, onehot: tuple[Any, Any, int] | None) -> dict[Any, int] | None:
    """Raw value -> output column (-1: none) for the values the rule passes unchanged and
    without a finding; None when a value's column cannot be worked out once (a raise)."""
    if rule.type == "bool":
        keys: dict[Any, Any] = {True: "true", False: "false", None: None}
    elif rule.categories is not None:
        keys = {value: value for value in rule.categories}
        keys[None] = None
    else:  # any text: only the encoder's categories (trimmed, as the rule leaves them)
        known = [] if onehot is None else onehot[1].categories_
        keys = {v: v for v in known if isinstance(v, str) and v and v.strip(_SPACE) == v}
        keys[None] = None
    if onehot is None:
        return dict.fromkeys(keys, -1)
    impute, encoder, offset = onehot
    lookup = {}
    for raw, value in keys.items():
        try:
            found = encoder.position(value if impute is None else impute.transform_value(value))
        except Exception:  # (unseen: error) such a value takes the row path, which raises
            continue
        lookup[raw] = offset + found if found >= 0 else -1
    return lookup
