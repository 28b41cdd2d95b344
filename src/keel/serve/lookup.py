"""Finding served requests in the prediction log, for lineage: by request id or by version.

The log is JSON Lines under ``<dir>/<model>/<day>/``; a request id is searched for as bytes
before a line is parsed, so scanning a day of traffic parses only the lines that match.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from keel.registry.lineage import PredictionRecord

__all__ = ["LoggedPredictions"]


class LoggedPredictions:
    """The prediction log under ``directory`` as a lineage :class:`PredictionSource`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def find(self, request_id: str) -> PredictionRecord | None:
        """The logged request with this id, or None."""
        needle = b'"request_id":' + orjson.dumps(request_id)
        for path in self._files("*"):
            with path.open("rb") as handle:
                for line in handle:
                    if needle in line:
                        request = _parse(line)
                        if request is not None and request.get("request_id") == request_id:
                            return _record(request)
        return None

    def of_version(self, model: str, version: int, limit: int) -> tuple[int, list[str]]:
        """How many logged requests ``model@version`` answered, and the first ``limit`` ids."""
        needles = (b'"model_version":' + orjson.dumps(version),
                   b'"model_version":' + orjson.dumps(str(version)))  # fmt: skip
        count, found = 0, list[str]()
        for path in self._files(model):
            with path.open("rb") as handle:
                for line in handle:
                    if not any(needle in line for needle in needles):
                        continue
                    request = _parse(line)
                    if request is None or str(request.get("model_version")) != str(version):
                        continue
                    count += 1
                    if len(found) < limit:
                        found.append(str(request["request_id"]))
        return count, found

    def _files(self, model: str) -> Iterator[Path]:
        if not self.directory.is_dir():
            return iter(())
        return iter(sorted(self.directory.glob(f"{model}/*/*.jsonl")))


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:  # a torn last line after a crash
        return None
    return value if isinstance(value, dict) else None


def _record(request: dict[str, Any]) -> PredictionRecord:
    return PredictionRecord(
        request_id=str(request["request_id"]),
        model=str(request["model"]),
        version=int(request["model_version"]),
        time=float(request["time"]),
        rows=len(request.get("inputs") or []),
        pipeline=request.get("pipeline"),
        role=request.get("role"),
    )
