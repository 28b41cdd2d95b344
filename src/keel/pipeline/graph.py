"""The pipeline as a graph of declared steps, checked before anything runs.

Steps come in order (Keel's own, then custom steps placed after the step they name). Each input
binds to the latest step before it that writes that name, so a step that reads and writes one
name (the ``split`` step's ``train_snapshot``, a custom step adding a column) refines it for
the steps after it. Everything wrong with the graph is reported at once, one line each: a
step name used twice, an input no earlier step writes (and which later step does), an output
written twice without being read in between, a kind mismatch, an ``after:`` naming no step or
forming a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keel.errors import ConfigError
from keel.pipeline.declare import ANY, Port, StepSpec

__all__ = ["Bound", "PipelineGraphError", "dependencies", "order_steps", "plan"]

#: Output kind of a data gate: a step reading a snapshot waits for every earlier step writing it.
GATE_KIND = "validation"


class PipelineGraphError(ConfigError):
    """The declared steps do not form a valid pipeline (every problem listed)."""


@dataclass(frozen=True)
class Bound:
    """A step with, per input parameter, the step and output it reads (None: optional, absent).

    Attributes:
        spec: The step.
        sources: Input parameter -> ``(producing step, output name)`` or None.
    """

    spec: StepSpec
    sources: dict[str, tuple[str, str] | None]


def order_steps(base: Sequence[StepSpec], extra: Sequence[StepSpec]) -> list[StepSpec]:
    """``base`` in order, each of ``extra`` right after the last step its ``after`` names (at
    the end when it names none), in declaration order among steps placed at one point.

    Raises:
        PipelineGraphError: An ``after`` names no step, or the ``after`` relations form a cycle.
    """
    placed = list(base)
    pending = list(extra)
    names = {s.name for s in base} | {s.name for s in extra}
    problems = [
        f"{s.where}: after '{a}', which is not a step (steps: {', '.join(sorted(names))})"
        for s in extra
        for a in s.after
        if a not in names
    ]
    if problems:
        raise PipelineGraphError(_joined(problems))
    last: dict[frozenset[str], str] = {}  # extras placed at one point keep their order
    while pending:
        ready = [s for s in pending if all(a in {p.name for p in placed} for a in s.after)]
        if not ready:
            cycle = " -> ".join(f"{s.name} (after {', '.join(s.after)})" for s in pending)
            raise PipelineGraphError(f"custom steps wait on each other in a cycle: {cycle}")
        for spec in ready:
            anchors = set(spec.after) | (
                {last[frozenset(spec.after)]} if frozenset(spec.after) in last else set()
            )
            position = max((i for i, p in enumerate(placed) if p.name in anchors), default=-1)
            placed.insert(position + 1 if spec.after else len(placed), spec)
            last[frozenset(spec.after)] = spec.name
            pending.remove(spec)
    return placed


def plan(steps: Sequence[StepSpec]) -> list[Bound]:
    """Bind every input to the step that writes it; check the whole graph.

    Raises:
        PipelineGraphError: Lists every problem, each naming the step (and its keel.yaml line).
    """
    problems: list[str] = []
    seen: set[str] = set()
    latest: dict[str, tuple[StepSpec, Port]] = {}
    bound: list[Bound] = []
    for index, spec in enumerate(steps):
        if spec.name in seen:
            problems.append(f"{spec.where}: another step has the name '{spec.name}'")
        seen.add(spec.name)
        sources: dict[str, tuple[str, str] | None] = {}
        for port in spec.inputs:
            name = spec.source(port)
            found = latest.get(name)
            if found is None:
                sources[port.name] = None
                if not port.optional:
                    problems.append(_missing(spec, name, steps[index + 1 :]))
                continue
            producer, output = found
            if ANY not in (port.kind, output.kind) and port.kind != output.kind:
                problems.append(
                    f"{spec.where}: input '{port.name}' takes a {port.kind} but '{name}' from "
                    f"step '{producer.name}' is a {output.kind}"
                )
            sources[port.name] = (producer.name, name)
        read = {spec.source(port) for port in spec.inputs}
        for output in spec.outputs:
            if output.name in latest and output.name not in read:
                other = latest[output.name][0].name
                problems.append(
                    f"{spec.where}: writes '{output.name}', which step '{other}' writes too; "
                    f"read it as an input to refine it, or give the output another name"
                )
            latest[output.name] = (spec, output)
        bound.append(Bound(spec, sources))
    if problems:
        raise PipelineGraphError(_joined(problems))
    return bound


def dependencies(bound: Sequence[Bound]) -> dict[str, tuple[str, ...]]:
    """Per step, the steps it waits for: those whose outputs it reads, those its ``after``
    names and, for a step reading a snapshot, every earlier data gate (a step writing a
    ``validation``: bad data stops the run before anything trains on it). Steps with no path
    between them may run at the same time.
    """
    gates: list[str] = []
    waits: dict[str, tuple[str, ...]] = {}
    for item in bound:
        spec = item.spec
        before = {source[0] for source in item.sources.values() if source is not None}
        before |= set(spec.after)
        if any(port.kind == "snapshot" for port in spec.inputs):
            before |= set(gates)
        before.discard(spec.name)
        waits[spec.name] = tuple(sorted(before))
        if any(port.kind == GATE_KIND for port in spec.outputs):
            gates.append(spec.name)
    return waits


def _missing(spec: StepSpec, name: str, later: Sequence[StepSpec]) -> str:
    writers = [s.name for s in later if any(o.name == name for o in s.outputs)]
    if writers:
        return (
            f"{spec.where}: reads '{name}', which only step '{writers[0]}' after it writes; "
            f"run it after '{writers[0]}' (after: {writers[0]})"
        )
    return f"{spec.where}: reads '{name}', which no step writes"


def _joined(problems: list[str]) -> str:
    if len(problems) == 1:
        return f"the pipeline is not valid: {problems[0]}."
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"the pipeline is not valid ({len(problems)} problems):\n{lines}"
