"""The lean HTTP path (:mod:`keel.serve.exchange`) answers byte for byte as the ASGI path.

Two in-process servers on 127.0.0.1 with Keel's HTTP protocol, auth on, small limits: one
with the lean path, one with it switched off (``lean = False`` on the protocol class). The
same raw requests go to each over real sockets; the raw answers (the date and generated
request ids masked), whether the connection was closed after them, the ``/metrics`` request
counts and the access log lines must be equal.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from keel.project import Project
from keel.serve.app import ServerApp, create_app
from keel.serve.auth import Authenticator
from keel.store.tokens import create_token, verify_token
from tests.serve.conftest import ROW, copy_project
from tests.serve.test_inline import keel_server

PREDICT = b"/v1/models/adult/predict"
INFER_BODY = orjson.dumps(
    {
        "inputs": [
            {
                "name": k,
                "shape": [1],
                "datatype": "BYTES" if isinstance(v, str) else "INT64",
                "data": [v],
            }
            for k, v in ROW.items()
        ]
    }
)
ONE = orjson.dumps({"instances": [ROW]})


@dataclass
class Server:
    app: ServerApp
    port: int
    lean_calls: list[str]


@dataclass(frozen=True)
class Setup:
    root: Path
    secrets: dict[str, str]


@pytest.fixture(scope="module")
def setup(adult_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = copy_project(
        adult_project, tmp_path_factory.mktemp("lean") / "adult",
        serve="  max_body_mb: 0.01\n  max_instances: 3\n",
    )  # fmt: skip
    secrets = {}
    with Project(root) as project:
        db = project.metadata.database
        for name, scopes in (("scorer", ["predict"]), ("reader", ["read"])):
            _, secrets[name] = create_token(db, name, scopes, created_by="test")
    return Setup(root, secrets)


@contextmanager
def serving(setup: Setup, *, lean: bool, **settings: Any) -> Iterator[Server]:
    """The project's server with the lean path on or off, in a thread on 127.0.0.1."""
    with Project(setup.root) as project:
        database = project.metadata.database
        app = create_app(
            project, reload=False, auth=Authenticator(lambda s: verify_token(database, s))
        )
        # the measured bound decides inline scoring, not this shared machine's load
        app.settings = replace(app.settings, **{"inline_max_us": 5000.0, **settings})
        calls: list[str] = []
        start = app.exchange.start

        def counted(route: Any, request: Any, *args: Any) -> None:
            calls.append(request.path)
            start(route, request, *args)

        app.exchange.start = counted  # type: ignore[method-assign]
        with keel_server(app, lean=lean) as url:
            yield Server(app, int(url.rsplit(":", 1)[1]), calls)


@contextmanager
def gated(app: ServerApp) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The app's batches wait in their thread: (set when one waits, set to let it go)."""
    assert app._batcher is not None
    entered, gate = threading.Event(), threading.Event()
    run = app._batcher.run

    def held(*args: Any) -> Any:
        entered.set()
        assert gate.wait(30)
        return run(*args)

    app._batcher.run = held  # type: ignore[method-assign]
    try:
        yield entered, gate
    finally:
        gate.set()
        app._batcher.run = run  # type: ignore[method-assign]


def _request(
    path: bytes, body: bytes, *, token: str | None, media: bytes = b"application/json",
    version: bytes = b"1.1", extra: bytes = b"",
) -> bytes:  # fmt: skip
    auth = b"Authorization: Bearer %s\r\n" % token.encode() if token else b""
    return (
        b"POST %s HTTP/%s\r\nHost: 127.0.0.1\r\n%sContent-Type: %s\r\n%s"
        b"Content-Length: %d\r\n\r\n%s"
    ) % (path, version, auth, media, extra, len(body), body)


def _answers(port: int, chunks: list[bytes], count: int) -> tuple[list[bytes], bool]:
    """Send ``chunks`` (apart), read ``count`` answers; and whether the server then closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i, chunk in enumerate(chunks):
            if i:
                time.sleep(0.1)  # a separate read on the server
            sock.sendall(chunk)
        buffer, answers = b"", []
        while len(answers) < count:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                length = int(re.search(rb"content-length: (\d+)", buffer[:end]).group(1))  # type: ignore[union-attr]
                if len(buffer) >= end + 4 + length:
                    answers.append(buffer[: end + 4 + length])
                    buffer = buffer[end + 4 + length :]
                    continue
            more = sock.recv(65536)
            assert more, f"closed after {answers!r} {buffer!r}"
            buffer += more
        assert not buffer
        sock.settimeout(0.5)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:
            closed = True
        return answers, closed


def _masked(answer: bytes) -> bytes:
    answer = re.sub(rb"date: [^\r]*\r\n", b"date: <date>\r\n", answer)
    return re.sub(rb"[0-9a-f]{32}", b"<id>", answer)


def _matrix(secrets: dict[str, str]) -> dict[str, tuple[list[bytes], int]]:
    scorer, reader = secrets["scorer"], secrets["reader"]
    many = orjson.dumps({"instances": [ROW] * 4})
    split = _request(PREDICT, ONE, token=scorer)
    return {  # name: (the chunks written apart, answers expected)
        "predict": ([_request(PREDICT, ONE, token=scorer)], 1),
        "infer": ([_request(b"/v2/models/adult/infer", INFER_BODY, token=scorer)], 1),
        "explain": ([_request(b"/v1/models/adult/explain", ONE, token=scorer)], 1),
        "pinned": ([_request(b"/v1/models/adult/versions/1/predict", ONE, token=scorer)], 1),
        "pinned_unknown": (
            [_request(b"/v1/models/adult/versions/9/predict", ONE, token=scorer)], 1),
        "no_token": ([_request(PREDICT, ONE, token=None)], 1),
        "wrong_scope": ([_request(PREDICT, ONE, token=reader)], 1),
        "text_plain": ([_request(PREDICT, ONE, token=scorer, media=b"text/plain")], 1),
        "bad_json": ([_request(PREDICT, b'{"instances": [', token=scorer)], 1),
        "no_instances": ([_request(PREDICT, b'{"rows": []}', token=scorer)], 1),
        "unknown_model": ([_request(b"/v1/models/nope/predict", ONE, token=scorer)], 1),
        "too_many": ([_request(PREDICT, many, token=scorer)], 1),
        "too_large": ([_request(PREDICT, b" " * 11_000 + ONE, token=scorer)], 1),
        "given_id": ([_request(PREDICT, ONE, token=scorer, extra=b"Keel-Request-Id: m.1\r\n")], 1),
        "close": ([_request(PREDICT, ONE, token=scorer, extra=b"Connection: close\r\n")], 1),
        "http10": ([_request(PREDICT, ONE, token=scorer, version=b"1.0")], 1),
        "pipelined": ([_request(PREDICT, ONE, token=scorer) * 2], 2),
        "split_body": ([split[:-20], split[-20:]], 1),
        "health": ([b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"], 1),
    }  # fmt: skip


LEAN = {  # the cases the lean path takes (the rest go the ASGI way on both servers)
    "predict", "infer", "explain", "pinned", "pinned_unknown", "no_token", "wrong_scope",
    "text_plain", "bad_json", "no_instances", "unknown_model", "too_many", "given_id", "close",
    "http10",
}  # fmt: skip


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _run_matrix(server: Server, secrets: dict[str, str]) -> dict[str, Any]:
    keel_log, uvicorn_log = (
        logging.getLogger("keel.serve.access"),
        logging.getLogger("uvicorn.access"),
    )
    lines = _Lines()
    levels = keel_log.level, uvicorn_log.level
    for logger in (keel_log, uvicorn_log):
        logger.addHandler(lines)
        logger.setLevel(logging.INFO)
    seen: dict[str, Any] = {}
    try:
        for name, (chunks, count) in _matrix(secrets).items():
            before = len(server.lean_calls)
            answers, closed = _answers(server.port, chunks, count)
            seen[name] = ([_masked(a) for a in answers], closed)
            seen[f"{name} lean"] = len(server.lean_calls) - before
    finally:
        for logger, level in zip((keel_log, uvicorn_log), levels, strict=True):
            logger.removeHandler(lines)
            logger.setLevel(level)
    metrics, _ = _answers(
        server.port,
        [b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
         % secrets["reader"].encode()],
        1,
    )  # fmt: skip
    seen["metrics"] = sorted(
        line for line in metrics[0].decode().splitlines() if line.startswith("keel_requests_total")
    )
    masked = [re.sub(r"[0-9a-f]{32}", "<id>", line) for line in lines.lines]
    seen["access log"] = [re.sub(r"[\d.]+ ms$", "<ms>", line) for line in masked]
    seen["access log"] = [re.sub(r":\d+ - ", ":<port> - ", line) for line in seen["access log"]]
    return seen


def test_the_lean_path_answers_byte_for_byte_as_the_asgi_path(setup: Setup) -> None:
    with serving(setup, lean=True) as server:
        lean = _run_matrix(server, setup.secrets)
        assert server.app._open == 0 and server.app._inflight == 0
    with serving(setup, lean=False) as server:
        asgi = _run_matrix(server, setup.secrets)
        assert server.lean_calls == []
    for name in _matrix(setup.secrets):
        assert lean[name] == asgi[name], name
        assert lean[f"{name} lean"] == (1 if name in LEAN else 0), name
    assert lean["metrics"] == asgi["metrics"]
    assert len(lean["access log"]) >= len(_matrix(setup.secrets))
    assert lean["access log"] == asgi["access log"]
    # what the answers say, so that equal does not mean equally broken
    statuses = {name: lean[name][0][0].split(b" ", 2)[1] for name in _matrix(setup.secrets)}
    assert statuses == {
        "predict": b"200", "infer": b"200", "explain": b"200", "pinned": b"200",
        "pinned_unknown": b"404", "no_token": b"401", "wrong_scope": b"403",
        "text_plain": b"415", "bad_json": b"422", "no_instances": b"422",
        "unknown_model": b"404", "too_many": b"422", "too_large": b"413", "given_id": b"200",
        "close": b"200", "http10": b"200", "pipelined": b"200", "split_body": b"200",
        "health": b"200",
    }  # fmt: skip
    closed = {name for name in _matrix(setup.secrets) if lean[name][1]}
    assert closed == {"too_large", "close", "http10"}
    assert b"keel-request-id: m.1\r\n" in lean["given_id"][0][0]
    assert b"keel-model-version: 1\r\n" in lean["predict"][0][0]


def test_concurrent_requests_are_batched_and_answered_in_order(setup: Setup) -> None:
    """Many connections at once (the batcher, answers written from its futures' callbacks),
    each with requests one after another and two pipelined across writes."""
    token = setup.secrets["scorer"]
    bodies = [orjson.dumps({"instances": [dict(ROW, age=20 + i)]}) for i in range(16)]
    results: dict[bool, list[list[bytes]]] = {}
    for lean in (True, False):
        with serving(setup, lean=lean) as server:
            answers: list[list[bytes]] = [[] for _ in bodies]

            def client(i: int, port: int = server.port, out: list[list[bytes]] = answers) -> None:
                first = _request(PREDICT, bodies[i], token=token)
                second = _request(PREDICT, bodies[(i + 1) % 16], token=token)
                got, _ = _answers(port, [first, second, first + second], 4)
                out[i] = [_masked(a) for a in got]

            threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            deadline = time.monotonic() + 10
            while server.app._open or server.app._inflight:
                assert time.monotonic() < deadline, (server.app._open, server.app._inflight)
                time.sleep(0.01)
            if lean:
                assert len(server.lean_calls) >= 32  # the two single writes of each client
            results[lean] = answers
    assert results[True] == results[False]
    for i, got in enumerate(results[True]):  # each answer to its own request, in order
        assert got[0] == got[2] and got[1] == got[3], i
        assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in got), i
    first = [got[0] for got in results[True]]
    assert len(set(first)) > 1  # rows of different ages: not one answer for all


def test_a_client_leaving_while_its_request_is_batched_leaks_nothing(setup: Setup) -> None:
    with serving(setup, lean=True, inline_max_us=0.0) as server:
        app = server.app
        with gated(app) as (entered, gate):
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall(_request(PREDICT, ONE, token=setup.secrets["scorer"]))
                assert entered.wait(30)  # scoring in the batch's thread: the answer is pending
                deadline = time.monotonic() + 10  # the loop counts it as the batch thread runs
                while not (app._open == 1 and app._inflight == 1):
                    assert time.monotonic() < deadline, (app._open, app._inflight)
                    time.sleep(0.01)
            gate.set()  # the client is gone; the batch now answers
            deadline = time.monotonic() + 10
            while app._open or app._inflight:
                assert time.monotonic() < deadline, (app._open, app._inflight)
                time.sleep(0.01)
        request = _request(PREDICT, ONE, token=setup.secrets["scorer"])
        answers, _ = _answers(server.port, [request], 1)
        assert answers[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert server.lean_calls == [PREDICT.decode()] * 2


def test_a_request_behind_a_batched_one_is_answered_after_it(setup: Setup) -> None:
    """A second request arriving while the first is in its batch waits its turn (held, not
    parsed), then is answered, in order, on the same connection."""
    token = setup.secrets["scorer"]
    with serving(setup, lean=True, inline_max_us=0.0) as server, gated(server.app) as gates:
        entered, gate = gates
        first = _request(PREDICT, ONE, token=token, extra=b"Keel-Request-Id: first\r\n")
        second = _request(PREDICT, ONE, token=token, extra=b"Keel-Request-Id: second\r\n")
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(first)
            assert entered.wait(30)
            sock.sendall(second)
            gate.set()
            buffer = b""
            while buffer.count(b"HTTP/1.1 200 OK") < 2 or not buffer.endswith(b"}"):
                more = sock.recv(65536)
                assert more
                buffer += more
        assert buffer.index(b"keel-request-id: first") < buffer.index(b"keel-request-id: second")
        assert server.lean_calls == [PREDICT.decode()] * 2
