"""A monitored Adult model without training one: the training statistics, the inputs' types,
and prediction logs written in the serving log's format."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from keel.monitor.report import ModelReference
from keel.validate.coerce import Coercer

DAY = 86_400.0
T0 = 1_700_006_400.0  # 2023-11-15T00:00:00Z, a day boundary


@pytest.fixture(scope="session")
def adult_reference(adult_statistics: dict[str, Any], adult_train_table: pa.Table) -> Any:
    inputs = {
        f.name: "int" if pa.types.is_integer(f.type) else "string"
        for f in adult_train_table.schema
        if f.name != "income"
    }
    return ModelReference(
        name="adult",
        version="1",
        task="binary",
        classes=("<=50K", ">50K"),
        inputs=inputs,
        statistics=adult_statistics,
        coercer=Coercer.from_types(inputs),
        target="income",
    )


@pytest.fixture(scope="session")
def adult_rows(adult_test_table: pa.Table) -> list[dict[str, Any]]:
    return adult_test_table.drop_columns(["income"]).to_pylist()  # type: ignore[no-any-return]


Writer = Callable[..., Path]


@pytest.fixture
def write_log(tmp_path: Path) -> Writer:
    """Write rows as logged requests of ``per_request`` rows, starting at ``start``, ``gap``
    seconds apart, to one file of the day they fall in."""

    def write(
        rows: Sequence[dict[str, Any]],
        *,
        start: float = T0,
        gap: float = 1.0,
        per_request: int = 10,
        version: str = "1",
        role: str | None = "primary",
        probabilities: np.ndarray | None = None,
        name: str = "1-test.jsonl",
        model: str = "adult",
    ) -> Path:
        import time

        scores = probabilities
        if scores is None:
            scores = np.random.default_rng(0).random(len(rows))
        for index, offset in enumerate(range(0, len(rows), per_request)):
            at = start + index * gap
            chunk = list(rows[offset : offset + per_request])
            record: dict[str, Any] = {
                "request_id": f"r{offset}",
                "time": at,
                "model": model,
                "model_version": version,
                "inputs": chunk,
                "predictions": [
                    ">50K" if p >= 0.5 else "<=50K" for p in scores[offset : offset + len(chunk)]
                ],
                "probabilities": scores[offset : offset + len(chunk)].tolist(),
            }
            if role is not None:
                record["role"] = role
            day = time.strftime("%Y-%m-%d", time.gmtime(at))
            folder = tmp_path / "predictions" / model / day
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / name).open("ab") as handle:
                handle.write(orjson.dumps(record) + b"\n")
        return tmp_path / "predictions"

    return write
