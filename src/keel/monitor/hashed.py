"""Monitoring inputs the prediction log holds as keyed hashes (personal data).

The server logs the inputs of personal data columns (schema role ``pii`` or ``pii: true``) as
their HMAC-SHA256 with the project secret (:mod:`keel.serve.predlog`). Compared with training
values in clear, every logged value of such a column is unseen (a categorical column shows
JS 1.0) and a number is not a number any more. :func:`hashed_reference` makes the comparison
like with like: a hashed categorical input's training categories are hashed with the same key
and the same canonical form (:func:`keel.store.secrets.keyed_hash` of the category's text), so
the log's hashes fall in the bins of the values they hide; a hashed numeric input cannot be
binned at all and is reported ``not_comparable`` (reason ``hashed``), never drift or stable.

Only the prediction log is read this way: a file passed with ``--input`` holds values in clear.
The hashed categories change the reference, so sketches counted against the clear bins are
never merged with hashed counts (their key differs, :func:`keel.monitor.sketches.sketch_key`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from keel.store.secrets import existing_secret, keyed_hash

if TYPE_CHECKING:
    from keel.monitor.report import ModelReference
    from keel.project import Project

__all__ = ["HASHED", "HashedInputs", "hashed_inputs", "hashed_reference"]

HASHED = "hashed"  # the reason a hashed numeric input is not comparable


@dataclass(frozen=True)
class HashedInputs:
    """The columns the server logs as keyed hashes, and the key (left out of ``repr``)."""

    columns: frozenset[str]
    key: bytes = field(repr=False)


def hashed_inputs(project: Project) -> HashedInputs | None:
    """The personal data columns the project's server hashes in the log (``serve.log_pii:
    hash``), with the project secret; None when it hashes none or holds no secret yet."""
    from keel.validate.schema import read_schema

    path = project.root / "schema.yaml"
    if project.config.serve.log_pii != "hash" or not path.exists():
        return None
    schema = read_schema(path)
    columns = frozenset(
        name for name, col in schema.columns.items() if col.role == "pii" or col.pii is True
    )
    if not columns:
        return None
    key = existing_secret(project.state_dir)
    return None if key is None else HashedInputs(columns, key)


def hashed_reference(reference: ModelReference, hashed: HashedInputs | None) -> ModelReference:
    """The reference as the log sees it: hashed categorical inputs get hashed training
    categories and are read as text; hashed numeric inputs are left out of the binned
    columns and listed in ``not_comparable``."""
    if hashed is None:
        return reference
    names = [n for n in reference.inputs if n in hashed.columns]
    if not names:
        return reference
    stats = dict(reference.statistics)
    columns: dict[str, Any] = dict(stats["columns"])
    apart: dict[str, str] = dict(reference.not_comparable)
    for name in names:
        column = columns.get(name)
        if column is None:
            continue
        if column["kind"] == "numeric":
            del columns[name]
            apart[name] = HASHED
        else:  # the same text the bins compare (str of the category), hashed as the log does
            categories = [keyed_hash(hashed.key, str(c)) for c in column["categories"]]
            columns[name] = {**column, "categories": categories}
    stats["columns"] = columns
    return replace(
        reference,
        statistics=stats,
        inputs={n: ("string" if n in names else kind) for n, kind in reference.inputs.items()},
        coercer=_as_text(reference.coercer, names),
        not_comparable=apart,
    )


def _as_text(coercer: Any, names: list[str]) -> Any:
    """The coercion rules with the hashed inputs read as plain text (a hash is no number)."""
    if coercer is None:
        return None
    from keel.validate.coerce import Coercer, InputRule

    return Coercer(
        [InputRule(rule.name, "string") if rule.name in names else rule for rule in coercer.rules]
    )
