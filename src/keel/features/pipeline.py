"""FeaturePipeline: one fitted state, two paths (a table in batch, a dict per request).

The fitted pipeline is data: :meth:`FeaturePipeline.state` is JSON that travels inside the model
package, and :meth:`FeaturePipeline.from_state` rebuilds it in the server. ``transform`` works
column-wise on Arrow/NumPy; ``transform_row`` works on one request dict with no DataFrame. Both
apply the same float64 operations in the same order, so they agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import DataValidationError, NotFittedError

__all__ = ["FeaturePipeline"]

_NUMERIC = ("int", "float")
_TYPE_WORDS = {"int": "a number", "float": "a number", "string": "a string", "bool": "true/false"}


class FeaturePipeline:
    """Impute, standardize and one-hot encode the model's input columns.

    Args:
        inputs: Input column names and types (``int``, ``float``, ``string``, ``bool``) in order.
        numeric_impute: ``median``, ``mean`` or ``constant`` (0).
        categorical_impute: ``most_frequent`` or ``constant`` (the token ``__missing__``).
        scale: ``standard`` or ``none``.
        max_categories: Most frequent categories kept per column; the rest share an ``other`` slot.

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
    ) -> None:
        self.inputs = dict(inputs)
        self.numeric_impute = numeric_impute
        self.categorical_impute = categorical_impute
        self.scale = scale
        self.max_categories = max_categories

    # --- fitting -----------------------------------------------------------------------------

    def fit(self, table: pa.Table) -> FeaturePipeline:
        """Learn fill values, scales and category lists from ``table``; returns self."""
        self.numeric_: list[dict[str, Any]] = []
        self.categorical_: list[dict[str, Any]] = []
        index = 0
        for name, kind in self.inputs.items():
            if name not in table.column_names:
                raise DataValidationError(
                    f"cannot fit features: column '{name}' is missing.", field=name
                )
            column = table.column(name)
            if kind in _NUMERIC:
                self.numeric_.append({"name": name, "index": index, **self._fit_numeric(column)})
                index += 1
            else:
                spec = self._fit_categorical(column)
                self.categorical_.append({"name": name, "index": index, **spec})
                index += len(spec["categories"]) + int(spec["other"])
        self.n_features_ = index
        self._compile()
        return self

    def _fit_numeric(self, column: pa.ChunkedArray) -> dict[str, float]:
        values = column.drop_null().to_numpy().astype(np.float64)
        if self.numeric_impute == "median":
            fill = float(np.median(values)) if values.size else 0.0
        elif self.numeric_impute == "mean":
            fill = float(values.mean()) if values.size else 0.0
        else:
            fill = 0.0
        mean, scale = 0.0, 1.0
        if self.scale == "standard" and values.size:
            mean = float(values.mean())
            std = float(values.std())
            scale = std if std > 0 else 1.0
        return {"fill": fill, "mean": mean, "scale": scale}

    def _fit_categorical(self, column: pa.ChunkedArray) -> dict[str, Any]:
        text = column.cast(pa.string()).drop_null()
        counted = pc.value_counts(text)
        values = counted.field("values").to_pylist()
        counts = counted.field("counts").to_numpy()
        order = sorted(range(len(values)), key=lambda i: (-int(counts[i]), values[i]))
        ranked = [values[i] for i in order]
        kept = ranked[: self.max_categories]
        if self.categorical_impute == "most_frequent" and ranked:
            fill = ranked[0]
        else:
            fill = "__missing__"
        return {"fill": fill, "categories": kept, "other": len(ranked) > len(kept)}

    # --- state -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The fitted pipeline as JSON-able data."""
        self._check_fitted()
        return {
            "kind": "keel.FeaturePipeline",
            "version": 1,
            "params": {
                "inputs": self.inputs,
                "numeric_impute": self.numeric_impute,
                "categorical_impute": self.categorical_impute,
                "scale": self.scale,
                "max_categories": self.max_categories,
            },
            "numeric": self.numeric_,
            "categorical": self.categorical_,
            "n_features": self.n_features_,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FeaturePipeline:
        """Rebuild a fitted pipeline from :meth:`state`."""
        if state.get("kind") != "keel.FeaturePipeline" or state.get("version") != 1:
            raise DataValidationError("not a keel.FeaturePipeline v1 state; re-train the model.")
        pipe = cls(**state["params"])
        pipe.numeric_ = [dict(spec) for spec in state["numeric"]]
        pipe.categorical_ = [dict(spec) for spec in state["categorical"]]
        pipe.n_features_ = int(state["n_features"])
        pipe._compile()
        return pipe

    def feature_names(self) -> list[str]:
        """Output column names, e.g. ``age`` and ``sex=Male``."""
        self._check_fitted()
        names = [""] * self.n_features_
        for spec in self.numeric_:
            names[spec["index"]] = spec["name"]
        for spec in self.categorical_:
            for offset, value in enumerate(spec["categories"]):
                names[spec["index"] + offset] = f"{spec['name']}={value}"
            if spec["other"]:
                names[spec["index"] + len(spec["categories"])] = f"{spec['name']}=__other__"
        return names

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_"):
            raise NotFittedError("FeaturePipeline is not fitted; call fit(table) first.")

    def _compile(self) -> None:
        """Precompute per-column lookups the row path uses."""
        self._lookups = [
            {value: spec["index"] + i for i, value in enumerate(spec["categories"])}
            for spec in self.categorical_
        ]

    # --- batch path --------------------------------------------------------------------------

    def transform(self, table: pa.Table) -> np.ndarray:
        """Transform every row of ``table`` into a float64 matrix of shape (rows, n_features)."""
        self._check_fitted()
        rows = table.num_rows
        out = np.zeros((rows, self.n_features_), dtype=np.float64)
        for spec in self.numeric_:
            column = self._column(table, spec["name"])
            # unsafe: ints beyond 2**53 round to the nearest float64 as float() does in the row path
            as_float = column.cast(pa.float64(), safe=False)
            values = as_float.to_numpy(zero_copy_only=False).astype(np.float64)
            values = np.where(np.isnan(values), spec["fill"], values)
            out[:, spec["index"]] = (values - spec["mean"]) / spec["scale"]
        for spec in self.categorical_:
            text = pc.fill_null(self._column(table, spec["name"]).cast(pa.string()), spec["fill"])
            codes = pc.index_in(text, value_set=pa.array(spec["categories"], type=pa.string()))
            codes_np = codes.to_numpy(zero_copy_only=False)
            unseen = np.isnan(codes_np) if codes_np.dtype.kind == "f" else np.zeros(rows, bool)
            position = np.where(unseen, len(spec["categories"]), np.nan_to_num(codes_np)).astype(
                np.int64
            )
            keep = ~unseen | spec["other"]
            out[np.nonzero(keep)[0], spec["index"] + position[keep]] = 1.0
        return out

    @staticmethod
    def _column(table: pa.Table, name: str) -> pa.ChunkedArray:
        if name not in table.column_names:
            raise DataValidationError(f"column '{name}' is missing from the input.", field=name)
        return table.column(name)

    # --- row path ----------------------------------------------------------------------------

    def transform_row(self, row: Mapping[str, Any], *, where: str = "") -> np.ndarray:
        """Check one request row against the inputs and transform it: shape (1, n_features).

        Args:
            row: Field name -> JSON value (number, string, bool or null).
            where: Prefix for error fields, e.g. ``instances[3].``.

        Raises:
            DataValidationError: A field is missing, unknown or of the wrong type (names it).
        """
        self._check_fitted()
        out = np.zeros((1, self.n_features_), dtype=np.float64)
        self.fill_row(row, out[0], where=where)
        return out

    def transform_rows(
        self, rows: Sequence[Mapping[str, Any]], *, prefix: str = "instances"
    ) -> np.ndarray:
        """Check and transform a few request rows (the online path for small batches)."""
        self._check_fitted()
        out = np.zeros((len(rows), self.n_features_), dtype=np.float64)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise DataValidationError(
                    f"{prefix}[{i}] must be an object of field: value.", field=f"{prefix}[{i}]"
                )
            self.fill_row(row, out[i], where=f"{prefix}[{i}].")
        return out

    def fill_row(self, row: Mapping[str, Any], out: np.ndarray, *, where: str = "") -> None:
        """Write one row's features into ``out`` (a zeroed float64 vector)."""
        matched = 0
        for spec in self.numeric_:
            name = spec["name"]
            if name in row:
                matched += 1
                value = row[name]
                if value is None or (type(value) is float and value != value):
                    value = spec["fill"]  # NaN is missing, as in the batch path
                elif type(value) not in (int, float):
                    self._type_error(where, name, value)
            else:
                self._missing(where, name)
            out[spec["index"]] = (float(value) - spec["mean"]) / spec["scale"]
        for spec, lookup in zip(self.categorical_, self._lookups, strict=True):
            name = spec["name"]
            if name in row:
                matched += 1
                value = row[name]
                if value is None:
                    value = spec["fill"]
                elif type(value) is not str:
                    value = self._as_category(where, name, value)
            else:
                self._missing(where, name)
            position = lookup.get(value)
            if position is not None:
                out[position] = 1.0
            elif spec["other"]:
                out[spec["index"] + len(spec["categories"])] = 1.0
        if matched != len(row):
            unknown = sorted(set(row) - set(self.inputs))
            raise DataValidationError(
                f"{where}{unknown[0]}: unknown field. Expected fields: {', '.join(self.inputs)}.",
                field=f"{where}{unknown[0]}",
            )

    def _as_category(self, where: str, name: str, value: Any) -> str:
        if self.inputs[name] == "bool" and type(value) is bool:
            return "true" if value else "false"
        self._type_error(where, name, value)
        raise AssertionError  # unreachable: _type_error raises

    def _type_error(self, where: str, name: str, value: Any) -> None:
        expected = self.inputs[name]
        got = type(value).__name__ if value is not None else "null"
        raise DataValidationError(
            f"{where}{name}: expected {_TYPE_WORDS[expected]} ({expected}), got {got} {value!r}.",
            field=f"{where}{name}",
            details={"expected": expected, "got": got},
        )

    def _missing(self, where: str, name: str) -> None:
        expected = self.inputs[name]
        raise DataValidationError(
            f"{where}{name}: missing field; expected {_TYPE_WORDS[expected]} ({expected}) or null.",
            field=f"{where}{name}",
            details={"expected": expected},
        )
