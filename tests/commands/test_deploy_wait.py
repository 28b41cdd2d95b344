"""`keel deploy --canary V --wait` prints each decision once and exits 1 when the canary is
rolled back (California housing, two versions).

What a new user hit (bike sharing, `--interval 3s`): the controller polls several times an
interval and `--wait` printed the same `waiting (p99_ms=9.173, requests=4)` line on every poll,
44 lines in 20 s; and a canary that failed its checks and was rolled back exited 0, so
`keel deploy ... --wait && echo shipped` said shipped.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import keel
from keel.cli import app
from keel.project import Project
from keel.registry.deployments import bucket_of
from keel.store import deployment_store as ds
from tests.housing import needs_housing, two_versions

pytestmark = needs_housing


@pytest.fixture(scope="module")
def housing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 2 holds production; version 1 is the canary."""
    return two_versions(tmp_path_factory.mktemp("wait"), seed=3)


class Traffic:
    """Canary requests written to the deployment stats every 50 ms, from ``after`` seconds on,
    while a deployment is active, as a server would (for at most 10 s)."""

    def __init__(self, root: Path, after: float) -> None:
        self.root = root
        self.after = after
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        deadline = time.monotonic() + 10
        if self.stop.wait(self.after):
            return
        with Project(self.root) as proj:
            while not self.stop.is_set() and time.monotonic() < deadline:
                with proj.metadata.database.write() as conn:
                    for found in ds.active(conn):
                        ds.add_stats(conn, [self._row(found["id"])])
                self.stop.wait(0.05)

    @staticmethod
    def _row(ident: str) -> dict[str, object]:
        return {
            "server": "s1", "deployment_id": ident, "version": "1", "role": "canary",
            "bucket": datetime.now(UTC), "requests": 3, "errors": 0,
            "latency": {str(bucket_of(2.0)): 3}, "compared": 0, "disagreed": 0, "rejected": 0,
        }  # fmt: skip


def _deploy(root: Path, *args: str, after: float = 0.0) -> Result:
    with Traffic(root, after):
        return CliRunner().invoke(
            app,
            ["deploy", "housing", "--canary", "1", "--interval", "300ms", "--wait", *args,
             "-p", str(root)],
            terminal_width=80,
        )  # fmt: skip


def _decisions(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("housing ")]


def test_a_rolled_back_canary_exits_1_and_says_each_decision_once(housing: Path) -> None:
    # no traffic for the first second: the controller's polls meanwhile all find the same
    done = _deploy(
        housing, "--check", "requests>=100000", "--min-requests", "1", "--failures", "2",
        after=1.0,
    )  # fmt: skip
    assert done.exit_code == 1, done.output
    decisions = _decisions(done)
    assert any(": waiting (requests=0)" in line for line in decisions), done.output
    assert any(": bad_interval" in line for line in decisions), done.output
    assert any(": rolled_back" in line for line in decisions), done.output
    assert all(a != b for a, b in itertools.pairwise(decisions)), decisions
    assert "rolled back: v2 takes 100% of the traffic again" in done.output
    assert keel.deployment_status("housing", project=housing)["status"] == "rolled_back"


def test_a_promoted_canary_exits_0(housing: Path) -> None:
    done = _deploy(housing, "--steps", "50,100", "--min-requests", "1")
    assert done.exit_code == 0, done.output
    assert any(": promoted" in line for line in _decisions(done)), done.output
    with keel.registry(housing) as reg:
        assert reg.resolve("housing@production").version == 1
