"""The serving hot path's shortcuts answer exactly what the long way answers.

Each shortcut (benchmarks/RESULTS.md, "Round five") is checked against the path it skips:
the response head Keel's protocol encodes against uvicorn's own protocol, byte for byte; the
route memo against a fresh classification; the remembered Authorization header against a
token revoked meanwhile; a lone request's scoring against the same request scored in a batch,
errors included; the predictions counter against the rows answered.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from keel.demo import SAMPLE
from keel.errors import KeelError
from keel.project import Project
from keel.serve import middleware
from keel.serve.answers import Tally
from keel.serve.app import create_app
from keel.serve.auth import Authenticator
from keel.serve.batching import Hooks, Job, score_batch
from keel.serve.limits import Unauthorized
from keel.serve.protocol import guarded_protocol
from tests.serve.transport import Transport

BODY = b'{"instances": [{"age": 39}]}'
ANSWER = b'{"predictions": [1]}'


async def _app(scope: Any, receive: Any, send: Any) -> None:
    """Answers by the path: Keel's predict headers, a chunked answer, or a 204."""
    if scope["type"] != "http":
        return
    await receive()
    if scope["path"] == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"abc"})
        return
    if scope["path"] == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(ANSWER)),
        (b"Keel-Model-Version", b"3"),
        (b"keel-request-id", b"0123456789abcdef"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def _exchange(protocol_class: Any, defaults: list[tuple[bytes, bytes]], path: bytes) -> bytes:
    """What a protocol class writes for two keep-alive requests (the defaults change between)."""

    async def run() -> bytes:
        config = uvicorn.Config(_app, http=protocol_class, lifespan="off", log_level="critical",
                                proxy_headers=False)  # fmt: skip
        config.load()
        state = ServerState()
        state.default_headers = defaults
        protocol = protocol_class(config=config, server_state=state, app_state={})
        transport = Transport()
        protocol.connection_made(transport)
        request = (
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path, len(BODY), BODY)
        )
        for turn in range(2):
            protocol.data_received(request)
            deadline = time.monotonic() + 5
            while not transport.closed and not b"".join(transport.writes).count(b"HTTP/1.1") > turn:
                assert time.monotonic() < deadline, transport.writes
                await asyncio.sleep(0)
            for _ in range(5):  # a chunked answer's end follows in the next loop turns
                await asyncio.sleep(0)
            state.default_headers = [(b"date", b"Sat, 05 Dec 2026 05:00:01 GMT"), *defaults[1:]]
            if transport.closed:
                break
        protocol.connection_lost(None)
        return b"".join(transport.writes)

    return asyncio.run(run())


DATE = (b"date", b"Sat, 05 Dec 2026 05:00:00 GMT")


@pytest.mark.parametrize(
    "defaults",
    [
        [DATE, (b"server", b"uvicorn")],  # as `keel serve` runs: encoded once per list
        [DATE, (b"server", b"uvicorn"), (b"x-extra", b"1")],
        [DATE, (b"connection", b"close")],  # a framing default: every header checked
        [],
    ],
)
@pytest.mark.parametrize("path", [b"/v1/models/adult/predict", b"/chunked", b"/empty"])
def test_answers_are_byte_identical_to_uvicorns_protocol(
    defaults: list[tuple[bytes, bytes]], path: bytes
) -> None:
    keel = _exchange(guarded_protocol(header_timeout=5.0, max_connections=64), defaults, path)
    stock = _exchange(HttpToolsProtocol, defaults, path)
    assert keel == stock
    assert keel.count(b"HTTP/1.1 ") == (1 if (b"connection", b"close") in defaults else 2)
    if defaults:  # the second answer carries the date of the list in force then
        assert b"05:00:01 GMT" in keel.rsplit(b"HTTP/1.1 ", 1)[1] or keel.count(b"HTTP/1.1") == 1


def test_a_path_is_classified_once_and_the_memo_stays_bounded() -> None:
    first = middleware.classify("POST", "/v1/models/adult/versions/2/predict")
    assert first == middleware._classify("POST", "/v1/models/adult/versions/2/predict")
    assert middleware.classify("POST", "/v1/models/adult/versions/2/predict") is first
    assert middleware.classify("GET", "/v1/models/adult/versions/2/predict") != first
    for i in range(middleware._SEEN_MAX + 10):  # a client sending ever new paths
        route = middleware.classify("POST", f"/v2/models/m{i}/infer")
        assert route.label == "infer" and route.model == f"m{i}"
    assert len(middleware._SEEN) <= middleware._SEEN_MAX


@dataclass(frozen=True)
class _Token:
    id: str
    name: str
    scopes: tuple[str, ...]
    rate_limit_per_minute: int | None = None


def test_a_remembered_header_is_still_checked_on_every_request() -> None:
    now = [0.0]
    valid = {"keel_a"}

    def verify(secret: str) -> _Token | None:
        return _Token("1", "a", ("predict",)) if secret in valid else None

    auth = Authenticator(verify, ttl=5.0, clock=lambda: now[0])
    assert auth.check(b"Bearer keel_a", "predict").name == "a"
    assert auth.check(b"Bearer keel_a", "predict").name == "a"  # from the memo
    valid.clear()  # revoked: refused once the verification's ttl has passed
    now[0] = 6.0
    with pytest.raises(Unauthorized):
        auth.check(b"Bearer keel_a", "predict")
    with pytest.raises(Unauthorized):  # a malformed header is refused, never remembered
        auth.check(b"Basic keel_a", "predict")
    with pytest.raises(Unauthorized):
        auth.check(b"Basic keel_a", "predict")
    long = b"Bearer " + b"x" * 400  # too long to remember: parsed each time, still refused
    for _ in range(2):
        with pytest.raises(Unauthorized):
            auth.check(long, "predict")
    assert long not in auth._cache and b"Basic keel_a" not in auth._cache


def test_a_lone_request_is_scored_as_it_is_in_a_batch(adult_project: Path) -> None:
    with Project(adult_project) as project:
        app = create_app(project, reload=False, log_predictions=False)
    name, model = "adult", app.models["adult"]
    row = dict(SAMPLE)
    bodies = [
        orjson.dumps({"instances": [row]}),
        orjson.dumps({"instances": [row, {**row, "age": 52}]}),
        b"{not json",  # the request's own 4xx
        orjson.dumps({"instances": [{**row, "age": "old"}]}),  # a bad value: its own 4xx
        orjson.dumps({"instances": [row], "explain": "yes"}),  # a bad flag
        orjson.dumps({"instances": []}),
    ]
    jobs = [Job("predict", body, f"id{i}") for i, body in enumerate(bodies)]
    jobs.append(Job("infer", orjson.dumps({"inputs": [{"name": "age", "shape": [1],
                                                       "datatype": "INT64", "data": [39]}]}),
                    "infer"))  # fmt: skip
    hooks = Hooks(
        partial(app._parse, model),
        partial(app._answer, name, model, Tally(logging=False)),
        partial(_failed, model),
    )
    batched = score_batch(model.package, jobs, hooks)
    lone = [score_batch(model.package, [job], hooks)[0] for job in jobs]
    assert lone == batched
    statuses = [status for status, _, _ in lone]
    assert statuses[:2] == [200, 200] and all(400 <= s < 500 for s in statuses[2:6])


def _failed(model: Any, job: Job, exc: KeelError) -> tuple[int, bytes, str]:
    from keel.serve.answers import _failed as failed

    return failed(model, job, exc)


def test_the_predictions_counter_counts_every_row_answered(adult_project: Path) -> None:
    with Project(adult_project) as project:
        app = create_app(project, reload=False, log_predictions=False)
    name, model = "adult", app.models["adult"]
    row = dict(SAMPLE)
    jobs = [
        Job("predict", orjson.dumps({"instances": [row] * size}), f"id{size}") for size in (1, 3, 5)
    ]
    jobs.append(Job("predict", b"[]", "bad"))  # refused: no rows counted

    def counted() -> float:
        value = app.metrics.registry.get_sample_value(
            "keel_predictions_total", {"model": name, "version": model.version}
        )
        return value or 0.0

    app._scored((name, model), jobs[:1])
    assert counted() == 1
    app._scored((name, model), jobs)
    assert counted() == 1 + 9
    app._scored((name, model), jobs[3:])
    assert counted() == 10
