"""What a new user's trial (penguins, bike sharing) found in a real server's answers: a GET to
a POST-only route said 404 "no route" (now 405, ``Allow: POST``, "use POST"), and
``/v1/features`` on a project without feature views did not say what to do. California
housing, two versions.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.housing import needs_housing, two_versions
from tests.serve.conftest import Served, keel_serve

pytestmark = needs_housing


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = two_versions(tmp_path_factory.mktemp("answers"), seed=7)
    with keel_serve(root, "--no-reload") as server:
        yield server


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models/housing/predict"),
        ("GET", "/v1/models/housing/versions/1/predict"),
        ("PUT", "/v1/models/housing/explain"),
        ("GET", "/v2/models/housing/infer"),
        ("GET", "/v1/features"),
    ],
)
def test_another_method_on_a_post_route_is_405_use_post(
    served: Served, method: str, path: str
) -> None:
    answer = httpx.request(method, f"{served.url}{path}", timeout=10)
    assert answer.status_code == 405, answer.text
    assert answer.headers["allow"] == "POST"
    body = answer.json()
    assert body["error"] == "MethodNotAllowed" and body["field"] == "method", body
    assert body["message"] == f"{method} {path} is not allowed: use POST.", body


def test_an_unknown_path_is_still_404(served: Served) -> None:
    answer = httpx.get(f"{served.url}/v1/models/housing/predictions", timeout=10)
    assert answer.status_code == 404 and "no route" in answer.json()["message"], answer.text


def test_features_without_feature_views_say_how_to_declare_them(served: Served) -> None:
    request = {"features": ["station:rides"], "entities": [{"station": 1}]}
    answer = httpx.post(f"{served.url}/v1/features", json=request, timeout=10)
    assert answer.status_code == 404, answer.text
    message = answer.json()["message"]
    assert message.startswith("this project declares no feature views: "), message
    for words in ("feature_views:", "keel.yaml", "docs/keel-yaml.md#feature-views",
                  "keel features materialize"):  # fmt: skip
        assert words in message, message
