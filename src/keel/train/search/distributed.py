"""Search trials as Ray tasks (``executor: ray`` or ``KEEL_EXECUTOR=ray``; extra ``ray``).

The driver keeps the Optuna study (journal on local disk, so the search stays resumable) and
asks for parameters; each trial trains in a Ray task that declares ``resources:`` from keel.yaml
(``num_cpus``, ``num_gpus``, ``memory``), at most ``search.workers`` at a time. The data goes
into Ray's object store once and every task reads it from there.

Before anything is submitted the request is compared with every alive node: Ray Tune waits
forever for a placement no node can give; Keel fails at once with a message naming the request
and the cluster's capacity. Pruning needs intermediate values while a trial runs, which a task on
another machine cannot report to the driver's study, so with Ray every trial runs to its end
(its learning curve is still recorded).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from keel.config import ResourcesConfig
from keel.errors import ConfigError, KeelError
from keel.settings import executor_settings
from keel.train.search.objective import Objective, TrialData, TrialOutcome, parse_space, suggest
from keel.train.search.study import Budget, TrialRecorder, trial_facts

if TYPE_CHECKING:
    import optuna


__all__ = [
    "RayTrials",
    "check_feasible",
    "check_worker_group",
    "executor_settings",
    "optimize_on_ray",
    "ray_session",
    "trial_task",
]

_INSTALL = "Install Ray with: pip install 'keel[ray]'."


def _ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"executor: ray needs Ray ({exc.name} is not installed). {_INSTALL}"
        ) from exc
    return ray


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """The ``ray`` module, connected: reuses a running connection, else starts or joins one
    (``address``) and shuts it down afterwards."""
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a new local instance"
        raise ConfigError(
            f"cannot connect to Ray at {where}: {exc}. Check ray_address / KEEL_RAY_ADDRESS "
            "(e.g. ray://head:10001 or auto), or unset it to start a local instance.",
            field="ray_address",
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _describe(cpus: float, gpus: float, memory: float | None) -> str:
    shown = "unset" if memory is None else f"{memory / 1024**3:.1f} GiB"
    return f"{cpus:g} CPU, {gpus:g} GPU, memory {shown}"


def check_feasible(request: ResourcesConfig, nodes: list[Mapping[str, Any]]) -> None:
    """Raise unless at least one alive node can hold one trial's ``request``.

    Args:
        request: ``resources:`` from keel.yaml.
        nodes: ``ray.nodes()``.

    Raises:
        ConfigError: No node fits; the message names the request and each node's capacity.
    """
    alive = _alive(nodes)
    if any(_slots(request, node) for node in alive):
        return
    each = _describe(request.cpus, request.gpus, request.memory_bytes())
    raise ConfigError(
        f"resources: each trial asks for {each}, but no Ray node can hold that: the cluster has "
        f"{_capacity(alive)}. Lower "
        "resources.cpus / gpus / memory in keel.yaml to fit one node, or add bigger nodes to the "
        "cluster.",
        field="resources",
    )


def check_worker_group(
    request: ResourcesConfig, workers: int, nodes: list[Mapping[str, Any]]
) -> None:
    """Raise unless the alive nodes can hold ``workers`` Ray Train workers of ``request`` each.

    Ray Train places the workers as a placement group and waits, without end or error, for
    one the cluster can never give; this check turns that into an immediate error.

    Args:
        request: What one worker asks for (``resources:`` from keel.yaml).
        workers: How many workers (``resources.workers``).
        nodes: ``ray.nodes()``.

    Raises:
        ConfigError: The workers do not fit; the message names the request and each node's
            capacity.
    """
    alive = _alive(nodes)
    fits = sum(_slots(request, node) for node in alive)
    if fits >= workers:
        return
    each = _describe(request.cpus, request.gpus, request.memory_bytes())
    raise ConfigError(
        f"resources: data-parallel training asks for {workers} workers x ({each}), but the Ray "
        f"cluster can hold {fits} such worker(s): it has {_capacity(alive)}. Lower "
        "resources.workers or resources.cpus / gpus / memory in keel.yaml, or add nodes to the "
        "cluster.",
        field="resources",
    )


def _alive(nodes: list[Mapping[str, Any]]) -> list[Mapping[str, float]]:
    return [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]


def _slots(request: ResourcesConfig, node: Mapping[str, float]) -> int:
    """How many copies of ``request`` fit in one node's total resources."""
    memory = request.memory_bytes()
    counts = [int(node.get("CPU", 0.0) // request.cpus)]
    if request.gpus:
        counts.append(int(node.get("GPU", 0.0) // request.gpus))
    if memory is not None:
        counts.append(int(node.get("memory", 0.0) // memory))
    return min(counts)


def _capacity(alive: list[Mapping[str, float]]) -> str:
    each = "; ".join(
        _describe(n.get("CPU", 0.0), n.get("GPU", 0.0), n.get("memory")) for n in alive
    )
    total = sum(n.get("CPU", 0.0) for n in alive)
    return f"{len(alive)} alive node(s), {total:g} CPUs in all ({each or 'no nodes'})"


def run_remote_trial(
    objective: dict[str, Any], data: TrialData, params: dict[str, Any]
) -> dict[str, Any]:
    """The body of a Ray task: one trial, its outcome or its error as plain data."""
    from keel.train.search.objective import train_trial

    try:
        outcome = train_trial(Objective.from_json(objective), data, params)
    except KeelError as exc:
        return {"keel_error": exc.message}
    except Exception as exc:  # reported as a failed trial, like a local one
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "value": outcome.value,
        "history": outcome.history,
        "best_iteration": outcome.best_iteration,
        "seconds": outcome.seconds,
        "facts": outcome.facts,
    }


def trial_task(ray: Any, request: ResourcesConfig) -> Any:
    """:func:`run_remote_trial` as a Ray remote function asking for ``request``, after checking
    that some alive node can hold it (see :func:`check_feasible`)."""
    check_feasible(request, ray.nodes())
    options: dict[str, Any] = {"num_cpus": request.cpus, "num_gpus": request.gpus}
    if request.memory_bytes() is not None:
        options["memory"] = request.memory_bytes()
    return ray.remote(run_remote_trial).options(**options)


def optimize_on_ray(
    study: optuna.Study,
    objective: Objective,
    data: TrialData,
    budget: Budget,
    *,
    recorder: TrialRecorder,
    renumber: int,
    workers: int,
    address: str | None,
    resources: ResourcesConfig | None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Run the budget as Ray tasks, ``workers`` at a time; returns the number of trials run.

    Raises:
        ConfigError: Ray is missing or unreachable, or no node fits one trial's resources.
        KeelError: A trial failed with a Keel error (e.g. an unknown parameter).
    """
    with ray_session(address) as ray:
        task = trial_task(ray, resources or ResourcesConfig())
        data_ref = ray.put(data)
        runner = RayTrials(study, objective, recorder, renumber, on_trial)
        asked = 0
        while True:
            while len(runner.pending) < workers and not budget.exhausted(asked):
                trial, params = runner.ask()
                runner.pending[task.remote(objective.to_json(), data_ref, params)] = (trial, params)
                asked += 1
            if not runner.pending:
                return asked
            left = None if budget.deadline is None else max(budget.deadline - time.monotonic(), 0)
            ready, _ = ray.wait(list(runner.pending), num_returns=1, timeout=left)
            if not ready:  # the time budget ran out with trials still running
                for ref in list(runner.pending):
                    ray.cancel(ref, force=True)
                    runner.tell(ref, {"error": "the search's time budget ran out"}, pruned=True)
                return asked
            runner.tell(ready[0], ray.get(ready[0]))


class RayTrials:
    """The driver's bookkeeping: Optuna trials and their runs, by Ray object reference."""

    def __init__(
        self,
        study: optuna.Study,
        objective: Objective,
        recorder: TrialRecorder,
        renumber: int,
        on_trial: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.study, self.objective, self.recorder = study, objective, recorder
        self.renumber, self.on_trial = renumber, on_trial
        self.space = parse_space(objective.space)
        self.pending: dict[Any, tuple[optuna.Trial, dict[str, Any]]] = {}
        self.runs: dict[int, str | None] = {}
        self.numbers: dict[int, int] = {}

    def ask(self) -> tuple[optuna.Trial, dict[str, Any]]:
        trial = self.study.ask()
        number = trial.number + 1 - self.renumber
        self.numbers[trial.number] = number
        params = suggest(trial, self.space)
        self.runs[trial.number] = run_id = self.recorder.start(number, params)
        if run_id is not None:
            trial.set_user_attr("run_id", run_id)
        return trial, params

    def tell(self, ref: Any, result: dict[str, Any], *, pruned: bool = False) -> None:
        from optuna.trial import TrialState

        trial, params = self.pending.pop(ref)
        number = self.numbers.pop(trial.number)
        run_id = self.runs.pop(trial.number)
        outcome = None
        if "value" in result:
            outcome = TrialOutcome(
                value=float(result["value"]),
                history=result["history"],
                best_iteration=result["best_iteration"],
                seconds=float(result["seconds"]),
                facts=result["facts"],
            )
            from keel.train.search.tune import reported

            # the learning curve, reported after the fact (sparse, as local trials report it)
            for step, value in enumerate(outcome.history.get(self.objective.metric, []), 1):
                if reported(step):
                    trial.report(float(value), step)
            self.study.tell(trial, outcome.value)
            state = "complete"
        else:
            state = "pruned" if pruned else "fail"
            self.study.tell(trial, state=TrialState.PRUNED if pruned else TrialState.FAIL)
        facts = trial_facts(self.objective, number, params, state, outcome, self.recorder.study)
        message = result.get("keel_error") or result.get("error")
        if message:
            facts["error"] = message
        self.recorder.finish(run_id, state, outcome, facts)
        if self.on_trial is not None:
            self.on_trial({"trial": number, "state": state, "value": outcome and outcome.value})
        if "keel_error" in result:  # every trial would fail the same way: stop the search
            for other in list(self.pending):
                _ray().cancel(other, force=True)
                self.tell(other, {"error": "cancelled: another trial failed"})
            raise KeelError(str(result["keel_error"]))
