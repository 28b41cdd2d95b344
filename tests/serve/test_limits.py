"""Request limits and the Open Inference Protocol request shape, without a server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from keel.errors import DataValidationError
from keel.serve import oip
from keel.serve.limits import (
    Limits,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    check_content_type,
    parse_json,
    read_body,
)


def _receiver(chunks: Iterable[bytes], *, hang: bool = False) -> Any:
    items = list(chunks)
    taken: list[int] = []

    async def receive() -> dict[str, Any]:
        if not items:
            if hang:
                await asyncio.sleep(60)
            raise AssertionError("read past the end of the body")
        taken.append(1)
        chunk = items.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(items) or hang}

    receive.taken = taken  # type: ignore[attr-defined]
    return receive


def test_read_body_joins_chunks_and_refuses_early() -> None:
    limits = Limits(max_body=10, body_timeout_s=0.2)
    assert asyncio.run(read_body(_receiver([b"abc", b"def"]), None, limits)) == b"abcdef"
    with pytest.raises(PayloadTooLarge):  # from Content-Length alone: nothing read
        receive = _receiver([b"x"])
        asyncio.run(read_body(receive, b"11", limits))
    assert receive.taken == []
    receive = _receiver([b"123456", b"789012", b"never read"])
    with pytest.raises(PayloadTooLarge):  # the running count: stops at the chunk that passes
        asyncio.run(read_body(receive, None, limits))
    assert len(receive.taken) == 2
    with pytest.raises(RequestTimeout):
        asyncio.run(read_body(_receiver([b"{"], hang=True), None, limits))


def test_content_type_must_be_json() -> None:
    check_content_type(b"application/json")
    check_content_type(b"Application/JSON; charset=utf-8")
    for value in (b"text/plain", b"application/jsonp", b"multipart/form-data", None):
        with pytest.raises(UnsupportedMediaType):
            check_content_type(value)


def test_json_depth_and_numbers() -> None:
    limits = Limits(max_depth=4)
    assert parse_json(b'{"instances": [{"a": [1]}]}', limits, example="x")
    with pytest.raises(DataValidationError, match="deeper than 4"):
        parse_json(b'{"instances": [{"a": [[1]]}]}', limits, example="x")
    wide = b'{"instances": [' + b",".join([b'{"a": 1}'] * 50) + b"]}"  # many brackets, shallow
    assert len(parse_json(wide, limits, example="x")["instances"]) == 50
    with pytest.raises(DataValidationError, match="not valid JSON"):
        parse_json(b'{"a": 1e400}', limits, example="x")  # non-finite numbers are refused


def test_oip_rows_and_their_errors() -> None:
    request = {"inputs": [
        {"name": "a", "datatype": "INT64", "shape": [2], "data": [1, 2]},
        {"name": "b", "datatype": "BYTES", "shape": [2, 1], "data": [["x"], ["y"]]},
    ]}  # fmt: skip
    assert oip.rows_of(request, 10) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    bad: list[tuple[Any, str]] = [
        ({}, "needs \"inputs\""),
        ({"inputs": [{"name": "a", "datatype": "STRING", "shape": [1], "data": [1]}]},
         "not an Open Inference Protocol type"),
        ({"inputs": [{"name": "a", "datatype": "INT64", "shape": [2], "data": [1]}]},
         "says 2 values"),
        ({"inputs": [{"name": "a", "datatype": "INT64", "shape": [1, 3], "data": [1, 2, 3]}]},
         "one column per input"),
        ({"inputs": [{"name": "a", "datatype": "INT64", "shape": [11], "data": [1] * 11}]},
         "1 to 10 rows"),
    ]  # fmt: skip
    for payload, words in bad:
        with pytest.raises(DataValidationError, match=words):
            oip.rows_of(payload, 10)


def test_prediction_threads_are_pinned_to_one_openmp_thread() -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import threading

    import lightgbm  # noqa: F401  (loads its OpenMP runtime)

    from keel.serve.models import pin_threads

    seen: list[int] = []

    def worker() -> None:
        pin_threads(1)
        seen.extend(
            info["num_threads"]
            for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "openmp"
        )

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=30)
    assert seen and set(seen) == {1}
