"""Finding served requests in the prediction log, for lineage: by request id or by version.

The log is JSON Lines under ``<dir>/<model>/<day>/`` until ``keel monitor compact`` rewrites a
closed day as Parquet parts (:mod:`keel.monitor.logfiles`); both are searched, each request
once. In JSON Lines a request id is searched for as bytes before a line is parsed, so scanning
a day of traffic parses only the lines that match; in Parquet by a filter on its column.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from keel.monitor.logfiles import Part, read_records
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
        for model, part in self._parts("*"):
            table = _read_part(part, ["request_id", "time", "pipeline"])
            if table is None:
                continue
            import pyarrow.compute as pc

            rows = table.filter(pc.equal(table["request_id"], request_id))
            if rows.num_rows:
                pipeline = rows["pipeline"][0].as_py() if "pipeline" in rows.column_names else None
                return PredictionRecord(
                    request_id=request_id,
                    model=model,
                    version=int(part.version),
                    time=float(rows["time"][0].as_py()),
                    rows=rows.num_rows,  # one row per instance
                    pipeline=pipeline,
                    role=part.role,
                )
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
        for _, part in self._parts(model):
            if part.version != str(version):
                continue
            table = _read_part(part, ["request_id"])
            if table is None:
                continue
            import pyarrow.compute as pc

            ids = pc.unique(table["request_id"]).to_pylist()  # one row per instance
            count += len(ids)
            found.extend(str(i) for i in ids[: max(0, limit - len(found))])
        return count, found

    def _files(self, model: str) -> Iterator[Path]:
        """JSON Lines files not yet replaced by a completed compaction."""
        if not self.directory.is_dir():
            return
        records = {root: read_records(root) for root in self._roots(model)}
        for path in sorted(self.directory.glob(f"{model}/*/*.jsonl")):
            done = records.get(path.parent.parent, {}).get((path.parent.name, path.stem))
            if done is None or not done.covers(path):
                yield path

    def _parts(self, model: str) -> Iterator[tuple[str, Part]]:
        """(model name, part) of every completed compaction."""
        for root in self._roots(model):
            for record in read_records(root).values():
                for part in record.parts:
                    yield root.name, part

    def _roots(self, model: str) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.glob(model) if p.is_dir())


def _read_part(part: Part, columns: list[str]) -> Any:
    """The columns of a compacted part that it has, or None when it is gone."""
    import pyarrow.parquet as pq

    try:
        present = set(pq.read_schema(part.path).names)
        return pq.read_table(part.path, columns=[c for c in columns if c in present])
    except FileNotFoundError:  # removed by retention after its record was read
        return None


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
