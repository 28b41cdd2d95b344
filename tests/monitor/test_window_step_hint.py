"""A step without a window says how to give one (a new user's `keel monitor NAME --step 1h`
said only "monitor.window: a step ('1h') needs a window.")."""

from __future__ import annotations

import pytest

from keel.errors import ConfigError
from keel.monitor.window import parse_window


@pytest.mark.parametrize("window", [None, "", "all"])
def test_a_step_without_a_window_gives_an_example(window: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        parse_window(window, "1h")
    said = info.value.message
    assert "a step ('1h') needs a window" in said
    assert "--window 6h --step 1h" in said and "monitor.window" in said
    assert info.value.field == "monitor.window"
    assert parse_window("6h", "1h").describe() == "6h every 1h"  # as the message suggests
