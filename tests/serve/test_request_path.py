"""Round six's shorter request path keeps what the longer one did.

The body Keel's protocol hands over in the scope is the body ``receive()`` would have given
(and a too-large one is still refused); the batcher hands back a request's future instead of a
coroutine and still counts the request as outstanding until its batch is answered, a
cancelled one included; a batch's queue waits counted in one call equal one call per wait;
predictions counted by several threads in cells of their own add up as a locked counter would.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from prometheus_client import CollectorRegistry, Counter, generate_latest
from uvicorn.server import ServerState

from keel.demo import SAMPLE
from keel.project import Project
from keel.serve.app import create_app
from keel.serve.batching import Batcher, BatchPolicy, Job
from keel.serve.metrics import LoopHistogram, ThreadsCounter
from keel.serve.protocol import guarded_protocol
from keel.serve.workers import Workers
from tests.serve.transport import Transport

PATH = "/v1/models/adult/predict"


def _request(body: bytes) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (PATH.encode(), len(body), body)
    )


def test_the_protocol_hands_the_whole_body_over_in_the_scope() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(dict(scope))
        chunks, more = [], True
        while more:  # any app may still read it the ASGI way
            message = await receive()
            chunks.append(message["body"])
            more = message.get("more_body", False)
        seen[-1]["received"] = b"".join(chunks)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def drive() -> Transport:
        config = uvicorn.Config(app, http="httptools", lifespan="off", log_level="warning")
        config.load()
        protocol = guarded_protocol(header_timeout=5.0, max_connections=8)(
            config=config, server_state=ServerState(), app_state={}
        )
        transport = Transport()
        protocol.connection_made(transport)
        request = _request(b'{"instances": [1]}')
        protocol.data_received(request)  # whole
        for _ in range(20):
            await asyncio.sleep(0)
        protocol.data_received(request[:-5])  # the body's end comes later
        for _ in range(20):
            await asyncio.sleep(0)
        assert "keel.body" not in seen[-1]  # not whole when the app started
        protocol.data_received(request[-5:])
        for _ in range(20):
            await asyncio.sleep(0)
        return transport

    transport = asyncio.run(drive())
    assert len(seen) == 2 and transport.writes[0].startswith(b"HTTP/1.1 204")
    assert seen[0]["keel.body"] == seen[0]["received"] == b'{"instances": [1]}'
    assert seen[1]["received"] == b'{"instances": [1]}'


def test_a_body_in_the_scope_is_answered_without_receive_and_still_limited(
    adult_project: Path, tmp_path: Path
) -> None:
    with Project(adult_project) as project:
        app = create_app(project, reload=False, log_predictions=False)
    body = orjson.dumps({"instances": [dict(SAMPLE)]})

    async def call(scope_body: bytes, max_body: int) -> tuple[int, bytes]:
        from dataclasses import replace

        app.settings = replace(app.settings, limits=replace(app.settings.limits, max_body=max_body))
        sent: list[dict[str, Any]] = []
        received: list[bool] = []

        async def receive() -> dict[str, Any]:
            received.append(True)
            return {"type": "http.request", "body": scope_body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": PATH,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(scope_body)),
            ],
            "keel.body_complete": True,
            "keel.body": scope_body,
        }
        await app(scope, receive, send)
        assert received == []  # the body came in the scope; too large: its content-length
        return sent[0]["status"], sent[1]["body"]

    async def both() -> list[tuple[int, bytes]]:
        return [await call(body, 8 * 1024 * 1024), await call(body, len(body) - 1)]

    (ok, answer), (refused, error) = asyncio.run(both())
    assert ok == 200 and orjson.loads(answer)["predictions"]
    assert refused == 413 and orjson.loads(error)["field"] == "body"


def test_the_batcher_counts_a_request_until_its_batch_is_answered() -> None:
    gate = threading.Event()

    def run(target: Any, jobs: list[Job], cost: Any, max_rows: int) -> list[Any]:
        gate.wait(10)
        return [job.body.upper() for job in jobs]

    async def drive() -> None:
        workers = Workers(1)
        policy = BatchPolicy(mode="on", max_batch=8, max_wait_s=0.0)
        batcher = Batcher(workers, run, policy, CollectorRegistry())
        model = object()
        submitted = [
            batcher.submit("m", model, Job("predict", b"r%d" % i, str(i))) for i in range(5)
        ]
        assert all(isinstance(s, asyncio.Future) for s in submitted)  # no coroutine per request
        waiting = [asyncio.ensure_future(s) for s in submitted]
        await asyncio.sleep(0.05)
        assert batcher._outstanding == 5
        waiting[2].cancel()  # a request given up while its batch runs
        await asyncio.sleep(0.01)
        assert batcher._outstanding == 5  # still in its batch, still counted
        gate.set()
        answers = await asyncio.gather(*waiting, return_exceptions=True)
        assert answers[:2] == [b"R0", b"R1"] and answers[3:] == [b"R3", b"R4"]
        assert isinstance(answers[2], asyncio.CancelledError)
        for _ in range(50):
            if batcher._outstanding == 0 and batcher._busy == 0:
                break
            await asyncio.sleep(0.01)
        assert (batcher._outstanding, batcher._busy) == (0, 0)
        workers.close()

    asyncio.run(drive())


@pytest.mark.parametrize("values", [[], [0.00004], [0.0003, 0.2, 5.0, 0.0003, 0.0019]])
def test_a_batchs_waits_counted_at_once_equal_one_by_one(values: list[float]) -> None:
    one, each = CollectorRegistry(), CollectorRegistry()
    h1 = LoopHistogram("w", "waits", buckets=(0.0001, 0.001, 0.01, 1.0), registry=one)
    h2 = LoopHistogram("w", "waits", buckets=(0.0001, 0.001, 0.01, 1.0), registry=each)
    h2._one.created = h1._one.created
    for value in values:
        h1.observe(value)
    h2.observe_each(values)
    assert generate_latest(one) == generate_latest(each)


def test_predictions_counted_by_several_threads_expose_what_a_locked_counter_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    cells = ThreadsCounter("keel_predictions", "Rows.", ["model", "version"], registry=ours)
    locked = Counter("keel_predictions", "Rows.", ["model", "version"], registry=theirs)

    def work(version: str) -> None:
        cell = cells.cell("adult", version)  # this thread's own
        for _ in range(20_000):
            cell.value += 1
            locked.labels("adult", version).inc()

    threads = [threading.Thread(target=work, args=(v,)) for v in ("1", "1", "1", "2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    created = {v: min(c.created for c in cells._series[("adult", v)].values()) for v in "12"}
    for version in "12":  # the creation times differ by when each was first counted
        locked.labels("adult", version)._created = created[version]
    text = generate_latest(ours).decode()
    assert text == generate_latest(theirs).decode()
    assert 'keel_predictions_total{model="adult",version="1"} 60000.0' in text
