"""Deployments in the server: which version answers a request, and what each version measured.

The server's routing table maps a model name to a :class:`Route` built from its active
deployment (:mod:`keel.registry.rollout`): canary and A/B arms by weight, chosen at random per
request, or by a stable hash of a sticky key's value (a top-level request field, else the first
instance's field; requests without it are split at random), so the same key always lands on the
same arm. An arm whose model is None is the primary: whatever the server's reference (e.g.
``adult``, which is ``adult@<registry.alias>``: the alias the deployment promotes) loads now.
A shadow version gets a copy of each answered predict and OIP infer request through
:class:`~keel.serve.shadow.Shadows`: scored in a child process at idle priority, off the
primary's CPU time and GIL; a full channel drops the copy (counted), the primary never waits;
the server sends the copy only after the answer is handed back, and makes none while primary
predictions are queued (counted). What became of each shadow's copies (made, shed, dropped and
why) is counted per deployment and version in its route's :class:`Copies`, so that ``keel
deployments status`` can say over how many of them a disagreement rate was measured.

:class:`Traffic` counts each (deployment, version, role)'s requests, errors (5xx and model
failures), refusals (4xx: a canary refusing what its primary takes fails its checks) and
latency in the fixed buckets of
:data:`~keel.registry.deployments.LATENCY_EDGES_MS`; :class:`Deployer` runs after each registry
check: it follows the deployments table (one indexed query), loads and warms the versions they
need beside the served ones, swaps the routing table in one assignment, flushes the counts to
``deployment_stats`` (every :data:`FLUSH_EVERY_S`, or a quarter of the shortest canary
interval) and, while it holds the controller lease, runs the canary controller.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from keel.registry.deployments import COVERAGE_ROLES, Deployment, bucket_of, coverage_key
from keel.serve.models import LoadedModel, load_served, warm
from keel.serve.shadow import Shadows

__all__ = [
    "SHADOW_RTOL",
    "Arm",
    "Copies",
    "Deployer",
    "Route",
    "Shadows",
    "Traffic",
    "disagreements",
    "sticky_value",
]

log = logging.getLogger("keel.serve")
_FIRST_PASS = ""  # the key of a failed first pass in Deployer.problems
FLUSH_EVERY_S = 5.0
"""How often a server writes its traffic counts at most (canaries: a quarter interval)."""
_SCALE = float(2**64)


@dataclass(frozen=True)
class Arm:
    """One way a request can go: a loaded version (None: the primary), its role and weight."""

    model: LoadedModel | None
    role: str
    weight: float


class Copies:
    """What became of one (deployment, shadow version)'s copies, counted where it happens:
    made (:meth:`keel.serve.app.ServerApp.mirror`, one addition per mirrored answer), not made
    while primaries were queued (``shed``), dropped unscored (``full``: the buffer was full,
    ``down``: no shadow process took copies, ``lost``: one died holding them,
    :class:`~keel.serve.shadow.Shadows`). Running totals: :meth:`Traffic.drain` writes what
    they gained since it last ran; the copies scored are the shadow's own traffic."""

    __slots__ = ("copies", "down", "full", "lost", "shed")

    def __init__(self) -> None:
        self.copies = self.shed = self.full = self.down = self.lost = 0

    def totals(self) -> tuple[int, int, int, int, int]:
        """In :data:`~keel.registry.deployments.COVERAGE_ROLES` order."""
        return self.copies, self.shed, self.full, self.down, self.lost


@dataclass(frozen=True)
class Route:
    """A model name's active deployment, as the request path needs it.

    Attributes:
        deployment: The deployment's id (stats are keyed by it).
        arms: Canary or A/B arms; empty for a shadow deployment (the primary answers).
        shadow: The shadow version, or None.
        sticky_key: The request field whose value fixes the arm, or None (random).
        versions: Every version this route loaded (for pinned ``/versions/{v}`` requests).
        copies: The shadow's copies counted (the same counter across reloads: the Traffic's).
    """

    deployment: str
    kind: str
    arms: tuple[Arm, ...] = ()
    shadow: LoadedModel | None = None
    sticky_key: str | None = None
    versions: Mapping[str, LoadedModel] = field(default_factory=dict)
    copies: Copies = field(default_factory=Copies)
    _edges: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        total = sum(arm.weight for arm in self.arms) or 1.0
        running, edges = 0.0, []
        for arm in self.arms:
            running += 100.0 * arm.weight / total
            edges.append(running)
        object.__setattr__(self, "_edges", tuple(edges))

    def answering(self, primary: LoadedModel, key: Any = None) -> LoadedModel:
        """The version that answers a request (``key``: its sticky value; None: a random
        draw); the primary when no arm is drawn or the arm's version is not loaded."""
        arm = self.choose(key)
        return primary if arm is None or arm.model is None else arm.model

    def choose(self, key: Any = None) -> Arm | None:
        """The arm for a request whose sticky value is ``key`` (None: random); None: primary."""
        if not self.arms:
            return None
        if key is None:
            point = random.random() * 100.0
        else:
            digest = hashlib.blake2b(str(key).encode(), digest_size=8).digest()
            point = int.from_bytes(digest, "big") / _SCALE * 100.0
        for arm, edge in zip(self.arms, self._edges, strict=True):
            if point < edge:
                return arm
        return self.arms[-1]


def sticky_value(request: Any, key: str) -> Any:
    """``request[key]``, else the first instance's ``key``; for an Open Inference Protocol
    request, its ``parameters[key]``, else the first value of the input tensor named ``key``;
    else None."""
    if not isinstance(request, dict):
        return None
    if key in request and isinstance(request[key], str | int | float):
        return request[key]
    instances = request.get("instances")
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        value = instances[0].get(key)
        if isinstance(value, str | int | float):
            return value
    parameters = request.get("parameters")
    if isinstance(parameters, dict) and isinstance(parameters.get(key), str | int | float):
        return parameters[key]
    inputs = request.get("inputs")
    if isinstance(inputs, list):
        for tensor in inputs:
            if isinstance(tensor, dict) and tensor.get("name") == key:
                value = tensor.get("data")
                while isinstance(value, list) and value:  # row-major, nested or flat
                    value = value[0]
                return value if isinstance(value, str | int | float) else None
    return None


class _Counts:
    __slots__ = ("compared", "disagreed", "errors", "latency", "rejected", "requests")

    def __init__(self) -> None:
        self.requests = self.errors = self.compared = self.disagreed = self.rejected = 0
        self.latency: dict[int, int] = {}


class Traffic:
    """Per (deployment, version, role) request counts and latency histograms (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], _Counts] = {}
        self._copies: dict[tuple[str, str], tuple[Copies, list[int]]] = {}  # totals drained

    def copies(self, deployment: str, version: str) -> Copies:
        """The counter of a (deployment, shadow version)'s copies (made on first use; looked up
        when routes are built and per report, never per request)."""
        with self._lock:
            found = self._copies.get((deployment, version))
            if found is None:
                found = self._copies[(deployment, version)] = (Copies(), [0] * len(COVERAGE_ROLES))
        return found[0]

    def record(
        self,
        deployment: str,
        version: str,
        role: str,
        seconds: float,
        *,
        error: bool = False,
        rejected: bool = False,
        compared: int = 0,
        disagreed: int = 0,
    ) -> None:
        """Count one request (``rejected``: answered 4xx, the request refused as invalid)."""
        bucket = bucket_of(seconds * 1000.0)
        with self._lock:
            counts = self._counts.get((deployment, version, role))
            if counts is None:
                counts = self._counts[(deployment, version, role)] = _Counts()
            counts.requests += 1
            if error:
                counts.errors += 1
            if rejected:
                counts.rejected += 1
            if compared or disagreed:
                counts.compared += compared
                counts.disagreed += disagreed
            latency = counts.latency
            latency[bucket] = latency.get(bucket, 0) + 1

    def merge(
        self,
        deployment: str,
        version: str,
        role: str,
        latency: Mapping[int, int],
        *,
        errors: int = 0,
        compared: int = 0,
        disagreed: int = 0,
    ) -> None:
        """Count requests already summed elsewhere (the shadow process's): ``latency`` maps a
        bucket to its requests, as :meth:`record` would have counted them one by one."""
        with self._lock:
            counts = self._counts.get((deployment, version, role))
            if counts is None:
                counts = self._counts[(deployment, version, role)] = _Counts()
            counts.requests += sum(latency.values())
            counts.errors += errors
            counts.compared += compared
            counts.disagreed += disagreed
            for bucket, n in latency.items():
                counts.latency[bucket] = counts.latency.get(bucket, 0) + n

    def drain(self) -> list[dict[str, Any]]:
        """The counts since the last drain as ``deployment_stats`` values, and reset (with
        what the shadows' copy counters gained meanwhile)."""
        with self._lock:
            taken, self._counts = self._counts, {}
            rows = self._drain_copies()  # under the lock: two drainers never write one gain twice
        return rows + [
            {
                "deployment_id": deployment,
                "version": version,
                "role": role,
                "requests": c.requests,
                "errors": c.errors,
                "rejected": c.rejected,
                "latency": {str(k): v for k, v in sorted(c.latency.items())},
                "compared": c.compared,
                "disagreed": c.disagreed,
            }
            for (deployment, version, role), c in taken.items()
        ]

    def _drain_copies(self) -> list[dict[str, Any]]:
        """Rows for what each shadow's copy counts gained since the last drain (``requests``
        holds the count; stored under :func:`~keel.registry.deployments.coverage_key`)."""
        rows = []
        for (deployment, version), (counter, drained) in self._copies.items():
            for index, total in enumerate(counter.totals()):  # read once: counting goes on
                if total > drained[index]:
                    rows.append({"deployment_id": coverage_key(deployment), "version": version,
                                 "role": COVERAGE_ROLES[index], "requests": total - drained[index],
                                 "errors": 0, "rejected": 0, "latency": {}, "compared": 0,
                                 "disagreed": 0})  # fmt: skip
                    drained[index] = total
        return rows


SHADOW_RTOL = 0.01
"""Numeric predictions (regression values) more than this far apart, relative to the larger
one, disagree; labels of classifiers compare exactly."""


def disagreements(shadow: Sequence[Any], primary: Sequence[Any]) -> int:
    """How many of the shadow's answers disagree with the primary's.

    Class labels disagree when they differ. Regression values from two versions are never
    bit-equal, so numbers disagree when they are more than :data:`SHADOW_RTOL` apart relative
    to the larger magnitude (two zeros agree); integer class labels (0 and 1) stay exact under
    that rule.
    """
    n = min(len(shadow), len(primary))
    numeric = all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in (*shadow[:n], *primary[:n])
    )
    if not numeric:
        return sum(1 for a, b in zip(shadow[:n], primary[:n], strict=True) if a != b)
    import numpy as np

    a = np.asarray(shadow[:n], dtype=float)
    b = np.asarray(primary[:n], dtype=float)
    return int(np.count_nonzero(np.abs(a - b) > SHADOW_RTOL * np.maximum(np.abs(a), np.abs(b))))


class Deployer:
    """Follows the deployments table into the server's routing table; flushes stats; ticks.

    Args:
        project: The served :class:`keel.project.Project`.
        get_models: The server's primaries (name -> loaded model).
        set_routes: Replace the routing table (one assignment).
        traffic: The server's counts, flushed to ``deployment_stats`` each pass.
        interval: Seconds between passes (the lease lasts a few of them).
    """

    def __init__(
        self,
        project: Any,
        get_models: Callable[[], Mapping[str, LoadedModel]],
        set_routes: Callable[[dict[str, Route]], None],
        traffic: Traffic,
        *,
        interval: float = 1.0,
    ) -> None:
        self.project = project
        self.get_models = get_models
        self.set_routes = set_routes
        self.traffic = traffic
        self.lease_s = max(5.0, 3 * interval)
        self.server = f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(3)}"
        self.problems: dict[str, str] = {}
        self.leading = False
        self._loaded: dict[tuple[str, str], LoadedModel] = {}
        self._seen: tuple[Any, ...] = ()
        self._flushed = time.monotonic()

    async def first_pass(self) -> None:
        """Follow the active deployments once, before the server answers (else its first
        requests all go to the primaries). A failure leaves the server up and degraded, its
        readiness naming why, until a later pass succeeds."""
        try:
            await self.follow(await asyncio.to_thread(self._active))
        except Exception as exc:  # the database may be briefly unavailable; retried each pass
            self.problems[_FIRST_PASS] = (
                f"deployments not followed yet (serving the primaries alone; retried every "
                f"pass): could not read the active deployments: {exc}"
            )
            log.warning("%s", self.problems[_FIRST_PASS])

    async def step(self) -> None:
        """One pass: follow, flush, and run the controller when leading."""
        found = await asyncio.to_thread(self._active)
        await self.follow(found)
        self.problems.pop(_FIRST_PASS, None)
        intervals = [d.spec.interval_s for d in found if d.kind == "canary"]
        # a row per version every few seconds (a quarter of the shortest canary interval)
        every = min([FLUSH_EVERY_S, *(i / 4 for i in intervals)])
        if time.monotonic() - self._flushed < every:
            return
        self._flushed = time.monotonic()
        rows = self.traffic.drain()
        if rows or intervals:  # an idle server writes nothing
            await asyncio.to_thread(self._flush_and_tick, rows, bool(intervals))

    def _active(self) -> list[Deployment]:
        from keel.registry.rollout import Rollouts

        return Rollouts(self.project.metadata.database).active()

    async def follow(self, found: Sequence[Deployment]) -> None:
        """Load what the active deployments need; swap the routing table when it changed."""
        models = self.get_models()
        wanted = tuple(
            (d.id, d.name, d.arms, models[d.name].version) for d in found if d.name in models
        )
        if wanted == self._seen:
            return
        routes: dict[str, Route] = {}
        loaded: dict[tuple[str, str], LoadedModel] = {}
        for deployment in found:
            primary = models.get(deployment.name)
            if primary is None:
                continue  # this server does not serve that model
            try:
                route = await self._route(deployment, primary, loaded)
            except Exception as exc:
                self.problems[deployment.name] = (
                    f"deployment {deployment.id} of {deployment.name}: could not load a "
                    f"version (serving the primary alone): {exc}"
                )
                log.warning("%s", self.problems[deployment.name])
                return  # retried next pass; the table is left as it is
            routes[deployment.name] = route
            self.problems.pop(deployment.name, None)
        self._loaded = loaded
        self._seen = wanted
        self.set_routes(routes)  # one assignment: the swap
        shown = ", ".join(f"{n}: {r.kind} deployment {r.deployment}" for n, r in routes.items())
        log.warning("routing: %s", shown or "primaries only")

    async def _route(
        self,
        deployment: Deployment,
        primary: LoadedModel,
        loaded: dict[tuple[str, str], LoadedModel],
    ) -> Route:
        arms, shadow = [], None
        versions: dict[str, LoadedModel] = {}
        for arm in deployment.arms:
            version = str(arm.version)
            model: LoadedModel | None = None
            if arm.role != "primary":
                model = primary
                if version != primary.version:
                    key = (deployment.name, version)
                    model = self._loaded.get(key) or loaded.get(key)
                    if model is None:
                        ref = f"{deployment.name}@{version}"
                        model = await asyncio.to_thread(_load_warm, self.project, ref)
                    loaded[key] = model
                versions[version] = model  # pinned requests: logged as primary
                model = replace(model, role=arm.role)  # routed ones are logged in their role
            if arm.role == "shadow":
                shadow = model
            else:
                arms.append(Arm(model, arm.role, arm.weight))
        if deployment.kind == "canary":  # the rest of the traffic stays with the primary
            arms.append(Arm(None, "primary", max(0.0, 100.0 - sum(a.weight for a in arms))))
        if deployment.spec.sticky_key is not None:
            accept_field(deployment.spec.sticky_key, [primary, *versions.values()])
        copies = Copies() if shadow is None else self.traffic.copies(deployment.id, shadow.version)
        return Route(
            deployment.id,
            deployment.kind,
            tuple(arms),
            shadow,
            deployment.spec.sticky_key,
            versions,
            copies,
        )

    def _flush_and_tick(self, rows: list[dict[str, Any]], canaries: bool) -> None:
        from keel.registry.rollout import Rollouts
        from keel.store import deployment_store as ds
        from keel.store.tables import utc_now

        database = self.project.metadata.database
        now = utc_now()
        with database.write() as conn:
            ds.add_stats(conn, [{**row, "server": self.server, "bucket": now} for row in rows])
            if canaries:  # one server of many drives them
                self.leading = ds.take_lease(conn, self.server, seconds=self.lease_s, now=now)
        if canaries and self.leading:
            config = self.project.config.registry
            rollouts = Rollouts(database, config, actor="keel-controller", alias=config.alias)
            for decision in rollouts.tick():
                log.warning("deployment %s", decision)


def accept_field(name: str, models: Sequence[LoadedModel]) -> None:
    """Let the instances of requests to ``models`` carry field ``name`` that they may not read
    (a deployment's sticky key, e.g. ``user_id``): accepted, and kept in the prediction log,
    instead of refused as an unknown field. A field a model reads stays its input."""
    for model in models:
        pipeline = getattr(model.package, "pipeline", None)
        if pipeline is None:
            continue
        coercer = pipeline.coercer()
        coercer.ignore({*coercer.ignored, name})
        coercer.keep({*coercer.kept, name})


def _load_warm(project: Any, ref: str) -> LoadedModel:
    _, model = load_served(project, ref)
    warm(model)
    return model
