"""The ``evaluate`` step: the model's metrics on the test snapshot (:mod:`keel.evaluate` does the
judging; this module wires the step's inputs to it). Declared in :mod:`keel.pipeline.standard`.
"""

from __future__ import annotations

from keel.errors import ConfigError
from keel.pipeline.runner import StepContext
from keel.pipeline.steps import _json, _put_json, coerce_inputs, read_snapshot
from keel.pipeline.training import target_labels
from keel.types import Artifact

__all__ = ["evaluate"]


def evaluate(ctx: StepContext) -> dict[str, Artifact]:
    """Metrics with bootstrap intervals on the test data, overall and per slice; calibration or
    residuals; worst slices; fairness by ``data.sensitive``; the champion comparison; and
    every gate's verdict (:mod:`keel.evaluate.evaluation`)."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from keel.evaluate.evaluation import (
        evaluate_predictions,
        mean_abs_shap_tasks,
        permutation_of,
    )
    from keel.evaluate.explain import ModelParts
    from keel.evaluate.footprint import measure_footprint
    from keel.evaluate.importance import PermutationImportance
    from keel.evaluate.workshare import Workshare
    from keel.features.pipeline import FeaturePipeline
    from keel.pipeline.evaluation_inputs import (
        champion_predictions,
        evaluation_columns,
        numeric_groupings,
    )
    from keel.train.bundle import load_bundle

    project, cfg = ctx.project, ctx.project.config
    table = read_snapshot(project, ctx.inputs["test_snapshot"])
    pipe = FeaturePipeline.from_state(_json(project, ctx.inputs["features"]))
    model, bundle, files = load_bundle(project.artifacts, ctx.inputs["model"])
    y, classes = target_labels(project, table, classes=bundle["classes"] or None)
    sample = table.select(list(pipe.inputs)).slice(0, 200).to_pylist()
    footprint = measure_footprint(pipe, model, sample, files)  # first and alone: it times latency
    x = pipe.transform(coerce_inputs(ctx, pipe, table, "test", validated=True))
    parts = ModelParts(pipe, model, bundle["task"], bundle["flavor"], list(classes))
    seed = cfg.evaluate.bootstrap.seed
    # Two threads share the work (keel.evaluate.workshare): a helper runs permutation
    # importance (it needs no prediction of the test set, so it starts while LightGBM makes
    # it), then takes queued tasks; this thread predicts, queues mean |SHAP|'s rows in blocks,
    # and judges, its bootstrap resamples in blocks too. Whichever thread is free takes the
    # next task; LightGBM calls in tasks use one thread.
    work = Workshare()

    def helper() -> PermutationImportance | None:
        try:
            return permutation_of(parts, x, y, seed=seed, threads=1)
        finally:
            work.serve()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="keel-explain") as pool:
        permuted = pool.submit(helper)
        try:
            prediction = model.predict(x)  # once: every part below reads it
            shap_tasks, shap_of = mean_abs_shap_tasks(parts, x, prediction, threads=1)
            explained = work.post(shap_tasks)
            slices, sensitive, search = evaluation_columns(project, table, list(pipe.inputs))
            champion = champion_predictions(ctx, table, classes)
            try:
                evaluation = evaluate_predictions(
                    bundle["task"], y, prediction, config=cfg.evaluate, classes=classes,
                    flavor=bundle["flavor"], slices=slices, sensitive=sensitive,
                    search=search, champion=champion, footprint=footprint, run=work.map,
                )  # fmt: skip
            except ValueError as exc:  # the comparison's metric is not one of the task's
                field = "evaluate.challenger_vs_champion.metric"
                raise ConfigError(f"{field}: {exc}.", field=field) from exc
            importance = shap_of(explained.result())
        finally:
            work.close()
        permutation = permuted.result()
    evaluation = replace(evaluation, importance=importance, permutation=permutation)
    for warning in numeric_groupings(slices, sensitive):
        ctx.warn(warning)
    if sensitive and bundle["task"] == "regression":  # said, not silently skipped
        unsliced = [n for n in sensitive if n not in slices]
        where = (
            f"add {', '.join(unsliced)} to evaluate.slices for them"
            if unsliced
            else "they are in the slices (keel models show)"
        )
        ctx.warn(
            f"data.sensitive ({', '.join(sensitive)}): a regression model gets no fairness "
            "audit (selection rate, TPR and FPR per group need a classifier's decisions); "
            f"its metrics per group come from evaluate.slices: {where}."
        )
    report = evaluation.to_json()
    # numbers only: a metric that cannot be computed (None) is left out of the tracked facts
    ctx.facts["metrics"] = {
        k: v
        for k, v in report["metrics"].items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    failed = [g.gate for g in evaluation.gates if not g.passed]
    ctx.facts.update(gates_judged=len(evaluation.gates), gates_failed=len(failed),
                     worst_slices=len(evaluation.worst_slices))  # fmt: skip
    return {"evaluation": _put_json(ctx, report, "evaluation")}
