"""A chain: the transforms one column (or one cross of columns) goes through, in order.

The pipeline is a list of chains side by side; each chain writes its columns at its offset of
the output. A chain's steps are 1 -> 1 transforms followed by at most one encoder (which writes
several columns); an ``impute`` step with ``indicator: true`` also writes a 0/1 column.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keel.features.numeric import Impute
from keel.features.transform import Transform

__all__ = ["Chain"]

_NAN = float("nan")  # the canonical NaN (0x7ff8...) both paths write for a missing number


class Chain:
    """Steps applied to ``columns`` (one column, or several crossed by the first step).

    Args:
        name: Output name stem: the column, a custom feature's output, or ``a*b`` for a cross.
        columns: Input names the first step reads.
        steps: The transforms, in order.
        entry: Index of the ``features.transforms`` entry it came from (None: a default chain).
    """

    def __init__(
        self, name: str, columns: list[str], steps: list[Transform], entry: int | None
    ) -> None:
        self.name = name
        self.columns = columns
        self.steps = steps
        self.entry = entry

    @property
    def encoder(self) -> Transform | None:
        """The last step when it writes several columns (``matrix``), else None."""
        last = self.steps[-1]
        return last if last.output_kind("category") == "matrix" else None

    def _input(self, values: dict[str, Any]) -> Any:
        if len(self.columns) == 1:
            return values[self.columns[0]]
        return [values[name] for name in self.columns]

    def fit(self, columns: dict[str, Any], y: np.ndarray | None) -> None:
        """Fit each step on the previous step's output (out-of-fold for target encoders)."""
        column = self._input(columns)
        for i, step in enumerate(self.steps):
            step.fit(column, y)
            if i < len(self.steps) - 1:
                column = _apply(step, column, y)

    def place(self, offset: int) -> int:
        """Lay out this chain's columns from ``offset``; returns the next free offset."""
        self.offset = offset
        encoder = self.encoder
        self.names = encoder.output_names(self.name) if encoder is not None else [self.name]
        position = offset + len(self.names)
        self.indicators: list[int] = []
        for step in self.steps:
            if isinstance(step, Impute) and step.indicator:
                self.indicators.append(position)
                self.names.append(f"{self.name}:missing")
                position += 1
            else:
                self.indicators.append(-1)
        self.width = position - offset
        # both paths: (step, indicator position) pairs up to the encoder, then the encoder
        head = self.steps[:-1] if encoder is not None else self.steps
        self._row_steps = list(zip(head, self.indicators, strict=False))
        self._encoder = encoder
        return position

    def transform(self, columns: dict[str, Any], out: np.ndarray, y: np.ndarray | None) -> None:
        """Batch path: write this chain's columns of every row into ``out``."""
        column = self._input(columns)
        for step, indicator in self._row_steps:
            if indicator >= 0:
                out[:, indicator] = step.missing(column)  # type: ignore[attr-defined]
            column = _apply(step, column, y)
        if self._encoder is not None:
            self._encoder.write(column, out, self.offset)
        else:
            written = out[:, self.offset]
            written[:] = column
            written[np.isnan(written)] = np.nan  # one NaN bit pattern, whatever made it

    def fill(self, values: dict[str, Any], out: np.ndarray) -> None:
        """Row path: write this chain's columns for one row into ``out`` (a zeroed vector)."""
        value = self._input(values)
        for step, indicator in self._row_steps:
            if indicator >= 0:
                out[indicator] = 1.0 if value is None or value != value else 0.0
            value = step.transform_value(value)
        if self._encoder is not None:
            self._encoder.write_value(value, out, self.offset)
        else:
            out[self.offset] = value if value == value else _NAN

    def state(self) -> dict[str, Any]:
        """The chain as JSON-able data."""
        return {
            "name": self.name,
            "columns": self.columns,
            "entry": self.entry,
            "steps": [step.state() for step in self.steps],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Chain:
        """Rebuild a fitted chain from :meth:`state` (call :meth:`place` after)."""
        steps = [Transform.from_state(step) for step in state["steps"]]
        return cls(state["name"], list(state["columns"]), steps, state.get("entry"))


def _apply(step: Transform, column: Any, y: np.ndarray | None) -> Any:
    """A step's batch output; with ``y`` (the training matrix) target encoders go out-of-fold."""
    if y is not None and step.needs_target:
        return step.transform_oof(column, y)  # type: ignore[attr-defined]
    return step.transform(column)
