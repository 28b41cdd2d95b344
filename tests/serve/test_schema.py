"""Schemathesis over the server's whole OpenAPI document: no request makes it answer 5xx.

Valid and invalid requests (schemathesis's positive and negative modes), bounded: 15 per
operation (about 15 operations), on a real ``keel serve``.
Schemathesis's pytest plugin does not run on this pytest, so each operation's hypothesis
strategy is driven directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from tests.serve.conftest import copy_project, keel_serve  # noqa: E402


def test_no_generated_request_gets_a_5xx(adult_project: Path, tmp_path: Path) -> None:
    root = copy_project(adult_project, tmp_path / "adult")
    failures: list[str] = []
    statuses: list[int] = []
    operations = 0
    with keel_serve(root, "--no-reload") as served:
        schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1

            modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            strategy = st.one_of(*(operation.as_strategy(generation_mode=m) for m in modes))

            @given(case=strategy)
            @settings(max_examples=15, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            def call(case: object) -> None:
                response = case.call(base_url=served.url, timeout=10)  # type: ignore[attr-defined]
                statuses.append(response.status_code)
                if response.status_code >= 500:
                    where = f"{case.method} {case.path}"  # type: ignore[attr-defined]
                    failures.append(f"{where}: {response.status_code} {response.text[:200]}")

            call()
    assert operations >= 12 and len(statuses) >= 100
    assert 200 in statuses and 422 in statuses  # valid and invalid requests were both made
    assert failures == []
