"""The batch path of :mod:`keel.validate.coerce`: whole Arrow columns through a rule's checks.

The same rules as the row path (:class:`keel.validate.coerce.Coercer.row`), written as Arrow
compute kernels over a column, so a value gives the same result either way (a Hypothesis test
in tests/validate/test_coerce.py holds them to it).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.validate.coerce import (
    _BOOL,
    _FAMILY,
    _NUMBER,
    _NUMBERS,
    _SPACE,
    _STRING,
    InputRule,
    Issue,
    Severity,
)

__all__ = ["coerce_array"]


def coerce_array(rule: InputRule, array: pa.Array) -> tuple[pa.Array, list[Issue]]:
    family = _FAMILY[rule.type]
    if family is _NUMBERS:
        return _numbers(rule, array)
    if family is _STRING:
        return _strings(rule, array)
    if family is _BOOL:
        return _booleans(rule, array)
    if rule.unit is not None:
        return _unix_times(rule, array)
    return array, []


def _numbers(rule: InputRule, array: pa.Array) -> tuple[pa.Array, list[Issue]]:
    kind = array.type
    if pa.types.is_integer(kind):
        # unsafe: ints beyond 2**53 round to the nearest float64, as float() does per row
        values = array.cast(pa.float64(), safe=False)
        bad = None
    elif pa.types.is_floating(kind):
        values = array.cast(pa.float64())
        bad = pc.is_inf(values)  # NaN is missing, as in pandas
        if rule.type == "int":
            fraction = pc.and_kleene(
                pc.invert(pc.is_nan(values)), pc.not_equal(pc.floor(values), values)
            )
            bad = pc.or_kleene(bad, fraction)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = _trim(array.cast(pa.string()))
        text = pc.if_else(pc.equal(text, ""), None, text)
        number = pc.match_substring_regex(text, f"^{_NUMBER}$")
        parsed = pc.if_else(number, text, None).cast(pa.float64())
        bad = pc.invert(number)  # null where the text is null: not bad
        finite = pc.is_finite(parsed)
        if rule.type == "int":
            finite = pc.and_kleene(finite, pc.equal(pc.floor(parsed), parsed))
        bad = pc.or_kleene(bad, pc.invert(finite))
        values = parsed
    elif pa.types.is_null(kind):
        return pa.nulls(len(array), pa.float64()), []
    else:  # booleans, dates, ...: not numbers
        values = pa.nulls(len(array), pa.float64())
        bad = array.is_valid()
    issues: list[Issue] = []
    if bad is not None:
        mask = _mask(bad)
        if mask.any():
            issues.append(_issue(rule, "type_mismatch", rule.invalid, mask, array))
            values = pc.if_else(pa.array(mask), None, values)
    if rule.min is not None or rule.max is not None:
        low = pc.less(values, rule.min) if rule.min is not None else None
        high = pc.greater(values, rule.max) if rule.max is not None else None
        outside = low if high is None else high if low is None else pc.or_kleene(low, high)
        mask = _mask(outside)
        if mask.any():
            issues.append(_issue(rule, "out_of_range", rule.out_of_range, mask, array))
    return values, issues


def _strings(rule: InputRule, array: pa.Array) -> tuple[pa.Array, list[Issue]]:
    kind = array.type
    issues: list[Issue] = []
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind):
        text = _trim(array.cast(pa.string()))
        text = pc.if_else(pc.equal(text, ""), None, text)
    elif pa.types.is_dictionary(kind):
        return _strings(rule, array.cast(kind.value_type))
    elif pa.types.is_null(kind):
        return pa.nulls(len(array), pa.string()), []
    else:
        mask = _mask(array.is_valid())
        issues.append(_issue(rule, "type_mismatch", rule.invalid, mask, array))
        return pa.nulls(len(array), pa.string()), issues
    if rule.categories is not None:
        known = pa.array(rule.categories, type=pa.string())
        mask = _mask(pc.and_kleene(text.is_valid(), pc.invert(pc.is_in(text, value_set=known))))
        if mask.any():
            issues.append(_issue(rule, "unseen_category", rule.unseen, mask, text))
    return text, issues


def _booleans(rule: InputRule, array: pa.Array) -> tuple[pa.Array, list[Issue]]:
    kind = array.type
    if pa.types.is_boolean(kind):
        return array, []
    if pa.types.is_null(kind):
        return pa.nulls(len(array), pa.bool_()), []
    if pa.types.is_dictionary(kind):
        return _booleans(rule, array.cast(kind.value_type))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind):
        text = pc.utf8_lower(_trim(array.cast(pa.string())))
        text = pc.if_else(pc.equal(text, ""), None, text)
        trues = {t.lower() for t in rule.true_values} | {"true"}
        falses = {t.lower() for t in rule.false_values} | {"false"}
        is_true = pc.is_in(text, value_set=pa.array(sorted(trues), type=pa.string()))
        is_false = pc.is_in(text, value_set=pa.array(sorted(falses), type=pa.string()))
        values = pc.if_else(is_true, True, pc.if_else(is_false, False, None))
        bad = pc.and_kleene(text.is_valid(), pc.invert(pc.or_kleene(is_true, is_false)))
    else:
        values = pa.nulls(len(array), pa.bool_())
        bad = array.is_valid()
    mask = _mask(bad)
    if not mask.any():
        return values, []
    return values, [_issue(rule, "type_mismatch", rule.invalid, mask, array)]


def _unix_times(rule: InputRule, array: pa.Array) -> tuple[pa.Array, list[Issue]]:
    """A timestamp column that may hold unix times (the rule's unit): numbers become
    timestamps; in text, decimal numbers become ISO text of their time and the rest stays as
    it is (the pipeline parses it); dates and timestamps pass. As the row path reads them."""
    from keel.validate.epochs import to_timestamps

    assert rule.unit is not None
    kind = array.type
    if pa.types.is_dictionary(kind):
        return _unix_times(rule, array.cast(kind.value_type))
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        values, bad = to_timestamps(array, rule.unit)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = array.cast(pa.string())
        number = pc.match_substring_regex(_trim(text), f"^{_NUMBER}$")
        parsed = pc.if_else(number, _trim(text), None).cast(pa.float64())
        times, bad = to_timestamps(parsed, rule.unit)
        values = pc.if_else(number, pc.cast(times, pa.string()), text)
    elif pa.types.is_temporal(kind) or pa.types.is_null(kind):
        return array, []
    else:  # booleans, ...: not times
        values, bad = pa.nulls(len(array), pa.timestamp("us")), _mask(array.is_valid())
    if not bad.any():
        return values, []
    values = pc.if_else(pa.array(bad), None, values)
    return values, [_issue(rule, "type_mismatch", rule.invalid, bad, array)]


def _trim(text: pa.Array) -> pa.Array:
    return pc.utf8_trim(text, characters=_SPACE)


def _mask(condition: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A NumPy bool mask (null counts as False)."""
    filled = pc.fill_null(condition, False)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def _issue(
    rule: InputRule, kind: str, severity: Severity, mask: np.ndarray, raw: pa.Array
) -> Issue:
    rows = np.flatnonzero(mask)
    offending = raw.filter(pa.array(mask))
    counts = pc.value_counts(offending)
    pairs = sorted(
        zip(counts.field("counts").to_pylist(), counts.field("values").to_pylist(), strict=True),
        key=lambda pair: -pair[0],
    )
    values = [value for _, value in pairs[:10]]
    example = ", ".join(repr(v) for v in values[:3])
    if kind == "type_mismatch":
        message = f"{rule.name}: {example} is not {rule.expected}"
    elif kind == "out_of_range":
        message = f"{rule.name}: {example} outside [{rule.min}, {rule.max}]"
    else:
        message = f"{rule.name}: {example} not seen in training"
    return Issue(rule.name, kind, severity, rows, values, message)
