"""The prediction log: every served prediction appended to JSON Lines without blocking a request.

The request path encodes one line per request with orjson (a few microseconds; one bytes
object, never a newline inside) and appends it to a deque. A background thread joins the queued
lines and writes them every ``interval`` seconds to
``<dir>/<model>/<YYYY-MM-DD>/<pid>-<start>.jsonl``; the write itself releases the GIL, so the
writer never holds up requests for long. Each file has one writer, so lines never interleave; a
crash loses at most the last interval and can tear only the last line, which readers skip.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["PredictionLog", "read_prediction_log"]

_DAY = 86_400


class PredictionLog:
    """Append-only, batched writer of served predictions.

    Args:
        directory: Root of the log (``.keel/predictions``).
        interval: Seconds between flushes.
    """

    def __init__(self, directory: Path, *, interval: float = 0.5) -> None:
        self.directory = directory
        self.interval = interval
        self._queue: deque[tuple[str, int, bytes]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")

    def append(
        self,
        request_id: str,
        model: str,
        version: str,
        inputs: Sequence[Any],
        predictions: Sequence[Any],
        probabilities: Sequence[Any] | None,
    ) -> None:
        """Encode one request's predictions and queue the line (called on the request path)."""
        now = time.time()
        line = orjson.dumps(
            {
                "request_id": request_id,
                "time": now,
                "model": model,
                "model_version": version,
                "inputs": inputs,
                "predictions": predictions,
                "probabilities": probabilities,
            }
        )
        self._queue.append((model, int(now // _DAY), line))

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
        """Write everything queued so far; returns the number of requests written."""
        files: dict[tuple[str, int], list[bytes]] = {}
        queue = self._queue
        for _ in range(len(queue)):
            model, day, line = queue.popleft()
            files.setdefault((model, day), []).append(line)
        for (model, day), lines in files.items():
            stamp = datetime.fromtimestamp(day * _DAY, UTC).strftime("%Y-%m-%d")
            path = self.directory / model / stamp / f"{os.getpid()}-{self._started}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines.append(b"")
            with path.open("ab") as handle:
                handle.write(b"\n".join(lines))
        return sum(len(lines) - 1 for lines in files.values())


def read_prediction_log(
    directory: Path, model: str, *, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Logged predictions for a model, one record per row, oldest file first.

    Each record has ``request_id``, ``time``, ``model``, ``model_version``, ``inputs`` (the
    row), ``prediction`` and ``probability``. A torn last line (a crash mid-write) is skipped.
    """
    root = directory / model
    if not root.exists():
        return
    count = 0
    for path in sorted(root.glob("*/*.jsonl")):
        with path.open("rb") as handle:
            for line in handle:
                try:
                    request = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                # regression answers carry no probabilities
                probabilities = request.get("probabilities") or [None] * len(request["inputs"])
                rows = zip(request["inputs"], request["predictions"], probabilities, strict=True)
                for row, prediction, probability in rows:
                    yield {
                        "request_id": request["request_id"],
                        "time": request["time"],
                        "model": request["model"],
                        "model_version": request["model_version"],
                        "inputs": row,
                        "prediction": prediction,
                        "probability": probability,
                    }
                    count += 1
                    if limit is not None and count >= limit:
                        return
