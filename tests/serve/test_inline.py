"""Small lone requests scored on the event loop (``serve.inline_max_us``), the rest threaded;
a body that arrived with its headers read without arming a deadline."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi.testclient import TestClient

from keel.project import Project
from keel.serve import routing
from keel.serve.app import INLINE_MAX_BYTES, ServerApp, create_app
from keel.serve.limits import Limits, PayloadTooLarge, RequestTimeout, read_body
from keel.serve.predlog import read_prediction_log
from keel.serve.protocol import guarded_protocol
from tests.serve.conftest import ROW, free_port

URL = "/v1/models/adult/predict"
INFER = "/v2/models/adult/infer"


@pytest.fixture
def served(adult_project: Path, tmp_path: Path) -> Iterator[tuple[ServerApp, list[str]]]:
    """The Adult server (prediction log on, in ``tmp_path``) and the calls its threads ran."""
    with Project(adult_project) as project:
        app = create_app(project, reload=False)
    assert app.log is not None
    app.log.directory = tmp_path
    # the measured bound, not this shared test machine's load, decides: a generous cap here
    app.settings = replace(app.settings, inline_max_us=5000.0)
    handed: list[str] = []
    run, submit = app._workers.run, app._workers.submit_batch

    def counted_run(fn: Any, *args: Any) -> Any:
        handed.append(getattr(fn, "__name__", "call"))
        return run(fn, *args)

    def counted_submit(*args: Any) -> None:
        handed.append("batch")
        submit(*args)

    app._workers.run = counted_run  # type: ignore[method-assign]
    app._workers.submit_batch = counted_submit  # type: ignore[method-assign]
    yield app, handed


@contextmanager
def keel_server(app: ServerApp, *, lean: bool = True) -> Iterator[str]:
    """``app`` behind uvicorn with Keel's HTTP protocol (as ``keel serve`` runs it; ``lean``:
    its lean path on), in a thread on 127.0.0.1; its base URL once it answers (polled with a
    deadline)."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        http=guarded_protocol(header_timeout=5.0, max_connections=64, lean=lean),
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _predicted(client: TestClient, body: dict[str, Any], path: str = URL) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert response.headers["keel-request-id"] == answer["request_id"]
    assert response.headers["keel-model-version"] == answer["model_version"] == "1"
    return answer


def test_lone_small_requests_skip_the_thread_and_answer_the_same(
    served: tuple[ServerApp, list[str]], tmp_path: Path
) -> None:
    app, handed = served
    package = app.models["adult"].package
    rows = [dict(ROW, age=20 + i) for i in range(20)]
    with TestClient(app) as client:
        handed.clear()  # the lifespan warmed the model in a thread
        answers = [_predicted(client, {"instances": [row]}) for row in rows]
        infer = client.post(
            INFER,
            json={"inputs": [{"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str)
                              else "INT64", "data": [v]} for k, v in ROW.items()]},
        )  # fmt: skip
        assert infer.status_code == 200, infer.text
    # in a thread: the first (it calibrates the batch cost model) and the second (measured);
    # the rest are scored on the loop
    assert handed == ["batch", "batch"], handed
    assert 0 < app._solo[id(package)] * 1e6 <= app.settings.inline_max_us
    for row, answer in zip(rows, answers, strict=True):
        labels, probabilities = package.predict_rows([row], findings=[])
        assert answer["predictions"] == labels
        assert answer["probabilities"] == probabilities
    records = list(read_prediction_log(tmp_path, "adult"))  # every request still logged
    assert {r["request_id"] for r in records} >= {a["request_id"] for a in answers}
    assert len(records) == len(rows) + 1


def test_explanations_large_bodies_and_slow_models_stay_off_the_loop(
    served: tuple[ServerApp, list[str]],
) -> None:
    app, handed = served
    big = {"instances": [ROW] * 40}  # a few KiB: past INLINE_MAX_BYTES
    assert len(str(big)) > INLINE_MAX_BYTES
    with TestClient(app) as client:
        _predicted(client, {"instances": [ROW]})  # calibrates, in a thread
        _predicted(client, {"instances": [ROW]})  # measured, in a thread
        handed.clear()
        _predicted(client, {"instances": [ROW], "explain": True})
        assert len(handed) == 1
        _predicted(client, {"instances": [ROW]})
        assert len(handed) == 1  # small and lone: inline
        assert len(_predicted(client, big)["predictions"]) == 40
        assert len(handed) == 2
        response = client.post("/v1/models/adult/explain", json={"instances": [ROW]})
        assert response.status_code == 200, response.text
        assert len(handed) == 3
        app.settings = replace(app.settings, inline_max_us=1.0)  # slower than the cap
        _predicted(client, {"instances": [ROW]})
        assert len(handed) == 4
        app.settings = replace(app.settings, inline_max_us=0.0)  # off
        _predicted(client, {"instances": [ROW]})
        assert len(handed) == 5


def test_never_inline_while_a_prediction_is_queued(
    served: tuple[ServerApp, list[str]],
) -> None:
    app, _ = served
    model = app.models["adult"]
    app._solo[id(model.package)] = 20e-6
    body = b'{"instances": [{"age": 39}]}'
    assert app._inline({}, "predict", model, body)
    assert app._inline({}, "infer", model, body)
    assert not app._inline({}, "explain", model, body)
    assert not app._inline({}, "predict", model, b'{"explain": true, "instances": [{}]}')
    app._inflight = 1  # a request is in a thread or the batch queue: join it, do not jump it
    assert not app._inline({}, "predict", model, body)


def test_never_inline_while_another_connection_is_inside_a_request(
    served: tuple[ServerApp, list[str]],
) -> None:
    app, _ = served
    model = app.models["adult"]
    app._solo[id(model.package)] = 20e-6
    body = b'{"instances": [{"age": 39}]}'
    lone = {"keel.connections": ({"a", "b", "c"}, {"b": None, "c": None})}  # b, c idle
    assert app._inline(lone, "predict", model, body)
    busy = {"keel.connections": ({"a", "b", "c"}, {"c": None})}  # b is inside a request too
    assert not app._inline(busy, "predict", model, body)
    app._open = 2  # served without Keel's protocol: the requests being answered count
    assert not app._inline({}, "predict", model, body)
    app._open = 1
    assert app._inline({}, "predict", model, body)


def test_the_protocol_tells_the_app_how_many_connections_are_in_a_request(
    served: tuple[ServerApp, list[str]],
) -> None:
    app, _ = served
    seen: list[int] = []
    inline = app._inline

    def spy(scope: Any, *args: Any) -> bool:
        connections, idle = scope["keel.connections"]
        seen.append(len(connections) - len(idle))
        assert scope["keel.body_complete"]  # the body came with the headers: no deadline armed
        return inline(scope, *args)

    app._inline = spy  # type: ignore[method-assign]
    with keel_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        other = httpx.Client(base_url=url, timeout=30)
        with other:
            other.get("/v2/health/live")  # a second connection, idle after its request
            for _ in range(3):
                response = client.post(URL, json={"instances": [ROW]})
                assert response.status_code == 200, response.text
    assert seen == [1, 1, 1]


def test_a_complete_body_is_taken_at_once_and_still_held_to_the_limits() -> None:
    limits = Limits(max_body=10)
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    def read(*given: dict[str, Any]) -> bytes:
        messages[:] = list(given)
        return asyncio.run(read_body(receive, None, limits, complete=True))

    assert read({"type": "http.request", "body": b"{}", "more_body": False}) == b"{}"
    with pytest.raises(PayloadTooLarge):
        read({"type": "http.request", "body": b"x" * 11, "more_body": False})
    with pytest.raises(RequestTimeout):
        read({"type": "http.disconnect"})
    more = {"type": "http.request", "body": b"[1,", "more_body": True}  # not complete after all
    assert read(more, {"type": "http.request", "body": b"2]", "more_body": False}) == b"[1,2]"


def test_shadow_copies_follow_the_answer_and_are_sampled_while_primaries_queue(
    served: tuple[ServerApp, list[str]],
) -> None:
    app, _ = served
    model = app.models["adult"]
    app.routes = {"adult": routing.Route("deployment-1", "shadow", shadow=model)}
    submitted: list[tuple[Any, ...]] = []
    app.shadows.submit = lambda *args: submitted.append(args)  # type: ignore[method-assign]
    with TestClient(app) as client:
        answer = _predicted(client, {"instances": [ROW]})
        assert len(submitted) == 1 and app.shadows.shed == 0
        assert orjson.loads(submitted[0][4]) == answer  # the answer the client got
        app._inflight += 64  # primary predictions queued: the shadow gets 1 copy in 16
        for _ in range(32):
            _predicted(client, {"instances": [ROW]})
        app._inflight -= 64
        assert len(submitted) == 1 + 2 and app.shadows.shed == 30
