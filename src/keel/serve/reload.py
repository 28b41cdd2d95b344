"""Hot reload: a running server follows its registry references (aliases) without a restart.

A background task resolves each served reference every ``interval`` seconds (one indexed
query each, run in a thread so the event loop never waits on the database). A bare ``name``
resolves through ``project.metadata``, so it follows ``name@<registry.alias>``: the alias the
register step, ``keel deploy`` and canary promotion move. When a reference
points at another version (a promotion, a rollback), that version's package is loaded beside
the one in service, warmed with one prediction, and swapped in by replacing the server's model
table in one assignment: a request in flight keeps the model it started with, the next one
gets the new one, none fails or waits for the load. A version that fails to load or warm is
not swapped in; :attr:`Reloader.problems` says why (the server's readiness reports it) and the
next check tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from keel.serve.models import LoadedModel, load_served, warm

__all__ = ["Reloader"]

log = logging.getLogger("keel.serve")


class Reloader:
    """Polls the registry and swaps moved references in.

    Args:
        project: The :class:`keel.project.Project` whose registry is followed.
        get_models: The server's current model table (name -> loaded model).
        set_models: Replace the server's model table (one atomic assignment).
        interval: Seconds between checks.
        after: Run after each check (the server's :class:`~keel.serve.routing.Deployer` pass:
            deployments, traffic stats, the canary controller), or None.
    """

    def __init__(
        self,
        project: Any,
        get_models: Callable[[], Mapping[str, LoadedModel]],
        set_models: Callable[[dict[str, LoadedModel]], None],
        *,
        interval: float = 1.0,
        after: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.project = project
        self.after = after
        self.get_models = get_models
        self.set_models = set_models
        self.interval = interval
        self.problems: dict[str, str] = {}  # model name -> why its reload failed
        self.swaps = 0

    async def run(self) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
                if self.after is not None:
                    await self.after()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be briefly unavailable; retry later
                log.warning("registry check failed: %s", exc)

    async def check(self) -> int:
        """One pass over the served references; returns how many models were swapped."""
        swapped = 0
        for name, model in list(self.get_models().items()):
            version = await asyncio.to_thread(self.project.metadata.resolve, model.ref)
            if str(version.version) == model.version:
                self.problems.pop(name, None)
                continue
            try:
                _, fresh = await asyncio.to_thread(self._load, model.ref)
            except Exception as exc:
                self.problems[name] = (
                    f"could not load {model.ref} version {version.version} "
                    f"(still serving version {model.version}): {exc}"
                )
                log.warning("%s", self.problems[name])
                continue
            models = dict(self.get_models())
            models[name] = fresh
            self.set_models(models)  # one assignment: the swap
            self.problems.pop(name, None)
            self.swaps += 1
            swapped += 1
            log.warning(
                "%s: now serving version %s (was %s)", model.ref, fresh.version, model.version
            )
        return swapped

    def _load(self, ref: str) -> tuple[str, LoadedModel]:
        name, fresh = load_served(self.project, ref)
        warm(fresh)
        return name, fresh
