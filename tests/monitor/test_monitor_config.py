"""The monitor: section of keel.yaml: windows, per-feature rules, FDR; mistakes name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.config import load_config
from keel.errors import ConfigError
from keel.monitor.report import settings_of
from keel.monitor.window import parse_window

ADULT = Path(__file__).resolve().parents[2] / "examples" / "adult"


def project(tmp_path: Path, monitor: dict[str, Any]) -> Path:
    config = yaml.safe_load((ADULT / "keel.yaml").read_text())
    config["monitor"] = monitor
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_rules_per_feature(tmp_path: Path) -> None:
    monitor = {
        "psi": {"warn": 0.05, "alert": 0.2},
        "fdr": 0.01,
        "window": "1d",
        "step": "6h",
        "features": {
            "age": {"metric": "wasserstein", "alert": 0.3},
            "fnlwgt": {"ignore": True},
            "sex": {"metric": "psi"},
        },
    }
    config = load_config(project(tmp_path, monitor), env="").monitor
    settings = settings_of(config, parse_window(config.window, config.step))
    assert settings.fdr == 0.01 and settings.window.describe() == "1d every 6h"
    assert settings.features["age"].metric == "wasserstein"
    assert (settings.features["age"].warn, settings.features["age"].alert) == (0.1, 0.3)
    assert settings.features["fnlwgt"].ignore
    assert (settings.features["sex"].warn, settings.features["sex"].alert) == (0.05, 0.2)
    assert settings.prediction == settings.default


@pytest.mark.parametrize(
    ("monitor", "where"),
    [({"window": "2 weeks"}, "monitor.window"),
     ({"features": {"age": {"metric": "ks"}}}, "monitor.features.age.metric"),
     ({"features": {"age": {"warn": 0.5, "alert": 0.2}}}, "monitor.features.age"),
     ({"psi": {"warn": 0.3, "alert": 0.2}}, "monitor.psi"),
     ({"fdr": 2}, "monitor.fdr")],
)  # fmt: skip
def test_mistakes_name_the_key(tmp_path: Path, monitor: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(project(tmp_path, monitor), env="")
    assert where in str(info.value)
