"""The prediction log: every served prediction appended to JSON Lines without blocking a request.

The request path encodes one line per request with orjson (a few microseconds; never a newline
inside but its last) and queues a server's batch of requests as one chunk of lines
(:meth:`PredictionLog.append_many`), in a list per file. A background thread takes those lists
every ``interval`` seconds in one swap and writes them to
``<dir>/<model>/<YYYY-MM-DD>/<pid>-<start>.jsonl`` with ``os.writev`` (no join, no copy): it
does no work per request or chunk while holding the GIL, so it never stalls the event loop.
(It used to pop the queued lines one by one, ~10,000 a flush at 64 connections: milliseconds
with the GIL every half second, which doubled the server's p99 at 64 connections.) Each file
has one writer, so lines never interleave; a crash loses at most the last interval and can tear
only the last line, which readers skip.

The log cannot hurt serving: the queue holds at most ``max_queue`` requests (beyond it a new
one is dropped and counted in :attr:`PredictionLog.dropped`); a write error does not stop the
writer: the batch it held is dropped and counted, :attr:`PredictionLog.problem` says why (the
server's readiness reports it as degraded) and the next interval tries again, clearing the
problem once a write succeeds. Each record carries the request id, model version, deployment
role and the feature pipeline's hash.

Personal data is never written in clear: the inputs of columns whose schema role is ``pii``
(or that ``schema.yaml`` marks ``pii: true``) are replaced by their keyed hash (HMAC-SHA256,
hex, with the project secret ``.keel/secret.key``; equal values stay joinable, the secret never
leaves that file) or dropped (``serve.log_pii``). A record whose inputs were hashed lists the
columns under ``hashed``, for readers such as monitoring, which hashes the training categories
with the same key (:mod:`keel.monitor.hashed`; the key and hash live in :mod:`keel.store.secrets`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from keel.errors import ConfigError
from keel.store.secrets import SECRET_FILE, keyed_hash, project_secret

__all__ = [
    "FLUSH_S",
    "SECRET_FILE",
    "PiiPolicy",
    "PredictionLog",
    "pii_policy",
    "project_secret",
    "read_prediction_log",
]

_DAY = 86_400
FLUSH_S = 0.05
"""Seconds between the writer's flushes. Small writes often: a flush's write takes the
server's core while the kernel copies (pinned to one core, the event loop waits), and at 64
connections a flush of half a second's lines (~6 MB) every 0.5 s set the p99: 6.3-8.7 ms
against 4.9-5.8 ms with 0.05 s (``benchmarks/serving/keel_bare.py``-style servers, 4
alternating rounds of 5 s, 2026-12-05 15:23 UTC). A crash loses at most this long."""


@dataclass(frozen=True)
class PiiPolicy:
    """What the log does with personal data columns.

    Attributes:
        columns: The input columns holding personal data.
        mode: ``hash`` (HMAC-SHA256 hex with ``key``) or ``drop``.
        key: The project secret (never shown: left out of ``repr``).
    """

    columns: frozenset[str]
    mode: Literal["hash", "drop"] = "hash"
    key: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if self.mode == "hash" and len(self.key) < 16:
            raise ConfigError("a pii hash key must hold at least 16 bytes.", field="log_pii")

    def hash(self, value: Any) -> Any:
        """A value's keyed hash (hex); null stays null. Text as is, other values as JSON."""
        return keyed_hash(self.key, value)

    def masked(self, rows: Sequence[Any]) -> tuple[list[Any], list[str]]:
        """The rows with personal data hashed or dropped, and the columns hashed."""
        found = sorted({c for row in rows if isinstance(row, dict) for c in row} & self.columns)
        if not found:
            return list(rows), []
        out: list[Any] = []
        for row in rows:
            if not isinstance(row, dict):
                out.append(row)
                continue
            row = dict(row)
            for column in found:
                if column in row:
                    if self.mode == "drop":
                        del row[column]
                    else:
                        row[column] = self.hash(row[column])
            out.append(row)
        return out, (found if self.mode == "hash" else [])


def pii_policy(project: Any, mode: Literal["hash", "drop"] = "hash") -> PiiPolicy | None:
    """The policy for a project's personal data columns from its ``schema.yaml``.

    None when there is no schema or no such column (nothing to hide, no secret created).
    """
    from keel.validate.schema import read_schema

    path = project.root / "schema.yaml"
    if not path.exists():
        return None
    schema = read_schema(path)
    columns = frozenset(
        name for name, col in schema.columns.items() if col.role == "pii" or col.pii is True
    )
    if not columns:
        return None
    key = project_secret(project.state_dir) if mode == "hash" else b""
    return PiiPolicy(columns, mode, key)


class PredictionLog:
    """Append-only, batched writer of served predictions.

    Args:
        directory: Root of the log (``.keel/predictions``).
        interval: Seconds between flushes.
        max_queue: Most requests queued for the writer; beyond it new ones are dropped.
        writer: Writes one file's lines (path, chunks of whole lines, in order); the default
            appends them to the file. Tests inject a failing one.
        pii: Personal data columns to hash or drop; None: none.
    """

    def __init__(
        self,
        directory: Path,
        *,
        interval: float = FLUSH_S,
        max_queue: int = 100_000,
        writer: Callable[[Path, Sequence[bytes]], None] | None = None,
        pii: PiiPolicy | None = None,
    ) -> None:
        self.directory = directory
        self.pii = pii
        self.interval = interval
        self.max_queue = max_queue
        self.writer = writer or _append
        self.dropped = 0  # requests never written: queue full, or their write failed
        self.problem: str | None = None  # why the last write failed; None once writes succeed
        # (model, day) -> [requests, chunks of their lines]: the writer swaps the whole dict
        self._files: dict[tuple[str, int], list[Any]] = {}
        self._queued = 0  # requests in _files, and reserved by an append in progress
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")

    @property
    def queued(self) -> int:
        """Requests waiting for the writer."""
        return self._queued

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
    ) -> bool:
        """Encode one request's predictions and queue the line (called on the request path).

        A full queue drops the request (counted in :attr:`dropped`) instead of growing; the
        answer says whether the line was queued.
        """
        return not self.append_many(
            model,
            version,
            [(request_id, inputs, predictions, probabilities)],
            role=role,
            pipeline_hash=pipeline_hash,
        )

    def append_many(
        self,
        model: str,
        version: str,
        requests: Sequence[tuple[str, Sequence[Any], Sequence[Any], Sequence[Any] | None]],
        *,
        role: str = "primary",
        pipeline_hash: str = "",
    ) -> int:
        """:meth:`append` for a batch's requests of one model version, in order: each
        ``(request_id, inputs, predictions, probabilities)`` its own line, as :meth:`append`
        writes it. Returns how many were dropped (the queue was full)."""
        pii, dumps, clock = self.pii, orjson.dumps, time.time
        with self._lock:  # room reserved first: the queue never holds more than max_queue
            taken = max(0, min(len(requests), self.max_queue - self._queued))
            self._queued += taken
        dropped = len(requests) - taken
        chunks: list[tuple[int, int, bytes]] = []  # (day, requests, lines)
        lines: list[bytes] = []
        day = -1
        for request_id, inputs, predictions, probabilities in requests[:taken]:
            now = clock()
            record = {
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
            if pii is not None:
                record["inputs"], hashed = pii.masked(inputs)
                if hashed:
                    record["hashed"] = hashed
            today = int(now // _DAY)
            if today != day and lines:  # a batch across midnight: a chunk per day's file
                chunks.append((day, len(lines), _chunk(lines)))
                lines = []
            day = today
            lines.append(dumps(record))
        if lines:
            chunks.append((day, len(lines), _chunk(lines)))
        if chunks:
            with self._lock:
                for today, count, chunk in chunks:
                    entry = self._files.get((model, today))
                    if entry is None:
                        entry = self._files[(model, today)] = [0, []]
                    entry[0] += count
                    entry[1].append(chunk)
        self.dropped += dropped
        return dropped

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
        with self._lock:  # O(1) under the lock and the GIL: the appends go on at once
            files, self._files = self._files, {}
            self._queued -= sum(entry[0] for entry in files.values())
        written, failed = 0, False
        for (model, day), (count, chunks) in files.items():
            stamp = datetime.fromtimestamp(day * _DAY, UTC).strftime("%Y-%m-%d")
            path = self.directory / model / stamp / f"{os.getpid()}-{self._started}.jsonl"
            try:
                self.writer(path, chunks)  # each chunk ends in its newline
            except OSError as exc:
                self.dropped += count
                self.problem = f"prediction log write to {path.parent} failed: {exc}"
                failed = True
                continue
            written += count
        if written and not failed:
            self.problem = None  # every file of this flush was written: the disk recovered
        return written


def _chunk(lines: list[bytes]) -> bytes:
    """Lines joined, each ending in its newline: one copy, of the chunk's own size (orjson
    hands back its whole working buffer, 8 KB for a 0.6 KB line, freed with ``lines``)."""
    lines.append(b"")
    return b"\n".join(lines)


_IOV_MAX = 1024  # buffers one writev takes at most (Linux's IOV_MAX)


def _append(path: Path, chunks: Sequence[bytes]) -> None:
    """Append ``chunks`` to ``path`` with ``writev``: no join, and the GIL released while the
    kernel copies (short writes resumed where they stopped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # as open(): umask
    try:
        for start in range(0, len(chunks), _IOV_MAX):
            group: list[bytes | memoryview] = list(chunks[start : start + _IOV_MAX])
            at = 0
            while at < len(group):
                done = os.writev(fd, group[at:] if at else group)
                while at < len(group) and done >= len(group[at]):
                    done -= len(group[at])
                    at += 1
                if done:  # a short write stopped inside this chunk
                    group[at] = memoryview(group[at])[done:]
    finally:
        os.close(fd)


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
