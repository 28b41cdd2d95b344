"""Declared steps and the graph check: every problem found before anything runs, one line each."""

from __future__ import annotations

from typing import Any

import pytest

from keel.errors import ConfigError
from keel.pipeline.declare import StepSpec, spec_of, step
from keel.pipeline.graph import PipelineGraphError, order_steps, plan


def _spec(name: str, reads: dict[str, str], writes: dict[str, str], **kw: Any) -> StepSpec:
    def fn(ctx: Any, **inputs: Any) -> dict[str, Any]:
        return {}

    declared = spec_of(step(name=name, inputs=reads, outputs=writes)(fn))
    assert declared is not None
    return declared if not kw else StepSpec(**{**declared.__dict__, **kw})


INGEST = _spec("ingest", {}, {"snapshot": "snapshot"})
PROFILE = _spec("profile", {"snapshot": "snapshot"}, {"statistics": "statistics"})
TRAIN = _spec("train", {"snapshot": "snapshot", "statistics": "statistics"}, {"model": "model"})


def test_inputs_bind_to_the_latest_writer_before_them() -> None:
    enrich = _spec("enrich", {"snapshot": "snapshot"}, {"snapshot": "snapshot"}, after=("profile",))
    steps = order_steps([INGEST, PROFILE, TRAIN], [enrich])
    assert [s.name for s in steps] == ["ingest", "profile", "enrich", "train"]
    bound = {b.spec.name: b.sources for b in plan(steps)}
    assert bound["profile"] == {"snapshot": ("ingest", "snapshot")}  # before the refinement
    assert bound["enrich"] == {"snapshot": ("ingest", "snapshot")}
    assert bound["train"]["snapshot"] == ("enrich", "snapshot")  # after it


def test_every_problem_is_listed_at_once() -> None:
    orphan = _spec("orphan", {"nothing": "any"}, {"x": "any"})
    twice = _spec("twice", {}, {"statistics": "statistics"})
    wrong = _spec("wrong", {"model": "snapshot"}, {"y": "any"})
    early = _spec("early", {"late": "any"}, {"z": "any"})
    late = _spec("late_writer", {}, {"late": "any"})
    with pytest.raises(PipelineGraphError) as info:
        plan([INGEST, PROFILE, TRAIN, orphan, twice, wrong, early, late, INGEST])
    message = info.value.message
    assert "(6 problems)" in message
    assert "step 'orphan': reads 'nothing', which no step writes" in message
    assert "step 'twice': writes 'statistics', which step 'profile' writes too" in message
    assert "step 'wrong': input 'model' takes a snapshot but 'model' from step 'train'" in message
    assert "step 'early': reads 'late', which only step 'late_writer' after it writes" in message
    assert "another step has the name 'ingest'" in message
    assert isinstance(info.value, ConfigError)  # exit code 2, no traceback on the CLI


def test_after_a_missing_step_or_in_a_cycle_is_refused() -> None:
    a = _spec("a", {}, {"p": "any"}, after=("b",), origin="keel.yaml:12")
    b = _spec("b", {}, {"q": "any"}, after=("a",), origin="keel.yaml:15")
    with pytest.raises(PipelineGraphError, match=r"cycle: a \(after b\) -> b \(after a\)"):
        order_steps([INGEST], [a, b])
    ghost = _spec("c", {}, {"r": "any"}, after=("trian",), origin="keel.yaml:20")
    with pytest.raises(PipelineGraphError, match=r"step 'c' \(keel.yaml:20\): after 'trian'"):
        order_steps([INGEST, TRAIN], [ghost])


def test_steps_placed_at_one_point_keep_their_order() -> None:
    first = _spec("first", {}, {"f": "any"}, after=("ingest",))
    second = _spec("second", {}, {"s": "any"}, after=("ingest",))
    steps = order_steps([INGEST, PROFILE], [first, second])
    assert [s.name for s in steps] == ["ingest", "first", "second", "profile"]


def test_a_declaration_must_name_outputs_and_real_parameters() -> None:
    with pytest.raises(ConfigError, match="declare its outputs"):
        step(name="x")(lambda ctx: {})
    with pytest.raises(ConfigError, match="input 'table' is not a parameter"):

        @step(inputs={"table": "snapshot"}, outputs={"out": "snapshot"})
        def bad(ctx: Any, tabel: Any) -> dict[str, Any]:
            return {}

    with pytest.raises(ConfigError, match="unknown effect 'deploys'"):
        step(outputs={"x": "any"}, effects=("deploys",))(lambda ctx: {})


def test_inputs_default_to_the_parameters_and_defaults_are_optional() -> None:
    @step(outputs={"out": "any"})
    def fn(ctx: Any, table: Any, extra: Any = None) -> dict[str, Any]:
        return {}

    declared = spec_of(fn)
    assert declared is not None
    assert {(p.name, p.optional) for p in declared.inputs} == {("table", False), ("extra", True)}
