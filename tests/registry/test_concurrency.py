"""Two promoters of one alias at once: one wins, the other gets a ConflictError naming what
moved, and nothing is lost (the audit log and the alias history hold exactly the winner)."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.errors import ConflictError
from keel.registry.registry import Registry
from keel.store import MetadataStore
from keel.testing import postgres_schema

POSTGRES_URL = os.environ.get("KEEL_TEST_POSTGRES_URL")
ROUNDS = 5


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(POSTGRES_URL is None, reason="set KEEL_TEST_POSTGRES_URL"),
            ],
        ),
    ]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/keel.db"
    else:
        assert POSTGRES_URL is not None
        with postgres_schema(POSTGRES_URL) as schema_url:
            yield schema_url


def _race(url: str, expected: int | None, versions: tuple[int, int]) -> list[object]:
    """Two threads, each with its own store, promote at the same instant from the same view."""
    barrier = threading.Barrier(2, timeout=30)
    outcomes: list[object] = [None, None]

    def promoter(slot: int, actor: str, version: int) -> None:
        with MetadataStore(url) as store:
            reg = Registry(store.database, actor=actor)
            barrier.wait()
            try:
                outcomes[slot] = reg.promote("m", version, alias="production", expected=expected)
            except ConflictError as exc:
                outcomes[slot] = exc

    threads = [
        threading.Thread(target=promoter, args=(0, "alice", versions[0])),
        threading.Thread(target=promoter, args=(1, "bob", versions[1])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def test_two_promoters_one_wins_the_other_conflicts(url: str) -> None:
    with MetadataStore(url) as store:
        reg = Registry(store.database, actor="setup")
        for i in range(1 + 2 * ROUNDS):
            reg.register("m", package_sha256=f"{i % 16:x}" * 64, run_id=None, metrics={})
        reg.promote("m", 1, alias="production")
    holder: int | None = 1
    for round_ in range(ROUNDS):
        mine, theirs = 2 + 2 * round_, 3 + 2 * round_
        outcomes = _race(url, holder, (mine, theirs))
        errors = [o for o in outcomes if isinstance(o, ConflictError)]
        moves = [o for o in outcomes if not isinstance(o, ConflictError)]
        assert len(errors) == 1 and len(moves) == 1, outcomes
        winner = moves[0]
        assert getattr(winner, "previous_version", None) == holder
        message = errors[0].message
        assert f"expected version {holder}" in message
        assert f"now holds version {winner.version}" in message  # type: ignore[attr-defined]
        holder = winner.version  # type: ignore[attr-defined]
    with MetadataStore(url) as store:
        reg = Registry(store.database, actor="check")
        assert reg.resolve("m@production").version == holder
        history = reg.alias_history("m", "production")
        # nothing lost, nothing doubled: the setup move plus one winner per round, chained
        assert len(history) == 1 + ROUNDS
        chain = [(h.previous_version, h.version) for h in reversed(history)]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(chain))
        assert len(reg.audit(action="promote")) == 1 + ROUNDS


def test_two_first_promotions_of_an_unset_alias(url: str) -> None:
    with MetadataStore(url) as store:
        reg = Registry(store.database, actor="setup")
        for i in range(2):
            reg.register("m", package_sha256=f"{i}" * 64, run_id=None, metrics={})
    outcomes = _race(url, None, (1, 2))
    errors = [o for o in outcomes if isinstance(o, ConflictError)]
    assert len(errors) == 1, outcomes
    assert "you expected unset" in errors[0].message
