"""The production server under abuse: a real ``keel serve`` process on 127.0.0.1.

Slow clients, huge bodies, wrong content types, address errors, and Open Inference Protocol
answers that must equal the simple API's bit for bit.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from tests.serve.conftest import JSON, ROW, Served, copy_project, free_port, keel_serve

PREDICT = "/v1/models/adult/predict"


@pytest.fixture(scope="module")
def served(adult_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = copy_project(
        adult_project, tmp_path_factory.mktemp("hardening") / "adult",
        serve="  idle_timeout_s: 2\n  max_connections: 1024\n",
    )  # fmt: skip
    with keel_serve(root, "adult", "--no-reload", "--access-log") as server:  # NAME: production
        yield server


def _server_cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def test_slow_connections_neither_starve_clients_nor_keep_descriptors(served: Served) -> None:
    server = psutil.Process(served.process.pid)
    before = server.num_fds()
    sockets: list[socket.socket] = []
    try:
        for _ in range(5000):  # bounded: 5,000 half-open requests, kept open by the client
            sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
            sock.sendall(b"POST /v1/models/adult/predict HTTP/1.1\r\nHost: x\r\nContent-")
            sockets.append(sock)
        with httpx.Client(timeout=5) as client:
            for _ in range(3):
                started = time.monotonic()
                response = client.post(f"{served.url}{PREDICT}", json={"instances": [ROW]})
                assert response.status_code == 200, response.text
                assert time.monotonic() - started < 1.0
        assert server.num_fds() <= before + 1024 + 16  # the connection cap holds
        # the header deadline (2 s) closes the half-open ones while the client still holds them
        deadline = time.monotonic() + 15
        while server.num_fds() > before + 4:
            assert time.monotonic() < deadline, f"{server.num_fds()} fds, {before} at start"
            time.sleep(0.1)
    finally:
        for sock in sockets:
            sock.close()


def _huge_request(port: int, header: bytes, chunks: int) -> tuple[bytes, int]:
    """Send a header then up to ``chunks`` MiB; returns the answer and MiB the server took."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sent = 0
    answer = b""

    def pump() -> None:
        nonlocal sent
        block = b"0" * (1 << 20)
        try:
            for _ in range(chunks):
                if header.endswith(b"chunked\r\n\r\n"):
                    sock.sendall(b"100000\r\n" + block + b"\r\n")
                else:
                    sock.sendall(block)
                sent += 1
        except OSError:
            pass  # the server answered and closed: it did not read the rest

    with sock:
        sock.sendall(header)
        writer = threading.Thread(target=pump, daemon=True)
        writer.start()
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass  # reset by the server after its answer
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            writer.join(timeout=10)
    return answer, sent


def test_a_100_mb_body_is_refused_with_413_at_once(served: Served) -> None:
    server = psutil.Process(served.process.pid)
    cpu = _server_cpu(server)
    started = time.monotonic()
    header = (
        b"POST /v1/models/adult/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b"\r\nContent-Length: 100000000\r\n\r\n"
    )
    answer, _ = _huge_request(served.port, header, 100)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < 2.0
    # without a Content-Length: refused once the running count passes 8 MiB
    header = (
        b"POST /v1/models/adult/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer, sent = _huge_request(served.port, header, 100)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 100
    assert _server_cpu(server) - cpu < 0.1  # both refusals together: < 100 ms of server CPU


def test_wrong_content_type_is_415(served: Served) -> None:
    body = orjson.dumps({"instances": [ROW]})
    for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form"
                    "-urlencoded"}, {}):  # fmt: skip
        response = httpx.post(f"{served.url}{PREDICT}", content=body, headers=headers)
        assert response.status_code == 415, headers
        assert response.json()["field"] == "content-type"
        assert response.headers["keel-request-id"]
    charset = {"content-type": "application/json; charset=utf-8"}
    assert httpx.post(f"{served.url}{PREDICT}", content=body, headers=charset).status_code == 200


def test_deep_json_and_too_many_instances_are_422(served: Served) -> None:
    deep = b'{"instances": [' + b"[" * 100 + b"]" * 100 + b"]}"
    response = httpx.post(f"{served.url}{PREDICT}", content=deep, headers=JSON)
    assert response.status_code == 422 and "deeper than 32" in response.json()["message"]
    many = orjson.dumps({"instances": [ROW] * 10_001})
    response = httpx.post(f"{served.url}{PREDICT}", content=many, headers=JSON, timeout=30)
    assert response.status_code == 422 and response.json()["field"] == "instances"


def test_oip_infer_equals_the_simple_api_bit_for_bit(served: Served) -> None:
    rows = [ROW, dict(ROW, age=52, sex="Female"), dict(ROW, workclass=None, age=None),
            dict(ROW, occupation="Astronaut")]  # fmt: skip
    simple = httpx.post(f"{served.url}{PREDICT}", json={"instances": rows})
    assert simple.status_code == 200
    types = {"age": "INT64", "fnlwgt": "INT64", "education-num": "INT64", "capital-gain": "INT64",
             "capital-loss": "INT64", "hours-per-week": "INT64"}  # fmt: skip
    inputs = [
        {"name": name, "datatype": types.get(name, "BYTES"), "shape": [len(rows)],
         "data": [row[name] for row in rows]}
        for name in ROW
    ]  # fmt: skip
    for path in ("/v2/models/adult/infer", "/v2/models/adult/versions/1/infer"):
        response = httpx.post(f"{served.url}{path}", json={"id": "q1", "inputs": inputs})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_name"] == "adult" and body["model_version"] == "1"
        assert body["id"] == "q1"
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["prediction"]["shape"] == [4]
        expected = simple.json()
        assert orjson.dumps(outputs["prediction"]["data"]) == orjson.dumps(expected["predictions"])
        assert orjson.dumps(outputs["probability"]["data"]) == orjson.dumps(
            expected["probabilities"]
        )
        assert response.headers["keel-model-version"] == "1"
    wrong = httpx.post(f"{served.url}/v2/models/adult/versions/7/infer", json={"inputs": inputs})
    assert wrong.status_code == 404 and "version 1" in wrong.json()["message"]
    mistyped = [dict(inputs[0], data=[39, "x", 40, 41]), *inputs[1:]]
    bad = httpx.post(f"{served.url}/v2/models/adult/infer", json={"inputs": mistyped})
    assert bad.status_code == 422 and bad.json()["field"] == "inputs[age].data[1]"
    assert bad.json()["message"].startswith("inputs[age].data[1]:")
    ragged = [dict(inputs[0], shape=[3], data=[1, 2, 3]), *inputs[1:]]
    bad = httpx.post(f"{served.url}/v2/models/adult/infer", json={"inputs": ragged})
    assert bad.status_code == 422 and "lengths" in bad.json()["message"]


def test_oip_metadata_readiness_openapi_and_docs(served: Served) -> None:
    assert httpx.get(f"{served.url}/v2/models/adult/versions/1").json()["versions"] == ["1"]
    assert httpx.get(f"{served.url}/v2/models/adult/versions/1/ready").json()["ready"] is True
    assert httpx.get(f"{served.url}/v2/models/adult/versions/2/ready").status_code == 404
    document = httpx.get(f"{served.url}/openapi.json").json()
    for path in ("/v1/models/{name}/predict", "/v2/models/{name}/infer",
                 "/v2/models/{name}/versions/{version}/infer", "/v1/features",
                 "/v2/health/ready", "/v2/models/{name}", "/metrics"):  # fmt: skip
        assert path in document["paths"], path
    predict = document["paths"]["/v1/models/{name}/predict"]["post"]
    assert predict["requestBody"]["content"]["application/json"]["schema"]
    assert {"200", "401", "413", "415", "422", "429", "503"} <= set(predict["responses"])
    docs = httpx.get(f"{served.url}/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text
    assert "<script src" not in docs.text and "https://" not in docs.text  # nothing external


def test_every_answer_carries_a_request_id(served: Served) -> None:
    response = httpx.post(f"{served.url}{PREDICT}", json={"instances": [ROW]},
                          headers={"x-request-id": "trace-123"})  # fmt: skip
    assert response.headers["keel-request-id"] == "trace-123"
    assert response.json()["request_id"] == "trace-123"
    assert response.headers["keel-model-version"] == response.json()["model_version"] == "1"
    assert httpx.get(f"{served.url}/v2/health/live").headers["keel-request-id"]
    metrics = httpx.get(f"{served.url}/metrics").text
    assert 'keel_requests_total{route="predict",status="415"}' in metrics
    assert "keel_prediction_log_dropped_total 0.0" in metrics
    assert "trace-123 POST /v1/models/adult/predict 200" in served.log.read_text()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def test_bad_port_or_host_exits_2_before_serving(served: Served, adult_project: Path) -> None:
    project = ["serve", "--project", str(adult_project)]
    done = _cli(*project, "--port", "99999")
    assert done.returncode == 2
    assert "serving" not in done.stderr + done.stdout and "65535" in done.stderr
    done = _cli(*project, "--port", str(served.port))  # taken
    assert done.returncode == 2, done.stderr
    assert "cannot listen" in done.stderr and "serving" not in done.stderr
    done = _cli(*project, "--port", str(free_port()), "--host", "no-such-host.invalid")
    assert done.returncode == 2 and "does not resolve" in done.stderr
    assert "serving" not in done.stderr


def test_a_public_address_without_tokens_refuses_to_start(adult_project: Path) -> None:
    done = _cli("serve", "--project", str(adult_project), "--host", "0.0.0.0", "--port", "1")
    assert done.returncode == 2
    assert "keel tokens create" in done.stderr and "serving" not in done.stderr


def test_endless_headers_get_431(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        with contextlib.suppress(OSError):  # the server closes as soon as it has answered
            for index in range(200):  # bounded: up to 200 x 1 KiB of header lines
                sock.sendall(f"X-Filler-{index}: {'a' * 1000}\r\n".encode())
        with contextlib.suppress(OSError):
            answer = sock.recv(1024)
    assert answer.startswith(b"HTTP/1.1 431")
