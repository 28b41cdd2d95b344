"""Environment variables: one typed table in keel.settings, read when asked, never at import;
no other module reads a setting from os.environ, and the docs list every variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keel.config.reference import render_reference
from keel.settings import PROVIDED, SETTINGS, Settings, load_settings

SRC = Path(__file__).resolve().parents[1] / "src" / "keel"


def test_settings_are_read_when_loaded_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_DB_URL", "sqlite:///a.db")
    first = load_settings()
    monkeypatch.setenv("KEEL_DB_URL", "  sqlite:///b.db ")
    monkeypatch.setenv("KEEL_DEMO_EXIT", "1")
    monkeypatch.setenv("KEEL_EXECUTOR", "")
    second = load_settings()
    assert (first.db_url, second.db_url) == ("sqlite:///a.db", "sqlite:///b.db")
    assert second.demo_exit is True and second.executor is None  # empty means unset


def test_a_mapping_can_stand_in_for_the_environment() -> None:
    settings = load_settings({"KEEL_ARTIFACTS": "s3://bucket/keel", "OTHER": "x"})
    assert settings == Settings(artifacts="s3://bucket/keel")


def test_every_keel_variable_in_the_code_is_in_the_table() -> None:
    named = {s.variable for s in (*SETTINGS, *PROVIDED)}
    found: dict[str, str] = {}
    for path in SRC.rglob("*.py"):
        for variable in re.findall(r"\bKEEL_[A-Z_]+\b", path.read_text(encoding="utf-8")):
            if not variable.startswith("KEEL_TEST_"):  # the test suite's own, not Keel's
                found.setdefault(variable, str(path.relative_to(SRC)))
    missing = {v: where for v, where in found.items() if v not in named}
    assert missing == {}, f"add these to keel.settings.Settings: {missing}"


def test_only_the_settings_module_reads_the_environment() -> None:
    reads = re.compile(r"os\.environ(\.get|\[|\.setdefault)|os\.getenv|getenv\(")
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "settings.py" and path.parent == SRC:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if reads.search(line) and "os.environ[_" not in line:  # ray_train sets Ray's own
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == [], "read settings through keel.settings.load_settings():\n" + "\n".join(
        offenders
    )


def test_the_reference_lists_every_variable_and_plugin_group() -> None:
    text = render_reference()
    for setting in SETTINGS:
        assert f"| `{setting.variable}` |" in text
    for group in ("keel.trainers", "keel.tasks", "keel.online_stores", "keel.executors"):
        assert f"| `{group}` |" in text
