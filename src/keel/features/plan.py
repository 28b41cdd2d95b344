"""Planning a pipeline's chains: which chain each column gets (declared in keel.yaml's
``features.transforms``, or the defaults), each chain's steps from their specs, and the
version-1 state read as a version-2 one. :class:`~keel.features.pipeline.FeaturePipeline`
fits the chains planned here."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError
from keel.features.categorical import OneHot
from keel.features.chain import Chain
from keel.features.numeric import Impute, Standardize
from keel.features.temporal import DatetimeParts
from keel.features.transform import Transform, transform_class

if TYPE_CHECKING:
    from keel.features.custom import CustomFeature

__all__ = ["KINDS", "Defaults", "default_steps", "input_kinds", "make_step", "plan_chains",
           "upgrade_v1"]  # fmt: skip

#: An input's type -> the kind of values its chain reads.
KINDS = {"int": "number", "float": "number", "string": "category", "bool": "category",
         "date": "datetime", "timestamp": "datetime"}  # fmt: skip


@dataclass(frozen=True)
class Defaults:
    """What a column gets when keel.yaml declares no chain for it (``features:`` settings)."""

    numeric_impute: str = "median"
    categorical_impute: str = "most_frequent"
    scale: str = "standard"
    max_categories: int = 50

    def steps(self, kind: str) -> list[Transform]:
        """The default chain of a column of ``kind`` (:func:`default_steps`)."""
        return default_steps(
            kind,
            numeric_impute=self.numeric_impute,
            categorical_impute=self.categorical_impute,
            scale=self.scale,
            max_categories=self.max_categories,
        )


def input_kinds(inputs: Mapping[str, str], custom: Sequence[CustomFeature]) -> dict[str, str]:
    """Every column a chain can read (inputs, then custom outputs) -> its kind.

    Raises:
        ConfigError: A custom feature reads a column that is not an input, or its output
            takes an existing column's name.
    """
    kinds = {name: KINDS[kind] for name, kind in inputs.items()}
    for feature in custom:
        for name in feature.inputs:
            if name not in inputs:
                raise ConfigError(
                    f"features.custom: '{feature.output}' reads '{name}', which is not a "
                    f"feature input{_did_you_mean(name, inputs)}",
                    field="features.custom",
                )
        if feature.output in kinds:
            raise ConfigError(
                f"features.custom: output '{feature.output}' is already a column; pick "
                "another name.",
                field="features.custom",
            )
        kinds[feature.output] = feature.kind
    return kinds


def plan_chains(
    transforms: Sequence[Mapping[str, Any]], kinds: Mapping[str, str], defaults: Defaults
) -> list[Chain]:
    """The chains, in output order: each column's chains (declared or default), then crosses.

    Args:
        transforms: keel.yaml's ``features.transforms`` entries (``columns``, ``steps``).
        kinds: Every column a chain can read -> its kind (:func:`input_kinds`).
        defaults: The chain of a column no entry declares.

    Raises:
        ConfigError: An entry names an unknown column, a step that cannot take its values,
            or a cross of anything but two or more category columns (names the entry).
    """
    declared: dict[str, list[Chain]] = {}
    crosses: list[Chain] = []
    for i, entry in enumerate(transforms):
        where = f"features.transforms[{i}]"
        columns = list(entry.get("columns") or ([entry["column"]] if "column" in entry else []))
        if not columns or not entry.get("steps"):
            raise ConfigError(f"{where}: give columns (or column) and steps.", field=where)
        for name in columns:
            if name not in kinds:
                raise ConfigError(
                    f"{where}: column '{name}' is not a feature input or custom output"
                    f"{_did_you_mean(name, kinds)}",
                    field=f"{where}.columns",
                )
        specs = list(entry["steps"])
        if specs and specs[0].get("kind") == "cross":
            if len(columns) < 2 or any(kinds[c] != "category" for c in columns):
                raise ConfigError(
                    f"{where}: cross takes two or more string/bool columns; got "
                    f"{[f'{c} ({kinds[c]})' for c in columns]}.",
                    field=f"{where}.columns",
                )
            steps = _steps(specs, "categories", where, defaults)
            crosses.append(Chain("*".join(columns), columns, steps, i))
            continue
        for name in columns:
            steps = _steps(specs, kinds[name], where, defaults)
            declared.setdefault(name, []).append(Chain(name, [name], steps, i))
    chains: list[Chain] = []
    for name, kind in kinds.items():
        default = defaults.steps(kind)
        chains += declared.get(name) or [Chain(name, [name], default, None)]
    return chains + crosses


def _steps(
    specs: list[Mapping[str, Any]], kind: str, where: str, defaults: Defaults
) -> list[Transform]:
    steps: list[Transform] = []
    for j, spec in enumerate(specs):
        at = f"{where}.steps[{j}]"
        if kind == "matrix":
            raise ConfigError(
                f"{at}: '{spec.get('kind')}' comes after '{specs[j - 1].get('kind')}', "
                "which already wrote the final columns; move it before, or drop it.",
                field=at,
            )
        step = make_step(spec, at)
        if kind not in step.consumes:
            raise ConfigError(
                f"{at}: '{step.kind}' takes {' or '.join(step.consumes)} values but gets "
                f"{kind} here.",
                field=at,
            )
        steps.append(step)
        kind = step.output_kind(kind)
    if kind != "number" and kind != "matrix":
        steps += defaults.steps(kind)[-1:]
    return steps


def _did_you_mean(name: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f". Did you mean '{close[0]}'?" if close else f". Columns: {', '.join(known)}."


def make_step(spec: Mapping[str, Any], where: str) -> Transform:
    """An unfitted transform from ``{"kind": ..., **params}`` (or ``{"kind", "params"}``).

    Raises:
        ConfigError: Unknown kind or parameter, naming ``where`` and the closest valid name.
    """
    kind = str(spec.get("kind"))
    params = (
        dict(spec["params"]) if "params" in spec else {k: v for k, v in spec.items() if k != "kind"}
    )
    try:
        cls = transform_class(kind)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}", field=where) from exc
    accepted = [
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for name in params:
        if name not in accepted:
            close = difflib.get_close_matches(name, accepted, n=1, cutoff=0.6)
            hint = (
                f" Did you mean '{close[0]}'?"
                if close
                else f" Parameters: {', '.join(accepted) or 'none'}."
            )
            raise ConfigError(f"{where}: unknown parameter '{name}' for {kind}.{hint}", field=where)
    return cls(**params)


def default_steps(
    kind: str, *, numeric_impute: str, categorical_impute: str, scale: str, max_categories: int
) -> list[Transform]:
    """The chain a column gets when keel.yaml declares none (today's behaviour)."""
    if kind == "number":
        steps: list[Transform] = [Impute(strategy=numeric_impute)]
        return [*steps, Standardize()] if scale == "standard" else steps
    if kind == "category":
        strategy = "mode" if categorical_impute == "most_frequent" else "constant"
        return [Impute(strategy=strategy), OneHot(max_categories=max_categories)]
    return [DatetimeParts()]


def upgrade_v1(state: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 state (numeric + categorical specs) as the equivalent version-2 state."""
    specs = sorted(
        [("number", s) for s in state["numeric"]] + [("category", s) for s in state["categorical"]],
        key=lambda pair: int(pair[1]["index"]),
    )
    chains = []
    for kind, spec in specs:
        impute = {"kind": "impute", "params": {"strategy": "constant", "fill_value": None,
                  "indicator": False}, "fitted": {"fill_": spec["fill"]}}  # fmt: skip
        if kind == "number":
            last = {"kind": "standardize", "params": {},
                    "fitted": {"mean_": spec["mean"], "scale_": spec["scale"]}}  # fmt: skip
        else:
            last = {"kind": "one_hot", "params": {"max_categories": len(spec["categories"]),
                    "unseen": "auto"}, "fitted": {"categories_": spec["categories"],
                    "other_": spec["other"], "folded_": []}}  # fmt: skip
        name = spec["name"]
        chains.append({"name": name, "columns": [name], "entry": None, "steps": [impute, last]})
    return {
        "kind": "keel.FeaturePipeline",
        "version": 2,
        "params": dict(state["params"]),
        "custom": [],
        "chains": chains,
        "n_features": state["n_features"],
    }
