"""A lone explain request answered on the event loop (``serve.inline_explain_max_us``), the
same explanation as in process; the rest threaded."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi.testclient import TestClient

from keel.evaluate import treeshap
from keel.evaluate.explain import explain_rows
from keel.serve.app import ServerApp
from tests.serve.conftest import ROW
from tests.serve.test_inline import served

__all__ = ["served"]  # the fixture: the Adult server, counting what its threads ran

EXPLAIN = "/v1/models/adult/explain"


def _explained(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(EXPLAIN, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["model_version"] == "1"
    return answer


def test_lone_explanations_skip_the_thread_and_equal_the_batch_ones(
    served: tuple[ServerApp, list[str]],
) -> None:
    app, handed = served
    # the measured bound, not this shared test machine's load, decides: a generous cap here
    app.settings = replace(app.settings, inline_explain_max_us=50_000.0)
    package = app.models["adult"].package
    rows = [dict(ROW, age=25 + 3 * i, sex="Female" if i % 2 else "Male") for i in range(6)]
    with TestClient(app) as client:
        assert package.model.booster_ in treeshap._CACHE  # its TreeSHAP built at start-up
        handed.clear()  # the lifespan warmed the model and its explainer in threads
        answers = [_explained(client, {"instances": [row]}) for row in rows]
        assert handed == ["_explained"], handed  # the first measures the cost; then inline
        assert 0 < app._solo_explain[id(package)] * 1e6 <= app.settings.inline_explain_max_us
        for row, answer in zip(rows, answers, strict=True):
            batch = explain_rows(package, [row]).to_json()
            assert answer["method"] == batch["method"] == "keel.treeshap"
            assert answer["rows"] == batch["rows"]  # exactly: the same numbers
            assert answer["base_value"] == batch["base_value"]
        two = _explained(client, {"instances": rows[:2]})  # a few rows: inline too
        assert two["rows"] == [a["rows"][0] for a in answers[:2]]
        assert len(handed) == 1
        plain = client.post("/v1/models/adult/predict", json={"instances": [ROW], "explain": True})
        assert plain.status_code == 200 and len(handed) == 2  # explain: true stays threaded
        bad = client.post(EXPLAIN, json={"instances": [dict(ROW, age="old")]})
        assert bad.status_code == 422 and "instances[0].age" in bad.text  # inline, still a 422
        app.settings = replace(app.settings, inline_explain_max_us=1.0)  # slower than the cap
        _explained(client, {"instances": [ROW]})
        assert handed[2:] == ["_explained"]
        app.settings = replace(app.settings, inline_explain_max_us=0.0)  # off
        _explained(client, {"instances": [ROW]})
        assert handed[2:] == ["_explained", "_explained"]


def test_never_inline_an_explanation_under_concurrency_or_unmeasured(
    served: tuple[ServerApp, list[str]],
) -> None:
    app, _ = served
    model = app.models["adult"]
    body = b'{"instances": [{"age": 39}]}'
    assert not app._inline({}, "explain", model, body)  # not measured yet: a thread measures
    app._solo_explain[id(model.package)] = 500e-6
    assert app._inline({}, "explain", model, body)
    assert not app._inline({}, "explain", model, b" " * 5000)  # past INLINE_MAX_BYTES
    busy = {"keel.connections": ({"a", "b"}, {})}  # another connection is inside a request
    assert not app._inline(busy, "explain", model, body)
    app._inflight = 1
    assert not app._inline({}, "explain", model, body)
