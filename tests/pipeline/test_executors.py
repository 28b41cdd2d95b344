"""The local executor: independent steps at once within resources, dependents as soon as their
inputs are written, results as a sequential run gives them; a failure stops new steps; retries
with backoff for transient errors only; cancellation through the database."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

import keel
from keel import api
from keel.config.pipeline import BackoffConfig
from keel.errors import ConfigError
from keel.pipeline.declare import StepResources, StepSpec
from keel.pipeline.executors import load_executor
from keel.pipeline.runner import Cancelled, Step, StepContext, run_steps, transient
from keel.project import Project
from keel.store import pipeline_runs
from keel.types import Artifact

QUIET = Console(quiet=True)
NAP = 0.4  # seconds a "slow" step works: long enough to see overlap, short for the suite


def configure(root: Path, **sections: Any) -> Path:
    config = yaml.safe_load((root / "keel.yaml").read_text())
    for name, value in sections.items():
        config[name] = value
    (root / "keel.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return keel.init(tmp_path / "adult", example="adult")


class Clock:
    """When each step ran (monotonic), to see which overlapped."""

    def __init__(self) -> None:
        self.spans: dict[str, tuple[float, float]] = {}

    def slow(self, name: str, payload: bytes) -> Any:
        def work(ctx: StepContext, **inputs: Artifact) -> dict[str, Artifact]:
            began = time.monotonic()
            time.sleep(NAP)  # the step's work (a C-level wait that releases the GIL)
            data = payload + b"".join(ctx.project.artifacts.get(a.sha256) for a in inputs.values())
            self.spans[name] = (began, time.monotonic())
            return {name: ctx.project.artifacts.put(data, kind="test")}

        work.__name__ = name
        return work

    def overlap(self, one: str, other: str) -> bool:
        (a0, a1), (b0, b1) = self.spans[one], self.spans[other]
        return a0 < b1 and b0 < a1


def slow_step(clock: Clock, name: str, inputs: tuple[str, ...] = ()) -> StepSpec:
    """A step whose code is its own (the steps share one function's source, which would make
    them one cache key)."""
    work = clock.slow(name, name.upper().encode())
    return replace(Step(name, work, inputs, outputs=(name,)), code=f"test-step-{name}")


def diamond(clock: Clock) -> list[StepSpec]:
    """a and b independent; c reads both."""
    return [slow_step(clock, "a"), slow_step(clock, "b"), slow_step(clock, "c", ("a", "b"))]


def test_independent_steps_run_at_once_and_results_equal_a_sequential_run(
    tmp_path: Path,
) -> None:
    parallel_root = configure(keel.init(tmp_path / "p", example="adult"), resources={"cpus": 2})
    serial_root = keel.init(tmp_path / "s", example="adult")  # resources.cpus: 1
    parallel, serial = Clock(), Clock()
    with Project(parallel_root) as proj:
        together = run_steps(proj, diamond(parallel), console=QUIET)
    with Project(serial_root) as proj:
        one_by_one = run_steps(proj, diamond(serial), console=QUIET)
    assert parallel.overlap("a", "b"), "two independent steps within 2 CPUs run at once"
    assert not serial.overlap("a", "b"), "within 1 CPU they take turns"
    for clock in (parallel, serial):  # a dependent starts once both inputs are written
        assert clock.spans["c"][0] >= max(clock.spans["a"][1], clock.spans["b"][1])
    assert [r.step for r in together] == [r.step for r in one_by_one] == ["a", "b", "c"]
    assert [r.outputs for r in together] == [r.outputs for r in one_by_one]


def test_memory_limits_what_runs_at_once(tmp_path: Path) -> None:
    root = configure(
        keel.init(tmp_path / "m", example="adult"), resources={"cpus": 4, "memory": "1GB"}
    )
    clock = Clock()
    big = StepResources(cpus=1, memory=700 * 1024**2)
    steps = [replace(s, resources=big) for s in diamond(clock)[:2]]
    with Project(root) as proj:
        run_steps(proj, steps, console=QUIET)
    assert not clock.overlap("a", "b"), "two 700 MB steps never share a 1 GB budget"


def test_a_step_that_can_never_fit_fails_before_anything_runs(project: Path) -> None:
    configure(project, pipeline={"resources": {"b": {"cpus": 8}}})
    with Project(project) as proj, pytest.raises(ConfigError, match=r"step 'b' asks for 8 CPUs"):
        run_steps(proj, diamond(Clock()), console=QUIET)
    assert api.pipeline_runs(project=project) == []


def test_a_failure_lets_running_steps_finish_and_records_the_rest_not_run(
    project: Path,
) -> None:
    configure(project, resources={"cpus": 2})
    clock = Clock()

    def broken(ctx: StepContext) -> dict[str, Artifact]:
        raise RuntimeError("boom")

    steps = [
        Step("a", broken, outputs=("a",)),
        slow_step(clock, "b"),
        slow_step(clock, "c", ("b",)),
    ]
    with Project(project) as proj, pytest.raises(RuntimeError, match="boom"):
        run_steps(proj, steps, console=QUIET)
    (record,) = api.pipeline_runs(project=project)
    status = {s["step"]: s["status"] for s in record["steps"]}
    assert status == {"a": "failed", "b": "succeeded", "c": "not_run"}
    assert record["status"] == "failed" and "boom" in record["error"]
    assert "c" not in clock.spans


def test_transient_failures_are_retried_with_backoff_and_each_attempt_recorded(
    project: Path,
) -> None:
    configure(
        project,
        pipeline={"retries": {"default": 0, "flaky": 2}, "backoff": {"base": 0.05, "cap": 0.1}},
    )
    calls: list[float] = []

    def flaky(ctx: StepContext) -> dict[str, Artifact]:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise OSError("the share went away")
        return {"out": ctx.project.artifacts.put(b"finally", kind="test")}

    with Project(project) as proj:
        (result,) = run_steps(proj, [Step("flaky", flaky, outputs=("out",))], console=QUIET)
        assert (result.status, result.attempt) == ("succeeded", 3)
        assert calls[1] - calls[0] >= 0.05 and calls[2] - calls[1] >= 0.1  # 0.05, then 0.1
        runs = sorted(proj.metadata.list_runs(step="flaky"), key=lambda r: r.started_at)
    assert [r.status for r in runs] == ["failed", "failed", "succeeded"]
    attempts = keel.runs('step = "flaky" and tags.trigger = "retry"', project=project)
    assert sorted(r["tags"]["attempt"] for r in attempts) == ["2", "3"]
    (record,) = api.pipeline_runs(project=project)
    assert record["steps"][0]["attempt"] == 3 and record["status"] == "succeeded"


def test_a_user_error_is_not_retried(project: Path) -> None:
    configure(project, pipeline={"retries": {"default": 3}, "backoff": {"base": 0.01}})
    calls = []

    def misconfigured(ctx: StepContext) -> dict[str, Artifact]:
        calls.append(1)
        raise ConfigError("keel.yaml:3: data.target 'y' is not a column")

    with Project(project) as proj, pytest.raises(ConfigError, match="not a column"):
        run_steps(proj, [Step("m", misconfigured, outputs=("out",))], console=QUIET)
    assert len(calls) == 1
    assert transient(OSError("disk")) and transient(keel.errors.BackendError("db down"))
    assert not transient(ConfigError("x")) and not transient(Cancelled("stop"))


def test_backoff_is_exponential_and_capped() -> None:
    backoff = BackoffConfig(base=1.0, factor=2.0, cap=5.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_cancel_stops_a_running_step_and_records_cancelled(project: Path) -> None:
    configure(project, resources={"cpus": 2})
    asked: list[float] = []

    def patient(ctx: StepContext) -> dict[str, Artifact]:
        deadline = time.monotonic() + 30
        while not ctx.cancel_requested and time.monotonic() < deadline:
            ctx.cancelled.wait(0.02)  # a safe point every 20 ms
        ctx.check_cancelled()
        return {"out": ctx.project.artifacts.put(b"never", kind="test")}

    def after(ctx: StepContext, out: Artifact) -> dict[str, Artifact]:
        return {"late": out}

    def cancel_once_running() -> None:
        deadline = time.monotonic() + 30
        with Project(project) as other:  # another connection, as `keel runs cancel` has
            database = other.metadata.database
            while time.monotonic() < deadline:
                runs = other.metadata.list_runs(step="patient")
                if runs and runs[0].status == "running":
                    (pipeline,) = pipeline_runs.recent(database, 1)
                    asked.append(time.monotonic())
                    pipeline_runs.request_cancel(database, pipeline.id)
                    return
                time.sleep(0.02)  # polling the database for the step to start

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    steps = [
        Step("patient", patient, outputs=("out",)),
        Step("after", after, inputs=("out",), outputs=("late",)),
    ]
    with Project(project) as proj, pytest.raises(Cancelled, match="cancelled"):
        run_steps(proj, steps, console=QUIET)
    stopped = time.monotonic()
    canceller.join(timeout=5)
    assert asked and stopped - asked[0] < 2.0, "noticed and stopped within about a second"
    (record,) = api.pipeline_runs(project=project)
    assert record["status"] == "cancelled"
    assert {s["step"]: s["status"] for s in record["steps"]} == {
        "patient": "cancelled",
        "after": "not_run",
    }
    with Project(project) as proj:
        (run,) = proj.metadata.list_runs(step="patient")
        assert run.status == "cancelled" and "cancelled" in (run.error or "")
        assert not run.outputs
    found = api.runs('status = "cancelled"', project=project)
    assert [r["id"] for r in found] == [run.id]
    with pytest.raises(keel.errors.ConflictError, match="not running"):
        api.cancel_pipeline_run(record["id"], project=project)


def test_an_unknown_executor_is_a_config_error_listing_the_choices(project: Path) -> None:
    with Project(project) as proj, pytest.raises(ConfigError, match="local, ray"):
        load_executor(proj, "kubernetes")


DECLARED = """
import keel


@keel.step(outputs={"fetched": "report"}, resources={"cpus": 1, "memory": "256MB"}, retries=1)
def fetch(ctx):
    return {"fetched": ctx.put_json({}, kind="report")}
"""


def test_resources_and_retries_come_from_the_step_then_keel_yaml(project: Path) -> None:
    from keel.pipeline.executors import step_calls
    from keel.pipeline.graph import plan
    from keel.pipeline.standard import pipeline_steps

    (project / "fetch_steps.py").write_text(DECLARED, encoding="utf-8")
    configure(
        project,
        resources={"cpus": 4},
        pipeline={
            "retries": {"default": 1, "train": 2},
            "resources": {"train": {"cpus": 2, "memory": "1GB"}},
            "steps": [
                {"function": "fetch_steps:fetch", "retries": 3, "resources": {"cpus": 2}},
            ],
        },
    )
    with Project(project) as proj:
        calls = step_calls(
            proj, plan(pipeline_steps(proj)), use_cache=True, explain=False, reuse={}
        )
    assert (calls["train"].retries, calls["evaluate"].retries, calls["fetch"].retries) == (2, 1, 3)
    assert calls["train"].resources == StepResources(cpus=2, memory=1024**3)
    assert calls["fetch"].resources == StepResources(cpus=2, memory=256 * 1024**2)
    assert calls["evaluate"].resources == StepResources()


def test_bad_step_resources_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="resources has no key 'cores'"):
        keel.step(outputs={"x": "any"}, resources={"cores": 2})(lambda ctx: {})
    with pytest.raises(ConfigError, match=r"resources\.memory"):
        keel.step(outputs={"x": "any"}, resources={"memory": "lots"})(lambda ctx: {})
    with pytest.raises(ConfigError, match="retries=-1"):
        keel.step(outputs={"x": "any"}, retries=-1)(lambda ctx: {})


PLUGIN = """
from keel.pipeline.executors import LocalExecutor

SUBMITTED = []


class CountingExecutor(LocalExecutor):
    name = "counting"

    def submit(self, call):
        SUBMITTED.append(call.spec.name)
        return super().submit(call)
"""


def test_a_plugin_executor_from_an_entry_point_runs_the_steps(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from tests.plugins import write_dist

    site = write_dist(tmp_path / "site", "keel-counting", {
        "keel.executors": {"counting": "keel_counting_executor:CountingExecutor"}
    })  # fmt: skip
    (site / "keel_counting_executor.py").write_text(PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    configure(project, executor="counting")
    with Project(project) as proj:
        results = run_steps(proj, diamond(Clock()), console=QUIET)
    plugin = importlib.import_module("keel_counting_executor")
    assert plugin.SUBMITTED == ["a", "b", "c"] and [r.step for r in results] == ["a", "b", "c"]


def test_a_step_that_stops_itself_cancels_the_run(project: Path) -> None:
    def gives_up(ctx: StepContext) -> dict[str, Artifact]:
        raise Cancelled("the operator pulled the plug")

    def later(ctx: StepContext, out: Artifact) -> dict[str, Artifact]:
        return {"late": out}

    steps = [
        Step("gives_up", gives_up, outputs=("out",)),
        Step("later", later, inputs=("out",), outputs=("late",)),
    ]
    with Project(project) as proj, pytest.raises(Cancelled, match="was cancelled"):
        run_steps(proj, steps, console=QUIET)
    (record,) = api.pipeline_runs(project=project)
    assert record["status"] == "cancelled"
    assert [s["status"] for s in record["steps"]] == ["cancelled", "not_run"]


def test_retries_for_a_step_that_does_not_exist_is_a_config_error(project: Path) -> None:
    configure(project, pipeline={"retries": {"default": 1, "trian": 2}})
    with Project(project) as proj, pytest.raises(ConfigError, match=r"names step 'trian'"):
        run_steps(proj, diamond(Clock()), console=QUIET)
