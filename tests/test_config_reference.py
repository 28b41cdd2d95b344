"""docs/keel-yaml.md is generated from the config models: every key documented, no drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from keel.config import KeelConfig
from keel.config.reference import REGENERATE, render_reference, undocumented_fields

DOCS = Path(__file__).resolve().parents[1] / "docs" / "keel-yaml.md"


def test_the_committed_reference_is_the_generated_one() -> None:
    committed = DOCS.read_text(encoding="utf-8") if DOCS.exists() else ""
    assert committed == render_reference(), (
        "docs/keel-yaml.md differs from the config models; regenerate it with "
        f"`.venv/bin/{REGENERATE}` and commit the result."
    )


def test_every_key_has_a_description() -> None:
    missing = undocumented_fields()
    assert missing == [], (
        f"add Field(description=...) in src/keel/config/ to: {', '.join(missing)}; then "
        f"`.venv/bin/{REGENERATE}`"
    )


def test_every_top_level_key_and_section_is_in_it() -> None:
    text = render_reference()
    for name, field in KeelConfig.model_fields.items():
        assert f"| `{field.alias or name}` |" in text
    for heading in ("## `data.train`", "## `model.params`", "## Transform step kinds"):
        assert heading in text
    assert "| `learning_rate` | number (> 0) | `0.05` |" in text


def test_the_module_prints_it() -> None:
    done = subprocess.run([sys.executable, "-m", "keel.config.reference"], capture_output=True,
                          text=True, check=True, timeout=60)  # fmt: skip
    assert done.stdout == render_reference()
