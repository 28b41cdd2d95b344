"""The prediction log: every served prediction appended to JSON Lines without blocking a request.

The request path encodes one line per request with orjson (a few microseconds; one bytes
object, never a newline inside) and appends it to a bounded deque. A background thread joins
the queued lines and writes them every ``interval`` seconds to
``<dir>/<model>/<YYYY-MM-DD>/<pid>-<start>.jsonl``; the write itself releases the GIL, so the
writer never holds up requests for long. Each file has one writer, so lines never interleave; a
crash loses at most the last interval and can tear only the last line, which readers skip.

The log cannot hurt serving: the queue holds at most ``max_queue`` requests (beyond it a new
one is dropped and counted in :attr:`PredictionLog.dropped`); a write error does not stop the
writer: the batch it held is dropped and counted, :attr:`PredictionLog.problem` says why (the
server's readiness reports it as degraded) and the next interval tries again, clearing the
problem once a write succeeds. Each record carries the request id, model version, deployment
role and the feature pipeline's hash.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
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
        max_queue: Most requests queued for the writer; beyond it new ones are dropped.
        writer: Writes one file's lines (path, joined bytes); the default appends to the file.
            Tests inject a failing one.
    """

    def __init__(
        self,
        directory: Path,
        *,
        interval: float = 0.5,
        max_queue: int = 100_000,
        writer: Callable[[Path, bytes], None] | None = None,
    ) -> None:
        self.directory = directory
        self.interval = interval
        self.max_queue = max_queue
        self.writer = writer or _append
        self.dropped = 0  # requests never written: queue full, or their write failed
        self.problem: str | None = None  # why the last write failed; None once writes succeed
        self._queue: deque[tuple[str, int, bytes]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")

    @property
    def queued(self) -> int:
        """Requests waiting for the writer."""
        return len(self._queue)

    def append(
        self,
        request_id: str,
        model: str,
        version: str,
        inputs: Sequence[Any],
        predictions: Sequence[Any],
        probabilities: Sequence[Any] | None,
        *,
        role: str = "primary",
        pipeline_hash: str = "",
    ) -> None:
        """Encode one request's predictions and queue the line (called on the request path).

        A full queue drops the request (counted in :attr:`dropped`) instead of growing.
        """
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        now = time.time()
        line = orjson.dumps(
            {
                "request_id": request_id,
                "time": now,
                "model": model,
                "model_version": version,
                "role": role,
                "feature_pipeline": pipeline_hash,
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
        """Write everything queued so far; returns the number of requests written.

        A failed write drops that file's lines (counted) and records :attr:`problem`; it never
        raises, so the writer thread lives on and retries at the next interval.
        """
        files: dict[tuple[str, int], list[bytes]] = {}
        queue = self._queue
        for _ in range(len(queue)):
            model, day, line = queue.popleft()
            files.setdefault((model, day), []).append(line)
        written, failed = 0, False
        for (model, day), lines in files.items():
            stamp = datetime.fromtimestamp(day * _DAY, UTC).strftime("%Y-%m-%d")
            path = self.directory / model / stamp / f"{os.getpid()}-{self._started}.jsonl"
            lines.append(b"")
            try:
                self.writer(path, b"\n".join(lines))
            except OSError as exc:
                self.dropped += len(lines) - 1
                self.problem = f"prediction log write to {path.parent} failed: {exc}"
                failed = True
                continue
            written += len(lines) - 1
        if written and not failed:
            self.problem = None  # every file of this flush was written: the disk recovered
        return written


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        handle.write(data)


def read_prediction_log(
    directory: Path, model: str, *, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Logged predictions for a model, one record per row, oldest file first.

    Each record has ``request_id``, ``time``, ``model``, ``model_version``, ``role``
    (``primary``), ``feature_pipeline`` (its hash), ``inputs`` (the row), ``prediction`` and
    ``probability``. A torn last line (a crash mid-write) is skipped.
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
                        "role": request.get("role", "primary"),
                        "feature_pipeline": request.get("feature_pipeline", ""),
                        "inputs": row,
                        "prediction": prediction,
                        "probability": probability,
                    }
                    count += 1
                    if limit is not None and count >= limit:
                        return
