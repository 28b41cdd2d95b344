"""The server's heap while serving: frozen, the youngest generation collected less often."""

from __future__ import annotations

import gc

from keel.serve.heap import YOUNG, serving_heap


def test_the_heap_is_frozen_and_the_threshold_raised_then_both_restored() -> None:
    before = gc.get_threshold()
    long_lived = [[i] for i in range(1000)]
    with serving_heap():
        assert gc.get_threshold() == (YOUNG, *before[1:])
        assert gc.get_freeze_count() >= len(long_lived)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_failure_while_serving_still_restores_the_collector() -> None:
    before = gc.get_threshold()
    try:
        with serving_heap(young=5000):
            assert gc.get_threshold()[0] == 5000
            raise RuntimeError("the server stopped")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
