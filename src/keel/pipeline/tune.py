"""The pipeline's ``tune`` step: search (or AutoML), then the ``best_params`` artifact.

The search itself (objective, studies, AutoML, Ray trials) is :mod:`keel.train.search`; this
module declares the step and prepares its data exactly as the ``train`` step does.

It runs before ``train`` when keel.yaml has ``search:`` or ``model.flavor: auto``. The ``train``
step reads ``best_params`` (``{"flavor", "params"}``) and trains the registered model with the
best trial's configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from keel.config import KeelConfig, SearchConfig
from keel.pipeline.declare import spec_of, step

if TYPE_CHECKING:  # imported where used: declaring the step must not load NumPy (keel.train)
    from rich.console import Console

    from keel.pipeline.declare import StepSpec
    from keel.pipeline.runner import StepContext
    from keel.project import Project
    from keel.train.search.objective import Objective, TrialData
    from keel.types import Artifact

__all__ = [
    "STUDIES_DIR",
    "extend_search",
    "search_data",
    "search_objective",
    "study_name",
    "tune_step",
    "tune_steps",
    "tunes",
]

STUDIES_DIR = "studies"
_TUNE_INPUTS = ("train_snapshot", "features")


def tunes(config: KeelConfig) -> bool:
    """Whether the pipeline has a ``tune`` step: ``search:`` is set or ``model.flavor: auto``."""
    return config.search is not None or config.model.flavor == "auto"


def search_objective(config: KeelConfig, search: SearchConfig) -> Objective:
    """What each trial of ``search:`` trains: ``model.flavor`` with ``model.params`` as the base
    that sampled parameters override."""
    from keel.train.search.objective import Objective, check_metric, default_metric

    model = config.model
    metric = search.metric or default_metric(model.task)
    base = model.param_mapping()
    return Objective(
        flavor=model.flavor,
        task=model.task,
        base_params=dict(base),
        space={name: p.model_dump(mode="json") for name, p in search.space.items()},
        metric=metric,
        direction=check_metric(metric, model.task, search.direction),
        seed=model.seed,
        early_stopping_rounds=model.early_stopping_rounds,
        threads=trial_threads(config),
    )


def trial_threads(config: KeelConfig) -> int:
    """Threads each trial trains with: ``resources.cpus`` (1 unless set), locally and on Ray."""
    return max(1, int(config.resources.cpus))


def study_name(config: KeelConfig, objective: Objective, inputs: dict[str, Artifact]) -> str:
    """The study's key: everything that defines its trials, not the budget (so raising
    ``search.trials`` extends the same study)."""
    from keel.train.search.study import study_key

    search = config.search or SearchConfig()
    return study_key(
        objective.to_json(),
        search.sampler,
        search.pruner,
        config.model.validation_fraction,
        config.data.target,
        config.data.positive_label,
        {name: a.sha256 for name, a in sorted(inputs.items())},
    )


def study_state(project: Project, inputs: dict[str, Artifact]) -> str:
    """Size of the study's journal: part of the tune step's cache key, so trials added by
    ``keel tune`` make the next ``keel run`` pick the new best trial."""
    config = project.config
    if config.search is None or config.model.flavor == "auto":
        return ""
    name = study_name(config, search_objective(config, config.search), inputs)
    journal = project.root / ".keel" / STUDIES_DIR / f"{name}.journal"
    return str(journal.stat().st_size) if journal.exists() else "0"


def search_data(ctx: StepContext) -> TrialData:
    """The training data each trial fits on: :func:`keel.pipeline.training.training_data`, the
    same preparation the ``train`` step fits the final model on."""
    from keel.pipeline.training import training_data
    from keel.train.search.objective import TrialData

    data = training_data(ctx.project, ctx.inputs["train_snapshot"], ctx.inputs["features"])
    fit, valid = data.fit_rows, data.valid_rows
    weights = None if data.weights is None else data.weights[fit]
    return TrialData(data.x[fit], data.y[fit], data.x[valid], data.y[valid], sample_weight=weights)


def tune_steps(project: Project) -> list[StepSpec]:
    """The ``tune`` step for ``default_steps`` (empty without ``search:`` or flavor auto):
    ``train_snapshot`` and ``features`` in, ``best_params`` (which ``train`` reads) and the
    ``search`` report out."""
    if not tunes(project.config):
        return []
    declared = spec_of(tune_step)
    assert declared is not None
    return [declared]


def _tune_section(p: Project) -> Any:
    c = p.config
    return [c.search, c.model, c.automl, c.split, c.data.target, c.data.positive_label]


@step(
    name="tune",
    inputs={"train_snapshot": "snapshot", "features": "features"},
    outputs={"best_params": "best-params", "search": "search"},
    section=lambda p: _tune_section(p),
    key=lambda p, inputs: study_state(p, inputs),
)
def tune_step(ctx: StepContext) -> dict[str, Artifact]:
    """Run the search (or AutoML) on the training snapshot; output ``best_params`` and a
    ``search`` report with every trial (or the AutoML leaderboard).

    Args:
        ctx: The step context (inputs ``train_snapshot`` and ``features``).
    """
    from keel.settings import executor_settings
    from keel.train.search.tune import run_search

    project, config = ctx.project, ctx.project.config
    data = search_data(ctx)
    model = config.model
    executor, address = executor_settings(config)
    if model.flavor == "auto":
        from keel.train.search.automl import run_automl

        board = run_automl(
            data, config, metadata=project.metadata, parent_run=ctx.run_id, console=ctx.console
        )
        ctx.facts.update(board.summary())
        best = {"flavor": board.best["flavor"], "params": board.best["params"]}
        report: dict[str, Any] = {"automl": board.rows, **board.summary()}
    else:
        assert config.search is not None  # the step exists only with search: or flavor auto
        search = config.search
        objective = search_objective(config, search)
        inputs = {n: ctx.inputs[n] for n in _TUNE_INPUTS}
        name = study_name(config, objective, inputs)
        result = run_search(
            data,
            objective,
            search,
            study_dir=project.state_dir / STUDIES_DIR,
            study=name,
            metadata=project.metadata,
            parent_run=ctx.run_id,
            console=ctx.console,
            executor=executor,
            ray_address=address,
            resources=config.resources,
        )
        ctx.facts.update(result.summary(), executor=executor)
        best = {"flavor": model.flavor, "params": result.best_params}
        report = {**result.summary(), "trials": result.trials}
    ctx.facts["best_params"] = best["params"]
    return {
        "best_params": _put(ctx, best, "best-params"),
        "search": _put(ctx, report, "search"),
    }


def _put(ctx: StepContext, value: Any, kind: str) -> Artifact:
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    return ctx.project.artifacts.put(data, kind=kind)


def extend_search(project: Project, trials: int, console: Console) -> dict[str, Any]:
    """Run ``trials`` more trials on the project's study, then the rest of the pipeline (the
    model is retrained and registered when the best trial changed).

    Returns:
        ``{"study", "trials_before", "trials_run", "best_trial", "best_value", "metric",
        "best_params", "steps": [...], "model": {"name", "version", "promoted", "metrics"}}``.

    Raises:
        ConfigError: keel.yaml has no ``search:`` section (or uses ``model.flavor: auto``).
    """
    from keel.errors import ConfigError
    from keel.pipeline.runner import run_steps
    from keel.pipeline.standard import default_steps

    config = project.config
    if config.search is None or config.model.flavor == "auto":
        raise ConfigError(
            "keel tune adds trials to a search: add a 'search:' section with a 'space' to "
            "keel.yaml (model.flavor: auto runs its AutoML budget in 'keel run' instead).",
            field="search",
        )
    steps = default_steps(project)
    upto = [s.name for s in steps].index("tune")
    from rich.console import Console as Quiet

    quiet = Quiet(quiet=True)
    available = {}
    for result in run_steps(project, steps[:upto], console=quiet):
        available.update(result.outputs)
    inputs = {n: project.metadata.get_artifact(available[n]) for n in _TUNE_INPUTS}
    name = study_name(config, search_objective(config, config.search), inputs)
    before = _done_in(project.state_dir / STUDIES_DIR / f"{name}.journal", name)
    search = config.search.model_copy(update={"trials": before + trials, "timeout_seconds": None})
    project.config = config.model_copy(update={"search": search})
    results = run_steps(project, default_steps(project), console=console)
    tune = next(r for r in results if r.step == "tune").facts
    evaluate = next(r for r in results if r.step == "evaluate").facts
    register = next((r.facts for r in results if r.step == "register"), {})
    return {
        "study": name,
        "trials_before": before,
        "trials_run": tune.get("trials_run", 0),
        "best_trial": tune.get("best_trial"),
        "best_value": tune.get("best_value"),
        "metric": tune.get("metric"),
        "best_params": tune.get("best_params"),
        "steps": [{"step": r.step, "status": r.status, "run_id": r.run_id} for r in results],
        "model": {
            "name": config.model.name,
            "version": register.get("version"),
            "promoted": register.get("promoted"),
            "metrics": evaluate.get("metrics", {}),
        },
    }


def _done_in(journal: Path, name: str) -> int:
    """Trials the study on disk has done (0 when it does not exist yet)."""
    if not journal.exists():
        return 0
    import optuna

    from keel.train.search.study import done_trials, journal_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=journal_storage(journal))
    except KeyError:
        return 0
    return done_trials(study)
