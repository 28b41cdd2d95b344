"""An alert rule naming a misspelt feature suggests the input it meant (a new user's
`drift.tmp.psi > 0.2` on bike sharing listed twelve inputs and left the reader to find 'temp')."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.config.monitor import MonitorConfig
from keel.errors import ConfigError
from keel.monitor.rules import rules_of

HOUR = Path(__file__).resolve().parents[3] / "shared" / "data" / "bike-sharing" / "hour.csv"
pytestmark = pytest.mark.skipif(not HOUR.exists(), reason="the shared datasets are not here")
SET_ASIDE = {"instant", "dteday", "casual", "registered", "cnt"}


def inputs() -> list[str]:
    """The bike-sharing model's inputs: the file's columns but the target, the date, the
    counter and the two counts the target adds up."""
    header = HOUR.read_text(encoding="utf-8").splitlines()[0].split(",")
    return sorted(set(header) - SET_ASIDE)


@pytest.mark.parametrize(("written", "meant"), [("tmp", "temp"), ("windsped", "windspeed")])
def test_a_misspelt_feature_suggests_the_input(written: str, meant: str) -> None:
    cfg = MonitorConfig.model_validate(
        {"alerts": [{"name": "t", "when": f"drift.{written}.psi > 0.2"}]}
    )
    with pytest.raises(ConfigError) as info:
        rules_of(cfg, inputs=inputs(), task="regression")
    said = info.value.message
    assert f"'{written}' in 'drift.{written}.psi > 0.2' is not an input" in said
    assert said.endswith(f"Did you mean '{meant}'?")
    assert info.value.field == "monitor.alerts[0].when"


def test_no_suggestion_for_a_name_like_none() -> None:
    cfg = MonitorConfig.model_validate({"alerts": [{"name": "t", "when": "drift.zzz.js > 0.1"}]})
    with pytest.raises(ConfigError) as info:
        rules_of(cfg, inputs=inputs(), task="regression")
    assert "Did you mean" not in info.value.message
    assert "(or write drift.any_feature.js)." in info.value.message
    (rule,) = rules_of(  # the input itself is accepted
        MonitorConfig.model_validate({"alerts": [{"name": "t", "when": "drift.temp.psi > 0.2"}]}),
        inputs=inputs(),
        task="regression",
    )
    assert rule.condition.quantity.feature == "temp"
