"""Deployments in a real server on 127.0.0.1: a slow canary rolled back and a good one promoted
(both in the audit trail), A/B weights within a binomial bound and sticky keys, shadow answers
that never reach the client, pinned versions, REST with an admin token, and CLI errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

import keel
from keel.project import Project
from keel.registry.registry import Registry
from keel.serve.models import LoadedModel
from keel.serve.routing import Arm, Route, sticky_value
from keel.store.tokens import create_token
from tests.serve.conftest import ROW, copy_project, keel_serve, train_candidate

PREDICT = "/v1/models/adult/predict"
INFER = "/v2/models/adult/infer"
SLOW_MS = 120
SLOW_FEATURE = f'''"""A custom feature that is genuinely slow on the request path (few rows)."""

import time

import numpy as np

import keel


@keel.feature(vectorized=True)
def age_copy(age: np.ndarray) -> np.ndarray:
    if len(age) < 100:  # serving: one request's rows; training passes whole columns
        time.sleep({SLOW_MS / 1000})
    return np.asarray(age, dtype=float)
'''


@pytest.fixture(scope="module")
def versions(adult_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Adult with v1 = production (fast), v2 = retrained with a slow custom feature (registered
    under another alias, not promoted), v3 = v1's package again (fast)."""
    root = copy_project(
        adult_project, tmp_path_factory.mktemp("deploy") / "adult", "  reload_interval_s: 0.2\n"
    )
    assert train_candidate(root, "slow_feats", SLOW_FEATURE) == 2
    with Project(root) as project:
        reg = Registry(project.metadata.database, actor="test")
        assert reg.resolve("adult@production").version == 1
        package = reg.show("adult", 1).package_sha256
        reg.register("adult", package_sha256=package, run_id=None, metrics={})
    return root


def _predict(http: httpx.Client, url: str, body: dict[str, object]) -> tuple[str, str]:
    answer = http.post(f"{url}{PREDICT}", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["model_version"], answer.headers["keel-model-version"]


def _until(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_slow_canary_is_rolled_back_and_a_good_one_promoted(versions: Path) -> None:
    root = copy_project(versions, versions.parent / "canary")
    seen: Counter[str] = Counter()
    with keel_serve(root) as served, httpx.Client(timeout=10) as http:
        bad = keel.deploy(
            "adult", canary=2, steps="50,100", interval="1s", check="p99_ms<=80",
            min_requests=5, failures=2, project=root, actor="release-bot",
        )  # fmt: skip

        def ended(ident: str) -> bool:
            for _ in range(20):
                body_version, header = _predict(http, served.url, {"instances": [ROW]})
                assert body_version == header
                seen[body_version] += 1
            return keel.deployment_status(ident, project=root)["status"] != "active"

        _until(lambda: ended(bad["id"]), 40, "the slow canary was never judged")
        status = keel.deployment_status(bad["id"], project=root)
        assert status["status"] == "rolled_back", status["events"]
        assert seen["2"] > 0 and seen["1"] > 0  # the canary answered part of the traffic
        canary = next(t for t in status["traffic"] if t["role"] == "canary")
        assert canary["p99_ms"] > 80 and canary["requests"] >= 5
        # its traffic returns to the primary within a reload interval or two
        time.sleep(0.6)
        assert {_predict(http, served.url, {"instances": [ROW]})[0] for _ in range(30)} == {"1"}

        good = keel.deploy(
            "adult", canary=3, steps="50", interval="1s", check="error_rate<=0.01,p99_ms<=80",
            min_requests=5, project=root, actor="release-bot",
        )  # fmt: skip
        _until(lambda: ended(good["id"]), 40, "the good canary was never judged")
        status = keel.deployment_status(good["id"], project=root)
        assert status["status"] == "promoted", status["events"]
        _until(
            lambda: _predict(http, served.url, {"instances": [ROW]})[0] == "3",
            5,
            "the promoted version never reached the server",
        )
    with Project(root) as project:
        reg = Registry(project.metadata.database)
        assert reg.resolve("adult@production").version == 3
        actions = [(e.action, e.details.get("version")) for e in reg.audit(target="adult")]
    assert ("deploy_rolled_back", 2) in actions
    assert ("deploy_promoted", 3) in actions
    assert ("promote", 3) in actions  # the alias moved through the registry's promote
    audit = subprocess.run(
        [sys.executable, "-m", "keel.cli", "audit", "--project", str(root), "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "deploy_rolled_back" in audit.stdout and "deploy_promoted" in audit.stdout


def test_refusals_are_counted_per_arm_and_alike_arms_still_promote(versions: Path) -> None:
    """A 4xx answer counts as a refusal of the arm that gave it (not as an error): the
    controller compares a canary's refusals with the primary's, so clients' own mistakes, which
    both arms refuse alike, do not hold back a canary."""
    root = copy_project(versions, versions.parent / "refusals")
    bad_row = {**ROW, "age": "not a number"}
    with keel_serve(root) as served, httpx.Client(timeout=10) as http:
        made = keel.deploy(
            "adult", canary=3, steps="50", interval="1s", check="error_rate<=0.01",
            min_requests=20, project=root,
        )  # fmt: skip

        def ended() -> bool:
            for index in range(20):
                row = bad_row if index % 5 == 0 else ROW
                answer = http.post(f"{served.url}{PREDICT}", json={"instances": [row]})
                assert answer.status_code == (422 if row is bad_row else 200), answer.text
            return keel.deployment_status(made["id"], project=root)["status"] != "active"

        _until(ended, 40, "the canary was never judged")
    status = keel.deployment_status(made["id"], project=root)
    assert status["status"] == "promoted", status["events"]
    # the primary arm is whatever the alias loads: once the promotion moved it to v3, a request
    # or two may still be routed by the ending deployment, counted as v3's primary traffic
    by_role: dict[str, Counter[str]] = {}
    for t in status["traffic"]:
        by_role.setdefault(t["role"], Counter()).update(
            {k: t[k] for k in ("requests", "rejected", "errors")}
        )
    for role in ("primary", "canary"):
        arm = by_role[role]
        assert arm["rejected"] > 0 and arm["errors"] == 0, status["traffic"]
        assert arm["rejected"] / arm["requests"] < 0.5, status["traffic"]
    judged = next(e for e in status["events"] if e["action"] == "promoted")
    assert judged["primary_rejection_rate"] > 0


def test_ab_weights_sticky_keys_pinned_versions_and_rest(versions: Path) -> None:
    root = copy_project(versions, versions.parent / "ab")
    config = root / "keel.yaml"  # the arms' feedback below is 60 labels, not monitor's 100
    config.write_text(config.read_text().replace("min_rows: 100", "min_rows: 10"))
    with Project(root) as project:
        _, admin = create_token(project.metadata.database, "ops", ["admin"], created_by="test")
    with keel_serve(root) as served, httpx.Client(timeout=10) as http:
        auth = {"authorization": f"Bearer {admin}"}
        made = http.post(
            f"{served.url}/v1/deployments",
            json={"name": "adult", "kind": "ab", "arms": "1:30,3:70", "sticky_key": "user_id"},
            headers=auth,
        )
        assert made.status_code == 200, made.text
        refused = http.post(f"{served.url}/v1/deployments", json={"name": "adult", "kind": "ab"})
        assert refused.status_code == 401
        second = http.post(
            f"{served.url}/v1/deployments",
            json={"name": "adult", "kind": "shadow", "version": 2},
            headers=auth,
        )
        assert second.status_code == 409 and "already has an active" in second.text
        _until(
            lambda: _predict(http, served.url, {"instances": [ROW]})[0] == "3", 5, "no A/B route"
        )
        n = 2000
        counts = Counter(_predict(http, served.url, {"instances": [ROW]})[0] for _ in range(n))
        bound = 4 * math.sqrt(n * 0.3 * 0.7)  # four standard deviations of the binomial
        assert abs(counts["1"] - 0.3 * n) < bound, counts
        assert counts["1"] + counts["3"] == n
        # sticky: the same user always gets the same arm, and users spread over both
        arms = {}
        for user in range(40):
            got = {
                _predict(http, served.url, {"user_id": f"u{user}", "instances": [ROW]})[0]
                for _ in range(4)
            }
            assert len(got) == 1, (user, got)
            arms[user] = got.pop()
        assert set(arms.values()) == {"1", "3"}
        # the key inside the instance (the model does not read user_id): accepted, same arm,
        # and an explanation comes from the version that answered that user's predictions
        for user in range(12):
            inside = {"instances": [{**ROW, "user_id": f"u{user}"}]}
            answer = http.post(f"{served.url}{PREDICT}", json=inside)
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == arms[user]
            explained = http.post(f"{served.url}/v1/models/adult/explain", json=inside)
            assert explained.status_code == 200, explained.text
            assert explained.headers["keel-model-version"] == arms[user]
        # Open Inference Protocol: the key as a request parameter, or as an input tensor
        for user in range(12):
            tensors = [
                {"name": k, "datatype": "BYTES" if isinstance(v, str) else "INT64",
                 "shape": [1], "data": [v]}
                for k, v in ROW.items()
            ]  # fmt: skip
            by_parameter = {"inputs": tensors, "parameters": {"user_id": f"u{user}"}}
            user_tensor = {"name": "user_id", "datatype": "BYTES", "shape": [1],
                           "data": [f"u{user}"]}  # fmt: skip
            for body in (by_parameter, {"inputs": [*tensors, user_tensor]}):
                answer = http.post(f"{served.url}/v2/models/adult/infer", json=body)
                assert answer.status_code == 200, answer.text
                assert answer.json()["model_version"] == arms[user], (user, body)
        # pinned versions bypass routing
        pinned = http.post(
            f"{served.url}/v1/models/adult/versions/1/predict", json={"instances": [ROW]}
        )
        assert pinned.json()["model_version"] == "1"
        pinned = http.post(
            f"{served.url}/v1/models/adult/versions/3/predict", json={"instances": [ROW]}
        )
        assert pinned.json()["model_version"] == "3"
        listed = http.get(f"{served.url}/v1/deployments").json()["deployments"]
        assert [d["kind"] for d in listed] == ["ab"]

        def flushed() -> bool:  # servers write their counts every few seconds
            traffic = http.get(f"{served.url}/v1/deployments/adult").json()["traffic"]
            return sum(t["requests"] for t in traffic) >= n + 160

        _until(flushed, 15, "the A/B traffic was never flushed")
        status = http.get(f"{served.url}/v1/deployments/adult").json()
        traffic = {t["version"]: t for t in status["traffic"]}
        assert traffic[3]["requests"] > traffic[1]["requests"] > 0
        assert traffic[3]["error_rate"] == 0.0 and traffic[3]["p99_ms"] is not None
        # each arm's realised metric from feedback, with the test against the primary
        labels, seen = [], Counter[str]()
        for user in range(60):
            answer = http.post(
                f"{served.url}{PREDICT}", json={"user_id": f"f{user}", "instances": [ROW]}
            ).json()
            seen[answer["model_version"]] += 1
            labels.append({"request_id": answer["request_id"], "label": answer["predictions"][0]})
        fed = http.post(f"{served.url}/v1/models/adult/feedback", json={"labels": labels})
        assert fed.status_code == 200, fed.text

        def labelled() -> bool:  # the log is flushed every half second
            feedback = http.get(f"{served.url}/v1/deployments/adult").json()["feedback"]
            return sum(a["labelled"] for a in feedback.get("arms", [])) == len(labels)

        _until(labelled, 10, "the labels never reached the deployment's status")
        feedback = http.get(f"{served.url}/v1/deployments/adult").json()["feedback"]
        by_version = {a["version"]: a for a in feedback["arms"]}
        assert {v: a["labelled"] for v, a in by_version.items()} == dict(seen)
        assert all(a["metrics"]["accuracy"]["value"] == 1.0 for a in feedback["arms"])
        aborted = http.post(
            f"{served.url}/v1/deployments/adult/abort", json={"reason": "done"}, headers=auth
        )
        assert aborted.json()["status"] == "aborted"
        _until(
            lambda: all(
                _predict(http, served.url, {"instances": [ROW]})[0] == "1" for _ in range(20)
            ),
            5,
            "the aborted A/B test still routes",
        )
    with Project(root) as project:
        [entry] = Registry(project.metadata.database).audit(action="deploy_aborted")
    assert entry.actor == "token:ops"


def test_shadow_answers_never_reach_the_client(versions: Path) -> None:
    root = copy_project(versions, versions.parent / "shadow")
    with keel_serve(root) as served, httpx.Client(timeout=10) as http:
        made = keel.deploy("adult", shadow=2, project=root)
        _until(lambda: _pinned_ok(served.url, "2"), 5, "the shadow was never loaded")
        rows = [{**ROW, "age": age} for age in range(20, 80, 3)]
        took = []
        for row in rows * 3:
            started = time.perf_counter()
            assert _predict(http, served.url, {"instances": [row]}) == ("1", "1")
            took.append(time.perf_counter() - started)
        took.sort()
        assert took[len(took) // 2] < SLOW_MS / 1000  # the slow shadow is off the response path
        for start in range(0, 20, 5):  # OIP infer requests are mirrored too: 4 of 5 rows
            answer = http.post(f"{served.url}{INFER}", json=_infer_body(rows[start : start + 5]))
            assert answer.status_code == 200 and answer.json()["model_version"] == "1"

        def measured() -> bool:
            status = keel.deployment_status(made["id"], project=root)
            shadow = [t for t in status["traffic"] if t["role"] == "shadow"]
            return bool(shadow) and shadow[0]["compared"] >= len(rows) * 3 + 20

        # scored in the shadow process, which starts and runs at idle priority: on a loaded
        # machine it waits for CPU time the server and others leave
        _until(measured, 60, "the shadow's answers were never counted")
        status = keel.deployment_status(made["id"], project=root)
        shadow = next(t for t in status["traffic"] if t["role"] == "shadow")
        assert shadow["p50_ms"] >= SLOW_MS * 0.9
        assert 0.0 <= shadow["disagreement_rate"] <= 1.0
    logged = [
        json.loads(line)
        for path in (root / ".keel" / "predictions").rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    roles = Counter(
        (r["role"], r["model_version"]) for r in logged for _ in range(len(r["inputs"]))
    )
    assert roles[("shadow", "2")] == len(rows) * 3 + 20  # pinned probes are logged as primary
    assert roles[("primary", "1")] >= len(rows) * 3


def _infer_body(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """An Open Inference Protocol request: one tensor per column."""
    return {
        "inputs": [
            {"name": k, "datatype": "BYTES" if isinstance(v, str) else "INT64",
             "shape": [len(rows)], "data": [row[k] for row in rows]}
            for k, v in rows[0].items()
        ]
    }  # fmt: skip


def _pinned_ok(url: str, version: str) -> bool:
    path = f"{url}/v1/models/adult/versions/{version}/predict"
    return httpx.post(path, json={"instances": [ROW]}).status_code == 200


def test_cli_bad_input_gives_clear_errors(versions: Path) -> None:
    root = copy_project(versions, versions.parent / "cli")

    def keel_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "keel.cli", *args, "--project", str(root)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    bad = keel_cli("deploy", "adult", "--canary", "2", "--check", "error_rate<=0.01,p99<=50")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "bad check clause 'p99<=50'" in bad.stderr
    unknown = keel_cli("deploy", "adult", "--canary", "99")
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert "99" in unknown.stderr
    first = keel_cli("deploy", "adult", "--shadow", "2", "--format", "json")
    assert first.returncode == 0, first.stderr
    again = keel_cli("deploy", "adult", "--canary", "3")
    assert again.returncode != 0 and "already has an active shadow" in again.stderr
    shown = keel_cli("deployments", "status", "adult")
    assert shown.returncode == 0 and "shadow deployment" in shown.stdout
    aborted = keel_cli("deployments", "abort", "adult", "--reason", "test")
    assert aborted.returncode == 0 and "aborted" in aborted.stdout


def test_route_weights_and_stable_sticky_hash() -> None:
    model = object.__new__(LoadedModel)
    canary = Route("d", "canary", (Arm(model, "canary", 25.0), Arm(None, "primary", 75.0)))
    picks = Counter(canary.choose().role for _ in range(20_000))  # type: ignore[union-attr]
    assert abs(picks["canary"] - 5000) < 4 * math.sqrt(20_000 * 0.25 * 0.75)
    assert len({canary.choose("user-1") for _ in range(50)}) == 1
    assert sticky_value({"user_id": 7, "instances": [{}]}, "user_id") == 7
    assert sticky_value({"instances": [{"user_id": "a"}]}, "user_id") == "a"
    assert sticky_value({"instances": [{}]}, "user_id") is None
    oip = {"inputs": [{"name": "age", "data": [1]}, {"name": "user_id", "data": [["b"], ["c"]]}]}
    assert sticky_value(oip, "user_id") == "b"  # the first value, nested or flat
    assert sticky_value({**oip, "parameters": {"user_id": 9}}, "user_id") == 9
    assert sticky_value({"inputs": [{"name": "user_id", "data": []}]}, "user_id") is None


def test_shadow_disagreement_compares_labels_exactly_and_values_within_a_tolerance() -> None:
    """Two regression versions never give bit-equal values: a shadow 0.5 % off agrees, 5 % off
    disagrees; class labels (strings or integers) disagree only when they differ."""
    from keel.serve.routing import SHADOW_RTOL, disagreements

    assert SHADOW_RTOL == 0.01
    assert disagreements([100.5, 105.0, 0.0, -2.0], [100.0, 100.0, 0.0, -2.1]) == 2
    assert disagreements([">50K", "<=50K", ">50K"], [">50K", ">50K", ">50K"]) == 1
    assert disagreements([0, 1, 1, 2], [0, 1, 0, 3]) == 2
    assert disagreements([1.0], [1]) == 0
    assert disagreements([], []) == 0
