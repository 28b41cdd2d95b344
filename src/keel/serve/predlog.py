"""The prediction log: every served prediction appended to JSON Lines without blocking a request.

The request path only appends a tuple to a deque (thread-safe, O(1)); a background thread
serialises and writes batches every ``interval`` seconds to
``<dir>/<model>/<YYYY-MM-DD>/<pid>-<start>.jsonl``. Each file has a single writer, so lines are
never interleaved; a crash loses at most the last interval, never corrupts earlier lines.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["PredictionLog", "read_prediction_log"]

Record = tuple[str, float, str, str, list[Any], list[str], list[float]]


class PredictionLog:
    """Append-only, batched writer of served predictions.

    Args:
        directory: Root of the log (``.keel/predictions``).
        interval: Seconds between flushes.
    """

    def __init__(self, directory: Path, *, interval: float = 0.5) -> None:
        self.directory = directory
        self.interval = interval
        self._queue: deque[Record] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")

    def append(
        self,
        request_id: str,
        model: str,
        version: str,
        inputs: list[Any],
        predictions: list[str],
        probabilities: list[float],
    ) -> None:
        """Queue one request's predictions (called on the request path; never blocks)."""
        self._queue.append(
            (request_id, time.time(), model, version, inputs, predictions, probabilities)
        )

    def start(self) -> None:
        """Start the background writer."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="keel-prediction-log", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the writer after flushing what is queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def flush(self) -> int:
        """Write everything queued so far; returns the number of rows written."""
        files: dict[Path, list[bytes]] = {}
        written = 0
        while self._queue:
            request_id, at, model, version, inputs, predictions, probabilities = (
                self._queue.popleft()
            )
            day = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")
            path = self.directory / model / day / f"{os.getpid()}-{self._started}.jsonl"
            lines = files.setdefault(path, [])
            for i, row in enumerate(inputs):
                lines.append(
                    orjson.dumps(
                        {
                            "request_id": request_id,
                            "time": at,
                            "model": model,
                            "model_version": version,
                            "inputs": row,
                            "prediction": predictions[i],
                            "probability": probabilities[i],
                        }
                    )
                )
                written += 1
        for path, lines in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as handle:
                handle.write(b"\n".join(lines) + b"\n")
        return written


def read_prediction_log(
    directory: Path, model: str, *, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Logged predictions for a model, oldest file first; a torn last line is skipped."""
    root = directory / model
    if not root.exists():
        return
    count = 0
    for path in sorted(root.glob("*/*.jsonl")):
        with path.open("rb") as handle:
            for line in handle:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                yield record
                count += 1
                if limit is not None and count >= limit:
                    return
