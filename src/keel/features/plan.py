"""Building chains' steps: from keel.yaml step specs, from the defaults, from a version-1 state."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any

from keel.errors import ConfigError
from keel.features.categorical import OneHot
from keel.features.numeric import Impute, Standardize
from keel.features.temporal import DatetimeParts
from keel.features.transform import Transform, transform_class

__all__ = ["default_steps", "make_step", "upgrade_v1"]


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
