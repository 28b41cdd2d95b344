"""The public API: a curated, lazily imported ``keel.__all__``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import keel

HEAVY = ("lightgbm", "pandas", "fastapi", "sklearn", "sqlalchemy", "uvicorn")


def imported_after(code: str) -> list[str]:
    """Heavy modules present in sys.modules after running ``code`` in a fresh interpreter."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def test_import_keel_is_light() -> None:
    assert imported_after("import keel") == []


def test_config_and_errors_stay_light() -> None:
    assert imported_after("import keel; keel.load_config; keel.ConfigError") == []


def test_probe_detects_a_heavy_import() -> None:
    # guards the probe itself: it must see a heavy module once one is imported
    assert "pandas" in imported_after("import pandas")


def test_all_is_sorted_and_listed_by_dir() -> None:
    names = [n for n in keel.__all__ if n != "__version__"]
    assert names == sorted(names)
    assert "__version__" in keel.__all__
    assert dir(keel) == sorted(keel.__all__)
    assert len(set(keel.__all__)) == len(keel.__all__)


RESOLVE = """
import importlib, json, keel
out = {}
for name in keel.__all__:
    if name == "__version__":
        continue
    value = getattr(keel, name)
    real = getattr(importlib.import_module(keel._EXPORTS[name]), name)
    out[name] = value is real and getattr(keel, name) is value and name in vars(keel)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def resolved() -> dict[str, bool]:
    """Each public name resolved in a fresh interpreter (import order here cannot mask it)."""
    result = subprocess.run(
        [sys.executable, "-c", RESOLVE], capture_output=True, text=True, check=True, timeout=120
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("name", [n for n in keel.__all__ if n != "__version__"])
def test_every_public_name_resolves(name: str, resolved: dict[str, bool]) -> None:
    assert resolved[name] is True


def test_public_verbs_survive_subpackage_imports() -> None:
    code = (
        "import keel\n"
        "first = keel.monitor\n"
        "import keel.monitor.drift\n"
        "assert keel.monitor is first and callable(keel.monitor), keel.monitor\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


def test_lazy_names_are_the_real_objects() -> None:
    from keel.config import load_config
    from keel.errors import ConfigError
    from keel.features.pipeline import FeaturePipeline

    assert keel.load_config is load_config
    assert keel.ConfigError is ConfigError
    assert keel.FeaturePipeline is FeaturePipeline


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        keel.nope  # noqa: B018
    assert not hasattr(keel, "utils")


def test_version() -> None:
    assert isinstance(keel.__version__, str)
    assert keel.__version__.count(".") == 2


def test_the_cli_and_server_modules_leave_heavy_libraries_unimported() -> None:
    # every `keel` command and the server import these; a heavy import here is paid by all
    code = (
        "import sys, json, keel.api, keel.cli, keel.serve.app\n"
        "heavy = ['sklearn', 'scipy', 'torch', 'ray', 'optuna', 'xgboost', 'lightgbm', 'plotly',\n"
        "         'sqlalchemy', 'alembic']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
