"""The run filter and sort languages: text in, store conditions out (values stay bound parameters).

Filter: comparisons joined by ``and``::

    metrics.roc_auc > 0.9 and params.num_leaves <= 64 and tags.team = "x"
    step = "train" and status in ("succeeded", "cached") and started_at >= "2026-11-01"

Sort: comma-separated fields, each optionally ``asc`` or ``desc``::

    metrics.roc_auc desc, duration
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

from keel.errors import ConfigError
from keel.store.tracking_tables import ATTRIBUTES, Condition, Namespace, Operator, Order, Scalar

__all__ = ["FILTER_HELP", "SORT_HELP", "parse_filter", "parse_sort"]

FILTER_HELP = (
    'valid forms: metrics.NAME > 0.9 | params.NAME <= 64 | params.NAME = "gbdt" | '
    'tags.NAME = "text" | step = "train" | status = "succeeded" | duration > 10 | '
    'cpu_seconds, peak_memory_mb (numbers) | started_at >= "2026-11-22T10:00" | '
    "FIELD in (v1, v2); operators = != < <= > >=; join conditions with 'and'"
)
SORT_HELP = 'e.g. --sort "metrics.roc_auc desc" or --sort "duration, started_at desc"'

_STATUSES = ("running", "succeeded", "failed", "cached", "cancelled")
_NUMERIC = ("duration", "cpu_seconds", "peak_memory_mb")
_TIMES = ("started_at", "ended_at")
_NAMESPACES = ("metrics", "params", "tags")
_KEY = r"(?:[A-Za-z0-9_\-/:]+|`[^`]+`)"
_TOKEN = re.compile(
    rf"""
    (?P<ws>\s+)
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?![A-Za-z_])
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op><=|>=|!=|==|=|<|>)
  | (?P<punct>[(),])
  | (?P<field>[A-Za-z_][A-Za-z0-9_]*(?:\.{_KEY})*)
    """,
    re.VERBOSE,
)
_KEYWORDS = ("and", "or", "in", "true", "false", "asc", "desc", "not")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    pos: int


def parse_filter(text: str | None) -> list[Condition]:
    """Conditions for ``MetadataStore.search_runs`` from a filter expression.

    Args:
        text: E.g. ``metrics.roc_auc > 0.9 and params.num_leaves <= 64``; empty or None
            means no filter.

    Raises:
        ConfigError: The expression is malformed; the message shows the position and the
            valid forms.

    Example:
        >>> parse_filter('metrics.auc > 0.9 and step = "train"')[0]
        Condition(namespace='metrics', key='auc', op='>', value=0.9)
    """
    if text is None or not text.strip():
        return []
    tokens = _tokenize(text)
    conditions: list[Condition] = []
    i = 0
    while True:
        condition, i = _condition(text, tokens, i)
        conditions.append(condition)
        if i == len(tokens):
            return conditions
        token = tokens[i]
        if _word(token) == "or":
            _fail(text, token.pos, "only 'and' joins conditions ('or' is not supported)")
        if _word(token) != "and":
            _fail(text, token.pos, f"expected 'and' or the end, found {token.text!r}")
        i += 1
        if i == len(tokens):
            _fail(text, len(text), "expected a condition after 'and'")


def parse_sort(text: str | None) -> list[Order]:
    """Sort keys for ``MetadataStore.search_runs`` from ``FIELD [asc|desc], ...``.

    Raises:
        ConfigError: Unknown field or direction; the message names it and gives an example.
    """
    if text is None or not text.strip():
        return []
    orders = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2:
            msg = f"sort {text!r}: expected FIELD [asc|desc] in {part.strip()!r}; {SORT_HELP}"
            raise ConfigError(msg, field="sort")
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            msg = f"sort {text!r}: direction {words[1]!r} must be asc or desc; {SORT_HELP}"
            raise ConfigError(msg, field="sort")
        namespace, key = _field(text, _Token("field", words[0], text.find(words[0])))
        orders.append(Order(namespace, key, descending=direction == "desc"))
    return orders


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            _fail(text, pos, f"unexpected character {text[pos]!r}")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


def _condition(text: str, tokens: list[_Token], i: int) -> tuple[Condition, int]:
    field = _at(text, tokens, i, "a field such as metrics.roc_auc")
    if field.kind != "field" or _word(field) in _KEYWORDS:
        _fail(text, field.pos, f"expected a field such as metrics.roc_auc, found {field.text!r}")
    namespace, key = _field(text, field)
    op_token = _at(text, tokens, i + 1, "an operator")
    if _word(op_token) == "in":
        values, i = _list(text, tokens, i + 2)
        checked = tuple(_check(text, namespace, key, v, t) for v, t in values)
        return Condition(namespace, key, "in", checked), i
    if op_token.kind != "op":
        _fail(
            text, op_token.pos, f"expected an operator after {field.text}, found {op_token.text!r}"
        )
    op: Operator = "=" if op_token.text == "==" else op_token.text  # type: ignore[assignment]
    value_token = _at(text, tokens, i + 2, "a value")
    value = _check(text, namespace, key, _value(text, value_token), value_token)
    if namespace == "run" and key == "status" and op not in ("=", "!="):
        _fail(text, op_token.pos, "status compares with = , != or in")
    return Condition(namespace, key, op, value), i + 3


def _list(text: str, tokens: list[_Token], i: int) -> tuple[list[tuple[Scalar, _Token]], int]:
    opening = _at(text, tokens, i, "'('")
    if opening.text != "(":
        _fail(text, opening.pos, f"expected '(' after 'in', found {opening.text!r}")
    values = []
    i += 1
    while True:
        token = _at(text, tokens, i, "a value")
        values.append((_value(text, token), token))
        sep = _at(text, tokens, i + 1, "',' or ')'")
        i += 2
        if sep.text == ")":
            return values, i
        if sep.text != ",":
            _fail(text, sep.pos, f"expected ',' or ')' in the list, found {sep.text!r}")


def _field(text: str, token: _Token) -> tuple[Namespace, str]:
    head, dot, rest = token.text.partition(".")
    if head in _NAMESPACES:
        if not dot or not rest:
            _fail(text, token.pos, f"{head} needs a name, e.g. {head}.roc_auc")
        return head, rest.replace("`", "")  # type: ignore[return-value]
    if dot or head not in ATTRIBUTES:
        known = [*(f"{n}.NAME" for n in _NAMESPACES), *ATTRIBUTES]
        close = difflib.get_close_matches(head, [*_NAMESPACES, *ATTRIBUTES], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        _fail(text, token.pos, f"unknown field {token.text!r} (known: {', '.join(known)}){hint}")
    return "run", head


def _value(text: str, token: _Token) -> Scalar:
    if token.kind == "number":
        number = float(token.text)
        return int(number) if re.fullmatch(r"-?\d+", token.text) else number
    if token.kind == "string":
        return re.sub(r"\\(.)", r"\1", token.text[1:-1])
    if _word(token) in ("true", "false"):
        return _word(token) == "true"
    _fail(
        text, token.pos, f'expected a value (number, "text", true or false), found {token.text!r}'
    )


def _check(text: str, namespace: str, key: str, value: Scalar, token: _Token) -> Scalar:
    """The value, converted for the field, or a ConfigError naming what the field takes."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if namespace == "metrics" or (namespace == "run" and key in _NUMERIC):
        if not numeric:
            _fail(
                text, token.pos, f"{_name(namespace, key)} compares with a number, not {token.text}"
            )
        return value
    if namespace == "run" and key in _TIMES:
        return _time(text, value, token)
    if namespace == "run" and not isinstance(value, str):
        _fail(text, token.pos, f'{key} compares with quoted text, e.g. {key} = "train"')
    if namespace == "run" and key == "status" and value not in _STATUSES:
        _fail(text, token.pos, f"status is one of {', '.join(_STATUSES)}, not {token.text}")
    return value


def _time(text: str, value: Scalar, token: _Token) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        _fail(text, token.pos, f'{token.text} is not a date or time, e.g. "2026-11-22T10:00"')
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _name(namespace: str, key: str) -> str:
    return key if namespace == "run" else f"{namespace}.{key}"


def _word(token: _Token) -> str:
    return token.text.lower() if token.kind == "field" else ""


def _at(text: str, tokens: list[_Token], i: int, expected: str) -> _Token:
    if i >= len(tokens):
        _fail(text, len(text), f"expected {expected}, but the filter ends")
    return tokens[i]


def _fail(text: str, pos: int, what: str) -> NoReturn:
    pointer = " " * pos + "^"
    end = "" if what.endswith(("?", ".")) else "."
    msg = f"filter at position {pos + 1}: {what}{end}\n  {text}\n  {pointer}\n{FILTER_HELP}"
    raise ConfigError(msg, field="filter")
