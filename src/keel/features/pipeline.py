"""FeaturePipeline: one fitted state, two paths (a table in batch, a dict per request).

The pipeline is a list of chains (:class:`~keel.features.chain.Chain`), one per column, cross
or custom feature, each a sequence of transforms (:mod:`keel.features.transform`). A project
that declares nothing gets today's defaults: numbers imputed and standardized, strings imputed
and one-hot encoded. ``features.transforms`` in keel.yaml replaces a column's default chain;
``features.custom`` adds columns computed by ``@keel.feature`` functions. Which chain each
column gets is planned by :mod:`keel.features.plan`; this module fits and runs them.

The fitted pipeline is data: :meth:`FeaturePipeline.state` is JSON that travels inside the
model package, and :meth:`FeaturePipeline.from_state` rebuilds it in the server. ``transform``
works column-wise on Arrow/NumPy; ``transform_row`` works on one request dict with no
DataFrame. Both run the same transforms over the same fitted attributes, so they agree bit for
bit (a Hypothesis test checks it for every transform).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import pyarrow as pa

from keel.errors import ConfigError, DataValidationError, NotFittedError
from keel.features.chain import Chain
from keel.features.columnwise import Fused, fill
from keel.features.custom import CustomFeature
from keel.features.plan import KINDS, Defaults, input_kinds, plan_chains
from keel.features.rowplan import RowPlan
from keel.features.transform import as_strings
from keel.validate.coerce import Coerced, Coercer, Finding

__all__ = ["FeaturePipeline"]

_BOOL_TEXT = {True: "true", False: "false", None: None}  # how both paths spell a bool category
_COLUMNWISE = 4  # rows from which transform_rows works a column at a time (NumPy's call cost)
_PLANNED_MANY = 7  # rows from which the row plan works a column at a time (callgrind: ~6.8)


class FeaturePipeline:
    """Turn the model's input columns into a float64 feature matrix, in batch or per row.

    Args:
        inputs: Input column names and types (``int``, ``float``, ``string``, ``bool``,
            ``date``, ``timestamp``) in order.
        numeric_impute: Default chain for numbers: ``median``, ``mean`` or ``constant`` (0).
        categorical_impute: Default chain for strings: ``most_frequent`` or ``constant``
            (the token ``__missing__``).
        scale: Default chain for numbers: ``standard`` or ``none``.
        max_categories: Default one-hot: most frequent categories kept; the rest share an
            ``other`` column.
        transforms: Declared chains, as in keel.yaml: ``[{"columns": [...], "steps":
            [{"kind": "impute", "strategy": "median"}, {"kind": "standardize"}]}]``. A chain
            replaces the default chain of its columns; one whose first step is ``cross``
            combines its columns into one category (and leaves their own chains alone).
        custom: Custom features: ``[{"function": "mod:fn", "inputs": [...], "output": name,
            "type": "float"}]``.
        rules: How raw values become each input's type
            (:meth:`keel.validate.coerce.Coercer.state`, built from the schema: boolean
            spellings, ranges, categories, severities); default: the plain rules of ``inputs``.
            Every path (fit, transform, transform_row) coerces its input with them first.

    Example:
        >>> pipe = FeaturePipeline(inputs={"age": "int", "sex": "string"}).fit(table)
        >>> pipe.transform_row({"age": 39, "sex": "Male"})
    """

    def __init__(
        self,
        *,
        inputs: Mapping[str, str],
        numeric_impute: str = "median",
        categorical_impute: str = "most_frequent",
        scale: str = "standard",
        max_categories: int = 50,
        transforms: Sequence[Mapping[str, Any]] = (),
        custom: Sequence[Mapping[str, Any]] = (),
        rules: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.inputs = dict(inputs)
        self.numeric_impute = numeric_impute
        self.categorical_impute = categorical_impute
        self.scale = scale
        self.max_categories = max_categories
        self.transforms = [dict(t) for t in transforms]
        self.custom = [dict(c) for c in custom]
        self.rules = [dict(r) for r in rules]

    # --- fitting -----------------------------------------------------------------------------

    def coercer(self) -> Coercer:
        """The rules every path coerces raw inputs with (see ``rules``)."""
        cached: Coercer | None = getattr(self, "_coercer", None)
        if cached is not None:
            return cached
        unknown = [name for name, kind in self.inputs.items() if kind not in KINDS]
        if unknown:
            raise ConfigError(
                f"input '{unknown[0]}' has type '{self.inputs[unknown[0]]}'; types: "
                f"{', '.join(KINDS)}.",
                field=unknown[0],
            )
        coercer = Coercer.from_state(self.rules) if self.rules else Coercer.from_types(self.inputs)
        if {r.name: r.type for r in coercer.rules} != self.inputs:  # (JSON may sort the keys)
            raise ConfigError("rules must name the inputs, with the same types.")
        self._coercer = coercer
        return coercer

    def coerce(self, table: pa.Table) -> Coerced:
        """The inputs of ``table`` in their declared types, and the rows that did not fit.

        Raises:
            DataValidationError: An input column is missing (names it).
        """
        return self.coercer().table(table)

    def fit(self, table: pa.Table | Coerced, y: np.ndarray | None = None) -> FeaturePipeline:
        """Learn every transform from ``table`` (raw, or already :meth:`coerce`-d); ``y`` is
        needed by ``target_encode``.

        Raises:
            DataValidationError: A column is missing, or a value does not convert to its
                input's type (names the row, column and value).
        """
        coerced = self._coerced(table)
        custom = [CustomFeature.create(spec) for spec in self.custom]
        defaults = Defaults(
            numeric_impute=self.numeric_impute,
            categorical_impute=self.categorical_impute,
            scale=self.scale,
            max_categories=self.max_categories,
        )
        chains = plan_chains(self.transforms, input_kinds(self.inputs, custom), defaults)
        if y is None and any(step.needs_target for chain in chains for step in chain.steps):
            raise ConfigError(
                "target_encode needs the target: call fit(table, y) with the labels.", field="y"
            )
        self.custom_ = custom
        columns = self._read_batch(coerced)
        for chain in chains:
            try:
                chain.fit(columns, y)
            except ConfigError as exc:
                if chain.entry is None:
                    raise
                where = f"features.transforms[{chain.entry}]"
                raise ConfigError(f"{where} ({chain.name}): {exc.message}", field=where) from exc
        self._finish(chains)
        return self

    def _finish(self, chains: list[Chain]) -> None:
        """Lay the chains out side by side; name every output column."""
        offset = 0
        names: list[str] = []
        for chain in chains:
            offset = chain.place(offset)
            names += chain.names
        self.chains_ = chains
        self.n_features_ = offset
        self.feature_names_ = _unique_names(names)
        self._booleans = [name for name, kind in self.inputs.items() if kind == "bool"]
        self._fused = Fused.of(chains, {n: KINDS[k] for n, k in self.inputs.items()})
        rules = self.coercer().rules
        self._plan = None if self.custom_ else RowPlan.of(rules, self._fused, offset)

    # --- state -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The fitted pipeline as JSON-able data."""
        self._check_fitted()
        return {
            "kind": "keel.FeaturePipeline",
            "version": 2,
            "params": {
                "inputs": self.inputs,
                "numeric_impute": self.numeric_impute,
                "categorical_impute": self.categorical_impute,
                "scale": self.scale,
                "max_categories": self.max_categories,
                "transforms": self.transforms,
                "custom": self.custom,
                "rules": self.coercer().state(),
            },
            "custom": [feature.state() for feature in self.custom_],
            "chains": [chain.state() for chain in self.chains_],
            "n_features": self.n_features_,
            "feature_names": self.feature_names_,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FeaturePipeline:
        """Rebuild a fitted pipeline from :meth:`state` (version 1 states are converted).

        Raises:
            IntegrityError: A custom feature's source changed since training (names it).
            NotFoundError: A custom feature's module cannot be imported here.
            DataValidationError: Not a pipeline state.
        """
        from keel.features.plan import upgrade_v1

        if state.get("kind") != "keel.FeaturePipeline" or state.get("version") not in (1, 2):
            raise DataValidationError(
                "not a keel.FeaturePipeline state (version 1 or 2); re-train the model."
            )
        if state["version"] == 1:
            state = upgrade_v1(state)
        pipe = cls(**state["params"])
        pipe.custom_ = [CustomFeature.from_state(spec) for spec in state["custom"]]
        pipe._finish([Chain.from_state(chain) for chain in state["chains"]])
        if pipe.n_features_ != int(state["n_features"]):
            raise DataValidationError(
                f"pipeline state lays out {pipe.n_features_} features but records "
                f"{state['n_features']}; the state is corrupt. Re-train the model."
            )
        return pipe

    def feature_names(self) -> list[str]:
        """Output column names, e.g. ``age`` and ``sex=Male`` (also ``feature_names_``)."""
        self._check_fitted()
        return list(self.feature_names_)

    def feature_inputs(self) -> list[tuple[str, ...]]:
        """For each output column, the input columns it is computed from, in input order.

        A one-hot or missing-indicator column comes from its one input; a cross from each
        crossed input; a custom feature from the inputs of its function.
        """
        self._check_fitted()
        custom = {feature.output: feature.inputs for feature in self.custom_}

        def sources(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
            if name in custom and name not in seen:
                return set().union(*(sources(i, seen | {name}) for i in custom[name]))
            return {name}

        order = {name: i for i, name in enumerate(self.inputs)}
        out: list[tuple[str, ...]] = [()] * self.n_features_
        for chain in self.chains_:
            found = set().union(*(sources(c) for c in chain.columns))
            ordered = tuple(sorted(found, key=lambda n: order.get(n, len(order))))
            out[chain.offset : chain.offset + chain.width] = [ordered] * chain.width
        return out

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_"):
            raise NotFittedError("FeaturePipeline is not fitted; call fit(table) first.")

    # --- batch path --------------------------------------------------------------------------

    def transform(self, table: pa.Table | Coerced) -> np.ndarray:
        """Transform every row of ``table`` into a float64 matrix of shape (rows, n_features).

        ``table`` is raw data (coerced here: a value that does not convert raises) or what
        :meth:`coerce` returned (its rejected rows must be filtered out by the caller first,
        e.g. batch scoring writes them to a rejects file).

        Raises:
            DataValidationError: A column is missing or a value does not convert.
        """
        self._check_fitted()
        return self._transform(table, None)

    def transform_training(self, table: pa.Table | Coerced, y: np.ndarray) -> np.ndarray:
        """The training matrix: as :meth:`transform`, with out-of-fold target encodings.

        Each training row's ``target_encode`` columns come from the statistics of the other
        folds, so no row sees its own label. Without target encoders this equals
        ``transform(table)``. Use it for the rows the model is fitted on, never for new data.
        """
        self._check_fitted()
        return self._transform(table, np.asarray(y, dtype=np.float64))

    def _transform(self, table: pa.Table | Coerced, y: np.ndarray | None) -> np.ndarray:
        coerced = self._coerced(table)
        columns = self._read_batch(coerced)
        out = np.zeros((coerced.table.num_rows, self.n_features_), dtype=np.float64)
        for chain in self.chains_:
            try:
                chain.transform(columns, out, y)
            except DataValidationError as exc:
                raise _at(exc, "", chain.name) from exc
        return out

    def _coerced(self, table: pa.Table | Coerced) -> Coerced:
        if isinstance(table, Coerced):
            return table
        coerced = self.coerce(table)
        coerced.raise_errors()
        return coerced

    def _read_batch(self, coerced: Coerced) -> dict[str, Any]:
        """Each input as its chains read it, then each custom feature's column."""
        columns: dict[str, Any] = {}
        table = coerced.table
        for name, kind in self.inputs.items():
            column = table.column(name)
            if KINDS[kind] == "number":  # float64 with nulls: the coercer's output
                columns[name] = column.to_numpy().astype(np.float64)
            elif KINDS[kind] == "category":
                columns[name] = as_strings(column)
            else:
                columns[name] = column.combine_chunks() if column.num_chunks else column.chunk(0)
        for feature in self.custom_:
            try:
                columns[feature.output] = feature.column(
                    [columns[name] for name in feature.inputs], table.num_rows
                )
            except KeelErrors:
                raise
            except Exception as exc:
                raise _failed(feature, exc, "") from exc
        return columns

    # --- row path ----------------------------------------------------------------------------

    def transform_row(
        self,
        row: Mapping[str, Any],
        *,
        where: str = "",
        findings: list[Finding] | None = None,
    ) -> np.ndarray:
        """Coerce one request row and transform it: shape (1, n_features).

        Args:
            row: Field name -> JSON value (number, string, bool, ISO date string or null).
            where: Prefix for error fields, e.g. ``instances[3].``.
            findings: A list to append the row's warnings to (out of range, unseen category).

        Raises:
            DataValidationError: A field is missing or unknown, or its value does not convert
                (names the field, the value and what it accepts).
        """
        self._check_fitted()
        out = np.zeros((1, self.n_features_), dtype=np.float64)
        self.fill_row(row, out[0], where=where, findings=findings)
        return out

    def transform_rows(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        prefix: str = "instances",
        findings: list[Finding] | None = None,
    ) -> np.ndarray:
        """Coerce and transform a few request rows (the online path for small batches).

        Each row is coerced on its own (the same rules, warnings and errors as
        :meth:`transform_row`); from ``_COLUMNWISE`` rows on, the coerced values are then
        transformed a column at a time (:meth:`_fill_columns`). When anything fails, the rows
        are redone one at a time, so the error raised is the one the first bad row gives.
        """
        self._check_fitted()
        if self._plan is not None:
            planned = self._planned_rows(self._plan, rows)
            if planned is not None:
                return planned
        return self._transform_rows_checked(rows, prefix, findings)

    def _planned_rows(self, plan: RowPlan, rows: Sequence[Any]) -> np.ndarray | None:
        """The rows' features by the row plan, or None when a row needs its rules."""
        if len(rows) >= _PLANNED_MANY:
            planned = plan.fill_many(rows)
            return planned[0] if planned is not None and not planned[1].any() else None
        out = np.zeros((len(rows), self.n_features_), dtype=np.float64)
        return out if all(map(plan.fill, rows, out)) else None

    def _transform_rows_checked(
        self, rows: Sequence[Mapping[str, Any]], prefix: str, findings: list[Finding] | None
    ) -> np.ndarray:
        """:meth:`transform_rows` without the row plan: each row coerced by its rules."""
        if len(rows) >= _COLUMNWISE:
            found: list[Finding] = []
            try:
                out = self._fill_columns(self._coerce_rows(rows, prefix, found))
            except Exception:  # redone row by row below: that raises it, for its row
                pass
            else:
                if findings is not None:
                    findings += found
                return out
        return self._transform_rows(rows, prefix, findings)

    def transform_each(
        self,
        requests: Sequence[Sequence[Mapping[str, Any]]],
        *,
        prefix: str = "instances",
        findings: Sequence[list[Finding]],
    ) -> list[np.ndarray | Exception]:
        """:meth:`transform_rows` for several requests at once (a server's batch).

        Each request gets what ``transform_rows(rows, prefix=prefix, findings=...)`` gives
        it: its matrix (and its warnings appended to its own list of ``findings``), or the
        exception it would raise, returned, not raised, so one bad request fails alone. The
        requests' rows are transformed together, a column at a time.
        """
        self._check_fitted()
        if self._plan is not None:
            return self._planned_each(self._plan, requests, prefix, findings)
        if len(requests) == 1 or sum(len(rows) for rows in requests) < _COLUMNWISE:
            return [
                _attempt(self.transform_rows, rows, prefix=prefix, findings=found)
                for rows, found in zip(requests, findings, strict=True)
            ]
        results: list[np.ndarray | Exception | None] = [None] * len(requests)
        coerced: list[tuple[int, list[dict[str, Any]], list[Finding]]] = []
        for k, rows in enumerate(requests):
            found: list[Finding] = []
            try:
                coerced.append((k, self._coerce_rows(rows, prefix, found), found))
            except Exception:  # redone row by row: that raises it, for its row
                results[k] = _attempt(self._transform_rows, rows, prefix, findings[k])
        x: np.ndarray | None = None
        try:
            if coerced:
                x = self._fill_columns([row for _, values, _ in coerced for row in values])
        except Exception:  # one request's rows fail: each is filled on its own
            x = None
        start = 0
        for k, values, found in coerced:
            if x is not None:
                results[k] = x[start : start + len(values)]
                start += len(values)
            else:
                results[k] = _attempt(self._fill_request, values, prefix)
            if not isinstance(results[k], Exception):
                findings[k].extend(found)
        return cast(list[np.ndarray | Exception], results)  # every request has its result

    def _planned_each(
        self,
        plan: RowPlan,
        requests: Sequence[Sequence[Mapping[str, Any]]],
        prefix: str,
        findings: Sequence[list[Finding]],
    ) -> list[np.ndarray | Exception]:
        """:meth:`transform_each` by the row plan; a request with a row the plan does not
        answer is redone on its own without the plan (its warnings, its error)."""
        flat = [row for rows in requests for row in rows]
        results: list[np.ndarray | Exception] = []
        planned = plan.fill_many(flat) if len(flat) >= _PLANNED_MANY else None
        if planned is not None:
            x, bad = planned
            flagged = bad.tolist() if bad.any() else None
            start = 0
            for rows, found in zip(requests, findings, strict=True):
                end = start + len(rows)
                if flagged is not None and any(flagged[start:end]):
                    results.append(_attempt(self._transform_rows_checked, rows, prefix, found))
                else:
                    results.append(x[start:end])
                start = end
            return results
        for rows, found in zip(requests, findings, strict=True):
            out = np.zeros((len(rows), self.n_features_), dtype=np.float64)
            if all(map(plan.fill, rows, out)):
                results.append(out)
            else:
                results.append(_attempt(self._transform_rows_checked, rows, prefix, found))
        return results

    def _fill_request(self, values: list[dict[str, Any]], prefix: str) -> np.ndarray:
        """One request's coerced rows: column-wise, or row by row when that fails (raising
        the error the row path raises for the first bad row)."""
        try:
            return self._fill_columns(values)
        except Exception:  # the row path below names it
            out = np.zeros((len(values), self.n_features_), dtype=np.float64)
            for i, row in enumerate(values):
                self._fill_values(row, out[i], f"{prefix}[{i}].")
            return out

    def _coerce_rows(
        self, rows: Sequence[Mapping[str, Any]], prefix: str, findings: list[Finding]
    ) -> list[dict[str, Any]]:
        """Each row's coerced values, with bools as category text and custom outputs added."""
        coerce = self._coercer.row
        booleans, custom = self._booleans, self.custom_
        out = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(f"{prefix}[{i}] is not an object")
            values, found = coerce(row, where=f"{prefix}[{i}].")
            if found:
                findings += found
            for name in booleans:
                values[name] = _BOOL_TEXT[values[name]]
            for feature in custom:
                values[feature.output] = feature.value([values[name] for name in feature.inputs])
            out.append(values)
        return out

    def _fill_columns(self, values: list[dict[str, Any]]) -> np.ndarray:
        """The rows' features, a column at a time (:func:`~keel.features.columnwise.fill`)."""
        return fill(self._fused, values, self.n_features_)

    def _transform_rows(
        self, rows: Sequence[Mapping[str, Any]], prefix: str, findings: list[Finding] | None
    ) -> np.ndarray:
        out = np.zeros((len(rows), self.n_features_), dtype=np.float64)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise DataValidationError(
                    f"{prefix}[{i}] must be an object of field: value.", field=f"{prefix}[{i}]"
                )
            self.fill_row(row, out[i], where=f"{prefix}[{i}].", findings=findings)
        return out

    def fill_row(
        self,
        row: Mapping[str, Any],
        out: np.ndarray,
        *,
        where: str = "",
        findings: list[Finding] | None = None,
    ) -> None:
        """Write one row's features into ``out`` (a zeroed float64 vector)."""
        if self._plan is not None and self._plan.fill(row, out):
            return
        values, found = self._coercer.row(row, where=where)
        if found and findings is not None:
            findings += found
        for name in self._booleans:
            values[name] = _BOOL_TEXT[values[name]]
        for feature in self.custom_:
            try:
                values[feature.output] = feature.value([values[name] for name in feature.inputs])
            except KeelErrors:
                raise
            except Exception as exc:
                raise _failed(feature, exc, where) from exc
        self._fill_values(values, out, where)

    def _fill_values(self, values: dict[str, Any], out: np.ndarray, where: str) -> None:
        """Write one coerced row's features (custom outputs included) into ``out``."""
        for chain in self.chains_:
            try:
                chain.fill(values, out)
            except DataValidationError as exc:
                raise _at(exc, where, chain.name) from exc


KeelErrors = (DataValidationError, ConfigError)


def _attempt(fn: Callable[..., np.ndarray], *args: Any, **kwargs: Any) -> np.ndarray | Exception:
    """``fn``'s result, or the exception it raised."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # returned: the caller answers each request on its own
        return exc


def _at(exc: DataValidationError, where: str, name: str) -> DataValidationError:
    """The error with the field it happened in, when the transform did not name one."""
    if exc.field is not None:
        return exc
    return DataValidationError(
        f"{where}{name}: {exc.message}", field=f"{where}{name}", details=exc.details
    )


def _failed(feature: CustomFeature, exc: Exception, where: str) -> DataValidationError:
    return DataValidationError(
        f"{where}{feature.output}: custom feature {feature.function} failed: "
        f"{type(exc).__name__}: {exc}",
        field=f"{where}{feature.output}",
    )


def _unique_names(names: list[str]) -> list[str]:
    """Names with repeats suffixed ``#2``, ``#3``... (two chains on one column)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out
