"""One coercion path: raw values -> each model input's declared type, in batch and per row.

Training reads a snapshot, batch scoring a file, the server a JSON request, monitoring the
prediction log; all hand their raw values to the same :class:`Coercer`, built from the schema
(type, the spellings of a boolean, range, categories, severities) and shipped in the model
package inside the feature pipeline's state. The batch path (:meth:`Coercer.table`, Arrow
kernels over whole columns) and the row path (:meth:`Coercer.row`, a request dict) follow one
set of rules, so a value gives the same model input, or the same finding, on both:

- numbers (``int``, ``float``): JSON numbers, integers and text that reads as a decimal number
  (``"42"``, ``"-1.5e3"``; surrounding spaces ignored). Booleans, infinities and, for ``int``,
  values with a fraction (``2.5``) do not convert. NaN is a missing value (as in pandas).
  Values outside ``[min, max]`` are ``out_of_range``.
- ``bool``: true/false, or the spellings seen in training (``Yes``/``No``, ``1``/``0``...),
  compared without case or surrounding spaces; anything else (``"banana"``) does not convert.
- ``string``: text (trimmed; empty is missing) and integers (as their decimal text); other
  types do not convert. Values outside the training categories are ``unseen_category``.
- ``date``/``timestamp``: passed to the feature pipeline as they are (it parses them). A
  ``timestamp`` with a ``unit`` (``s``, ``ms``, ``us``: the training data held unix times,
  keel.yaml's ``unix_time``) also takes numbers, and decimal text, of that unit since
  1970-01-01 UTC, converted as ingestion converted them (:mod:`keel.validate.epochs`);
  booleans, infinities and times beyond the years 1-9999 do not convert.

A value that does not convert is a ``type_mismatch`` finding, ``error`` by default: the row is
rejected (422 over HTTP, the rejects file in batch scoring). With severity ``warning`` the
value is read as missing and the row scored. ``out_of_range`` and ``unseen_category`` default
to ``warning``: the value is kept and the finding reported. Severities come from the schema
(``severities:`` per column or schema-wide), as for ``keel validate``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from keel.errors import DataValidationError
from keel.validate.epochs import DECIMAL, MICROS, read_epoch
from keel.validate.names import likely_names

if TYPE_CHECKING:
    from keel.validate.schema import Schema

__all__ = [
    "BOOLEAN_PAIRS",
    "Coerced",
    "Coercer",
    "Finding",
    "InputRule",
    "Issue",
]

Severity = Literal["error", "warning"]
#: Pairs of spellings read as a boolean when a text column holds exactly these two values.
BOOLEAN_PAIRS = (("true", "false"), ("yes", "no"), ("y", "n"), ("t", "f"), ("on", "off"))
#: Decimal numbers as text: what both paths accept for a number (no inf, nan, or 1_000).
_NUMBER = DECIMAL
_NUMBER_RE = re.compile(_NUMBER)
#: What both paths trim around text (ASCII whitespace: Python's and Arrow's Unicode sets differ).
_SPACE = " \t\n\r\x0b\x0c"
_WORDS = {
    "int": "an integer",
    "float": "a finite number",
    "bool": "true/false",
    "string": "text",
    "date": "a date (ISO 8601)",
    "timestamp": "a date/time (ISO 8601)",
}
_UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds"}
_NUMBERS, _BOOL, _STRING, _TIME = "number", "bool", "string", "time"
_FAMILY = {"int": _NUMBERS, "float": _NUMBERS, "bool": _BOOL, "string": _STRING,
           "date": _TIME, "timestamp": _TIME}  # fmt: skip


@dataclass(frozen=True, slots=True)
class InputRule:
    """How one model input's raw values become its declared type.

    Attributes:
        name: The column (request field).
        type: ``int``, ``float``, ``bool``, ``string``, ``date`` or ``timestamp``.
        true_values: Spellings of true (booleans), as seen in training.
        false_values: Spellings of false.
        min: Lowest value in range (numbers), or None.
        max: Highest value in range (numbers), or None.
        categories: The known values (strings), or None when the schema lists none.
        invalid: Severity of a value that does not convert (``type_mismatch``).
        out_of_range: Severity of a number outside ``[min, max]``.
        unseen: Severity of a string outside ``categories``.
        unit: Timestamps: numbers are unix times in this unit (``s``, ``ms``, ``us``); None:
            numbers do not convert.
    """

    name: str
    type: str
    true_values: tuple[str, ...] = ("true",)
    false_values: tuple[str, ...] = ("false",)
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    invalid: Severity = "error"
    out_of_range: Severity = "warning"
    unseen: Severity = "warning"
    unit: str | None = None

    def __post_init__(self) -> None:
        if self.type not in _FAMILY:
            msg = f"input '{self.name}' has type '{self.type}'; types: {', '.join(_FAMILY)}."
            raise DataValidationError(msg, field=self.name)
        if self.unit is not None and (self.type != "timestamp" or self.unit not in MICROS):
            msg = (
                f"input '{self.name}': unit '{self.unit}' needs a timestamp and one of "
                f"{', '.join(MICROS)}."
            )
            raise DataValidationError(msg, field=self.name)

    @property
    def expected(self) -> str:
        """What the column accepts, in words (for messages)."""
        if self.type == "bool":
            spellings = [*self.true_values, *self.false_values]
            return "true/false" + (f" or one of {spellings}" if spellings else "")
        if self.unit is not None:
            return f"{_WORDS[self.type]} or unix time in {_UNIT_WORDS[self.unit]} ({self.type})"
        return f"{_WORDS[self.type]} ({self.type})"

    def state(self) -> dict[str, Any]:
        """JSON-able fields (tuples as lists); ``unit`` only when set (the state of a rule
        without one is as it was before units existed)."""
        state = {
            "name": self.name,
            "type": self.type,
            "true_values": list(self.true_values),
            "false_values": list(self.false_values),
            "min": self.min,
            "max": self.max,
            "categories": None if self.categories is None else list(self.categories),
            "invalid": self.invalid,
            "out_of_range": self.out_of_range,
            "unseen": self.unseen,
        }
        if self.unit is not None:
            state["unit"] = self.unit
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> InputRule:
        """The rule :meth:`state` wrote."""
        values = dict(state)
        for key in ("true_values", "false_values"):
            if key in values:
                values[key] = tuple(values[key])
        if values.get("categories") is not None:
            values["categories"] = tuple(values["categories"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Finding:
    """One value of one request row that did not fit its rule."""

    field: str
    kind: str
    severity: Severity
    value: Any
    message: str

    def to_dict(self) -> dict[str, Any]:
        """``{"field", "kind", "severity", "value", "message"}``."""
        value = self.value
        if value is not None and not isinstance(value, str | int | float | bool):
            value = repr(value)
        return {"field": self.field, "kind": self.kind, "severity": self.severity,
                "value": value, "message": self.message}  # fmt: skip


@dataclass(frozen=True)
class Issue:
    """The rows of a batch where one column's values did not fit, for one kind of finding.

    Attributes:
        column: The input column.
        kind: ``type_mismatch``, ``out_of_range`` or ``unseen_category``.
        severity: ``error`` (the rows are rejected) or ``warning``.
        rows: Row indices within the batch, ascending.
        values: Up to 10 distinct offending values, most frequent first.
        message: What was wrong and what the column accepts.
    """

    column: str
    kind: str
    severity: Severity
    rows: np.ndarray
    values: list[Any]
    message: str

    @property
    def count(self) -> int:
        """How many rows."""
        return len(self.rows)


@dataclass(frozen=True)
class Coerced:
    """A batch's inputs in their declared types, and what did not fit.

    Attributes:
        table: One column per input, in the pipeline's order: numbers as float64, booleans as
            bool, strings as string, dates as given; every row of the input is still there.
        issues: Per column and kind, the rows that did not fit.
        rejected: True for each row with an ``error`` finding.
    """

    table: pa.Table
    issues: list[Issue] = field(default_factory=list)
    rejected: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def errors(self) -> list[Issue]:
        """Issues that reject their rows."""
        return [issue for issue in self.issues if issue.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        """Issues reported but scored."""
        return [issue for issue in self.issues if issue.severity == "warning"]

    def raise_errors(self, where: str = "") -> None:
        """Raise DataValidationError naming the first rejected row's column and value."""
        errors = self.errors
        if not errors:
            return
        first = min(errors, key=lambda issue: int(issue.rows[0]))
        total = int(self.rejected.sum())
        rest = f" ({total} rows rejected in all)" if total > 1 else ""
        raise DataValidationError(
            f"{where}row {int(first.rows[0])}: {first.message}{rest}",
            field=first.column,
            details={"rows": total, "kind": first.kind, "values": first.values},
        )

    def summary(self) -> list[str]:
        """One line per issue, e.g. ``"'age': 3 rows out of range (e.g. 150)"``."""
        return [f"{issue.message} [{issue.count} rows, {issue.severity}]" for issue in self.issues]


class Coercer:
    """Turns raw values into each input's declared type; the same rules per row and per batch.

    Args:
        rules: One rule per model input, in order.

    Example:
        >>> coercer = Coercer.from_schema(schema, ["age", "smoker"])
        >>> coercer.row({"age": "39", "smoker": "Yes"})
        ({'age': 39.0, 'smoker': True}, [])
    """

    def __init__(self, rules: Sequence[InputRule]) -> None:
        self.rules = list(rules)
        self.names = [rule.name for rule in self.rules]
        self._row_rules = [_RowRule(rule) for rule in self.rules]
        self._expected = ", ".join(self.names)
        self._row_set = frozenset(self.names)
        #: Fields a request may carry that the model does not read (see :meth:`ignore`).
        self.ignored: frozenset[str] = frozenset()
        #: Ignored fields left in the row for the prediction log (see :meth:`keep`).
        self.kept: frozenset[str] = frozenset()

    def ignore(self, names: Iterable[str]) -> None:
        """Accept and drop these fields in requests (:meth:`row`) instead of refusing them.

        The model package passes the columns its training data had that the model does not
        read (the target, ids, dates, excluded columns): a client may post whole rows of its
        own file. Names the project never saw are still refused, with a suggestion when one is
        close to an input's name.
        """
        self.ignored = frozenset(names) - set(self.names)

    def keep(self, names: Iterable[str]) -> None:
        """Leave these fields of :attr:`ignored` in the request's row, without a warning: the
        server logs them although the model does not read them (``monitor.time_column``, the
        rows' event time that monitoring windows are cut by)."""
        self.kept = frozenset(names) & self.ignored

    @classmethod
    def from_types(cls, types: Mapping[str, str]) -> Coercer:
        """Default rules (no range, categories or custom spellings) from name -> type."""
        return cls([InputRule(name, kind) for name, kind in types.items()])

    @classmethod
    def from_schema(cls, schema: Schema, names: Sequence[str]) -> Coercer:
        """The rules the schema declares for ``names`` (the model's inputs)."""
        rules = []
        for name in names:
            col = schema.columns[name]
            kind = col.type
            severity = schema.severity_of
            rule = InputRule(
                name,
                kind,
                true_values=tuple(col.true_values or ("true",)),
                false_values=tuple(col.false_values or ("false",)),
                min=col.min if kind in ("int", "float") else None,
                max=col.max if kind in ("int", "float") else None,
                categories=tuple(col.categories)
                if kind == "string" and col.categories is not None
                else None,
                invalid=severity("type_mismatch", "error", name),
                out_of_range=severity("out_of_range", "warning", name),
                unseen=severity("unseen_category", "warning", name),
                unit=col.unit if kind == "timestamp" else None,
            )
            rules.append(rule)
        return cls(rules)

    def subset(self, names: Sequence[str]) -> Coercer:
        """The rules of ``names`` only (monitoring reads the inputs a file has)."""
        by_name = {rule.name: rule for rule in self.rules}
        return Coercer([by_name[name] for name in names])

    def rule(self, name: str) -> InputRule:
        """The rule of one input."""
        return next(rule for rule in self.rules if rule.name == name)

    def state(self) -> list[dict[str, Any]]:
        """The rules as JSON-able data."""
        return [rule.state() for rule in self.rules]

    @classmethod
    def from_state(cls, state: Sequence[Mapping[str, Any]]) -> Coercer:
        """The coercer :meth:`state` wrote."""
        return cls([InputRule.from_state(rule) for rule in state])

    # --- batch -------------------------------------------------------------------------------

    def table(self, table: pa.Table) -> Coerced:
        """Every input column of ``table`` in its declared type, with what did not fit.

        Raises:
            DataValidationError: An input column is missing from ``table`` (names it).
        """
        from keel.validate.coerce_arrays import coerce_array  # imports this module

        missing = [name for name in self.names if name not in table.column_names]
        if missing:
            spare = [c for c in table.column_names if c not in self.names]
            hint = "".join(
                f" The input's column '{close[0]}': did you mean '{name}'?"
                for name in missing
                if (close := likely_names(name, spare))
            )
            raise DataValidationError(
                f"column(s) {missing} missing from the input; the model reads {self.names}." + hint,
                field=missing[0],
            )
        columns, issues = [], []
        rejected = np.zeros(table.num_rows, dtype=bool)
        for rule in self.rules:
            column = table.column(rule.name)
            array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
            converted, found = coerce_array(rule, array)
            columns.append(converted)
            for issue in found:
                if issue.severity == "error":
                    rejected[issue.rows] = True
            issues += found
        return Coerced(pa.table(columns, names=self.names), issues, rejected)

    # --- row ---------------------------------------------------------------------------------

    def row(
        self, row: Mapping[str, Any], *, where: str = ""
    ) -> tuple[dict[str, Any], list[Finding]]:
        """One request row's values in their declared types, and its warnings.

        Args:
            row: Field name -> raw value (JSON types, or any Python value).
            where: Prefix for field names in messages, e.g. ``instances[3].``.

        Returns:
            ``(values, warnings)``: numbers as float (NaN when missing), booleans as bool or
            None, strings as str or None; warning findings (out of range, unseen category,
            and one ``ignored_field`` per field of :attr:`ignored` the row carried).

        Fields of :attr:`ignored` are removed from ``row`` when it is a ``dict`` (the server
        then logs, and keeps for feedback, the fields the model read); other mappings are
        left as they are.

        Raises:
            DataValidationError: A field is missing, unknown, or has a value that does not
                convert (with severity ``error``); names the field, the value and what it
                accepts. An unknown field close to an input's name says which
                (``Did you mean 'age'?``).
        """
        values: dict[str, Any] = {}
        findings: list[Finding] = []
        for rule in self._row_rules:
            name = rule.name
            try:
                raw = row[name]
            except KeyError:
                raise self._missing(where, rule.rule, row) from None
            values[name] = rule.read(raw, where, findings)
        if len(values) != len(row):  # extra fields: ignored ones, or unknown (refused)
            self._extra(row, where, findings)
        return values, findings

    def _extra(self, row: Mapping[str, Any], where: str, findings: list[Finding]) -> None:
        """Refuse the first unknown field of ``row``; note and drop the ignored ones."""
        extra = [name for name in row if name not in self._row_set]
        unknown = sorted((name for name in extra if name not in self.ignored), key=str)
        if unknown:
            name = unknown[0]
            close = likely_names(name, self.names)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise DataValidationError(
                f"{where}{name}: unknown field. Expected fields: {self._expected}.{hint}",
                field=f"{where}{name}",
                details={"suggestion": close[0]} if close else {},
            )
        extra = [name for name in extra if name not in self.kept]
        for name in extra:
            findings.append(
                Finding(
                    f"{where}{name}",
                    "ignored_field",
                    "warning",
                    row[name],  # the value sent, as every finding carries it
                    f"{where}{name}: not a model input (a column of the training data the "
                    "model does not read); ignored.",
                )
            )
        if type(row) is dict:
            for name in extra:
                del row[name]

    def _missing(self, where: str, rule: InputRule, row: Mapping[str, Any]) -> DataValidationError:
        """The error for a missing field; when the row carries an unknown field close to the
        name of a missing one (a typo), the error names that field and the one it looks like."""
        spare = [name for name in row if name not in self._row_set and name not in self.ignored]
        absent = [name for name in self.names if name not in row] if spare else []
        for name in spare:
            close = likely_names(name, absent)
            if close:
                return DataValidationError(
                    f"{where}{name}: unknown field. Expected fields: {self._expected}. "
                    f"Did you mean '{close[0]}'?",
                    field=f"{where}{name}",
                    details={"suggestion": close[0]},
                )
        others = [name for name in self.names if name not in row and name != rule.name]
        more = ""
        if others:  # name them all at once, not one per attempt
            listed = ", ".join(others[:5])
            listed += f" and {len(others) - 5} more" if len(others) > 5 else ""
            more = f" {len(others)} other field(s) missing too: {listed}."
        return DataValidationError(
            f"{where}{rule.name}: missing field; expected {rule.expected} or null.{more}",
            field=f"{where}{rule.name}",
            details={"expected": rule.type, "missing": [rule.name, *others]},
        )


# --- the row path ------------------------------------------------------------------------------


class _RowRule:
    """One rule, prepared for fast per-value reads (sets, bounds as floats)."""

    __slots__ = ("family", "high", "integer", "known", "low", "name", "rule", "tokens", "unit")

    def __init__(self, rule: InputRule) -> None:
        self.rule = rule
        self.name = rule.name
        self.family = _FAMILY[rule.type]
        self.integer = rule.type == "int"
        self.unit = rule.unit
        self.low = -math.inf if rule.min is None else float(rule.min)
        self.high = math.inf if rule.max is None else float(rule.max)
        self.known = None if rule.categories is None else frozenset(rule.categories)
        self.tokens = {t.lower(): True for t in rule.true_values} | {
            t.lower(): False for t in rule.false_values
        }
        self.tokens.setdefault("true", True)
        self.tokens.setdefault("false", False)

    def read(self, value: Any, where: str, findings: list[Finding]) -> Any:
        family = self.family
        if family is _NUMBERS:
            kind = type(value)
            if kind is float:
                number = value
            elif kind is int:
                try:
                    number = float(value)
                except OverflowError:
                    return self._invalid(value, where, findings, math.nan)
            elif value is None:
                return math.nan
            elif kind is str:
                text = value.strip(_SPACE)
                if not text:
                    return math.nan
                if not _NUMBER_RE.fullmatch(text):
                    return self._invalid(value, where, findings, math.nan)
                number = float(text)
            elif isinstance(value, np.integer | np.floating):
                number = float(value)
            else:
                return self._invalid(value, where, findings, math.nan)
            if number - number != 0.0:  # NaN (missing, as in pandas) or an infinity
                return (
                    number if number != number else self._invalid(value, where, findings, math.nan)
                )
            if self.integer and not number.is_integer():
                return self._invalid(value, where, findings, math.nan)  # 2.5 for an int
            if not self.low <= number <= self.high:
                self._note(findings, where, "out_of_range", value)
            return number
        if family is _STRING:
            if type(value) is str:
                known = self.known
                if known is not None and value in known:
                    return value
                value = value.strip(_SPACE)
                if not value:
                    return None
            elif value is None:
                return None
            elif type(value) is int:
                value = str(value)
            else:
                return self._invalid(value, where, findings, None)
            if self.known is not None and value not in self.known:
                self._note(findings, where, "unseen_category", value)
            return value
        if family is _BOOL:
            if type(value) is bool or value is None:
                return value
            if type(value) is str:
                text = value.strip(_SPACE)
                if not text:
                    return None
                found = self.tokens.get(text.lower())
            elif type(value) is int:
                found = self.tokens.get(str(value))
            else:
                found = None
            if found is None:
                return self._invalid(value, where, findings, None)
            return found
        if self.unit is not None:
            return self._epoch(value, where, findings)
        if value is not None and not isinstance(value, str) and not hasattr(value, "year"):
            return self._invalid(value, where, findings, None)  # not a date or ISO text
        return value  # dates: the pipeline parses them

    def _epoch(self, value: Any, where: str, findings: list[Finding]) -> Any:
        converted, ok = read_epoch(value, self.unit, _NUMBER_RE, _SPACE)  # type: ignore[arg-type]
        return converted if ok else self._invalid(value, where, findings, None)

    def _invalid(self, value: Any, where: str, findings: list[Finding], missing: Any) -> Any:
        rule = self.rule
        message = f"{where}{rule.name}: {_describe(value)} is not {rule.expected}."
        if rule.invalid == "error":
            raise DataValidationError(
                message,
                field=f"{where}{rule.name}",
                details={"expected": rule.type, "got": type(value).__name__},
            )
        findings.append(Finding(f"{where}{rule.name}", "type_mismatch", "warning", value, message))
        return missing

    def _note(self, findings: list[Finding], where: str, kind: str, value: Any) -> None:
        rule = self.rule
        if kind == "out_of_range":
            message = f"{where}{rule.name}: {value!r} is outside [{rule.min}, {rule.max}]."
            severity = rule.out_of_range
        else:
            message = f"{where}{rule.name}: {value!r} was not seen in training."
            severity = rule.unseen
        if severity == "error":
            raise DataValidationError(
                message + " (the schema makes this an error)", field=f"{where}{rule.name}"
            )
        findings.append(Finding(f"{where}{rule.name}", kind, "warning", value, message))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"
