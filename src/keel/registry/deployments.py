"""Deployments as values: arms, checks, the spec, the latency histogram and merged traffic.

A deployment routes one model name's traffic across versions: ``canary`` (a new version takes
a stepped share while its checks hold), ``shadow`` (the primary answers; a copy of each request
goes to the shadow version, whose answers are logged and compared, never returned) and ``ab``
(fixed weights, sticky by a request key). :mod:`keel.registry.rollout` stores and drives them;
the server (:mod:`keel.serve.routing`) routes by them.

Latency is counted in :data:`LATENCY_EDGES_MS`, fixed log-spaced buckets (each 30 % wider than
the one before, 10 µs to ~2.5 min), so histograms from many servers and intervals merge by
adding counts and a percentile is read off the merged counts (an upper bound within 30 %).
A shadow's :class:`Coverage` says what became of its copies (scored, dropped and why, shed),
read from the rows servers store under :func:`coverage_key` (:func:`with_coverage`).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from keel.errors import ConfigError

__all__ = [
    "CANARY_ONLY",
    "COVERAGE_ROLES",
    "LATENCY_EDGES_MS",
    "Arm",
    "Check",
    "Coverage",
    "Deployment",
    "Measured",
    "Spec",
    "bucket_of",
    "coverage_key",
    "parse_ab",
    "parse_checks",
    "parse_interval",
    "parse_steps",
    "refuse_unused",
    "rejects_more",
    "with_coverage",
]

Kind = Literal["canary", "shadow", "ab"]
Status = Literal["active", "promoted", "rolled_back", "aborted"]
Role = Literal["primary", "canary", "shadow", "ab"]

LATENCY_EDGES_MS: tuple[float, ...] = tuple(0.01 * 1.3**k for k in range(64))
"""Upper edges of the latency buckets in milliseconds; one more bucket holds the rest."""
_LOG_GROWTH = math.log(1.3)
METRICS = ("error_rate", "rejection_rate", "p50_ms", "p95_ms", "p99_ms", "requests")
"""What a check may bound."""
_CLAUSE = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def bucket_of(milliseconds: float) -> int:
    """The latency bucket of one observation (``len(LATENCY_EDGES_MS)`` for the overflow).

    Counted once per served request: the edge is bisected, and only within a millionth of an
    edge (where the logarithm's rounding decides) is the logarithm taken.
    """
    bucket = bisect_left(LATENCY_EDGES_MS, milliseconds)
    low, high = _GUARDS[bucket]
    return bucket if low < milliseconds < high else _logarithmic(milliseconds)


def _logarithmic(milliseconds: float) -> int:
    if milliseconds <= LATENCY_EDGES_MS[0]:
        return 0
    index = math.ceil(math.log(milliseconds / LATENCY_EDGES_MS[0]) / _LOG_GROWTH - 1e-9)
    return min(index, len(LATENCY_EDGES_MS))


def _guards() -> tuple[tuple[float, float], ...]:
    """Per bisected bucket ``i`` (``LATENCY_EDGES_MS[i - 1] < ms <= LATENCY_EDGES_MS[i]``),
    the open interval where :func:`_logarithmic` is ``i`` for sure: all of it but a millionth
    (relative) at either edge. Bucket 0 (``ms`` at or below the first edge) is 0 whatever
    ``ms``."""
    edges = LATENCY_EDGES_MS
    near = 1e-6
    guards = [(-math.inf, math.inf)]
    for i in range(1, len(edges) + 1):
        high = edges[i] * (1.0 - near) if i < len(edges) else math.inf
        guards.append((edges[i - 1] * (1.0 + near), high))
    return tuple(guards)


_GUARDS = _guards()


@dataclass(frozen=True)
class Check:
    """One bound a canary's own traffic must meet, e.g. ``p99_ms <= 50``."""

    metric: str
    op: str
    bound: float

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` meets the bound (an undefined value does not)."""
        if value is None:
            return False
        return {
            "<=": value <= self.bound,
            "<": value < self.bound,
            ">=": value >= self.bound,
            ">": value > self.bound,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


def parse_checks(text: str) -> tuple[Check, ...]:
    """``"error_rate<=0.01,p99_ms<=50"`` -> checks.

    Raises:
        ConfigError: A clause is malformed or names an unknown metric (the clause is named).
    """
    checks = []
    for clause in text.split(","):
        if not clause.strip():
            continue
        found = _CLAUSE.match(clause)
        if found is None:
            msg = (
                f"bad check clause {clause.strip()!r} in check {text!r}: write METRIC<=NUMBER "
                f"(or <, >=, >), e.g. 'error_rate<=0.01,p99_ms<=50'."
            )
            raise ConfigError(msg, field="check")
        metric, op, number = found.groups()
        if metric not in METRICS:
            msg = (
                f"bad check clause {clause.strip()!r}: unknown metric {metric!r}; use one of "
                f"{', '.join(METRICS)}."
            )
            raise ConfigError(msg, field="check")
        try:
            bound = float(number)
        except ValueError:
            msg = f"bad check clause {clause.strip()!r}: {number!r} is not a number."
            raise ConfigError(msg, field="check") from None
        checks.append(Check(metric, op, bound))
    if not checks:
        raise ConfigError(f"check {text!r} has no clause, e.g. 'error_rate<=0.01'.", field="check")
    return tuple(checks)


def parse_steps(text: str) -> tuple[float, ...]:
    """``"5,25,50,100"`` -> increasing traffic percentages in (0, 100]."""
    try:
        steps = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        msg = f"steps {text!r}: write increasing percentages, e.g. 5,25,50,100."
        raise ConfigError(msg, field="steps") from None
    if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
        msg = (
            f"steps {text!r}: percentages must increase, each above 0 and at most 100, "
            "e.g. 5,25,50,100."
        )
        raise ConfigError(msg, field="steps")
    return steps


def parse_interval(text: str) -> float:
    """``"5m"``, ``"30s"``, ``"1.5"`` (seconds), ``"500ms"``, ``"1d"`` -> seconds (>= 0.1)."""
    found = _DURATION.match(text)
    if found is None or float(found.group(1)) * _UNITS[found.group(2)] < 0.1:
        msg = (
            f"interval {text!r}: write a duration of at least 100ms, a number and one of "
            "ms, s, m, h, d, w (a bare number is seconds), e.g. 30s, 5m or 1h."
        )
        raise ConfigError(msg, field="interval")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_ab(text: str) -> tuple[tuple[int, float], ...]:
    """``"3:50,4:50"`` -> ((version, weight), ...): at least two distinct versions."""
    arms = []
    for part in (p for p in text.split(",") if p.strip()):  # a trailing comma names no arm
        version, sep, weight = part.strip().partition(":")
        try:
            arm = (int(version), float(weight) if sep else 1.0)
        except ValueError:
            msg = (
                f"A/B arms {text!r}: bad arm {part.strip()!r}; write VERSION:WEIGHT, "
                "e.g. 3:50,4:50."
            )
            raise ConfigError(msg, field="arms") from None
        if arm[0] < 1 or not arm[1] > 0 or not math.isfinite(arm[1]):
            msg = f"A/B arms {text!r}: arm {part.strip()!r} needs a version >= 1 and a weight > 0."
            raise ConfigError(msg, field="arms")
        arms.append(arm)
    named = [v for v, _ in arms]
    twice = sorted({v for v in named if named.count(v) > 1})
    if twice:
        msg = (
            f"A/B arms {text!r}: version {', '.join(map(str, twice))} is named more than once; "
            "give each version one weight, e.g. 3:50,4:50."
        )
        raise ConfigError(msg, field="arms")
    if len(arms) < 2:
        msg = f"A/B arms {text!r}: name at least two different versions, e.g. 3:50,4:50."
        raise ConfigError(msg, field="arms")
    return tuple(arms)


CANARY_ONLY = ("steps", "interval", "check", "failures", "min_requests", "wait")
"""What only a canary has; a shadow or A/B deployment refuses them rather than ignore them."""


def refuse_unused(
    kind: str,
    given: Sequence[str],
    *,
    spell: Callable[[str], str] = str,
    instead: str = "deploy with --canary VERSION",
) -> None:
    """Refuse what ``kind`` would silently ignore: a shadow or A/B deployment has no steps,
    interval, checks or wait, and a shadow no arms to stick to (``sticky_key``).

    Args:
        kind: ``canary``, ``shadow`` or ``ab``.
        given: The options set on purpose, by their names in :data:`CANARY_ONLY` (or
            ``sticky_key``).
        spell: How the caller's users write an option (``--min-requests`` at the command
            line, ``min_requests`` over REST).
        instead: What to do for a canary instead.

    Raises:
        ConfigError: Naming each option that does not apply, why, and what to do.
    """
    if kind == "canary":
        return
    unused = [o for o in given if o in CANARY_ONLY or (kind == "shadow" and o == "sticky_key")]
    if not unused:
        return
    reasons = []
    if unused != ["sticky_key"]:
        reasons.append("only a canary steps its traffic up and checks it")
    if "sticky_key" in unused:
        reasons.append("a shadow gets a copy of every request: there is no arm to stick to")
    one = len(unused) == 1
    msg = (
        f"{', '.join(spell(o) for o in unused)} {'does' if one else 'do'} not apply to "
        f"{'a shadow' if kind == 'shadow' else 'an A/B'} deployment ({'; '.join(reasons)}): "
        f"drop {'it' if one else 'them'}, or {instead}."
    )
    raise ConfigError(msg, field=unused[0], details={"unused": list(unused)})


@dataclass(frozen=True)
class Arm:
    """A version's share of a deployment's traffic (``weight`` in percent; shadow: 0)."""

    version: int
    role: Role
    weight: float

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "role": self.role, "weight": self.weight}


@dataclass(frozen=True)
class Spec:
    """What a deployment does: its arms and, for a canary, how it steps and what it checks."""

    arms: tuple[Arm, ...]
    primary: int | None = None  # the version the primary arm held at creation
    steps: tuple[float, ...] = ()
    interval_s: float = 300.0
    checks: tuple[Check, ...] = ()
    failures: int = 2
    min_requests: int = 20
    sticky_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "arms": [a.to_json() for a in self.arms],
            "primary": self.primary,
            "steps": list(self.steps),
            "interval_s": self.interval_s,
            "checks": [str(c) for c in self.checks],
            "failures": self.failures,
            "min_requests": self.min_requests,
            "sticky_key": self.sticky_key,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Spec:
        checks = ",".join(data.get("checks") or ())
        return cls(
            arms=tuple(Arm(int(a["version"]), a["role"], float(a["weight"])) for a in data["arms"]),
            primary=data.get("primary"),
            steps=tuple(float(s) for s in data.get("steps") or ()),
            interval_s=float(data.get("interval_s", 300.0)),
            checks=parse_checks(checks) if checks else (),
            failures=int(data.get("failures", 2)),
            min_requests=int(data.get("min_requests", 20)),
            sticky_key=data.get("sticky_key"),
        )


@dataclass(frozen=True)
class Deployment:
    """A stored deployment.

    Attributes:
        step: Index into ``spec.steps`` (canary); the canary's weight is ``steps[step]``.
        bad_intervals: Consecutive intervals whose checks failed (rollback at ``failures``).
        interval_started_at: When the interval under measurement began.
    """

    id: str
    name: str
    kind: Kind
    status: Status
    spec: Spec
    step: int
    bad_intervals: int
    interval_started_at: datetime
    created_by: str
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    reason: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Deployment:
        return cls(
            id=row["id"],
            name=row["model_name"],
            kind=row["kind"],
            status=row["status"],
            spec=Spec.from_json(row["spec"]),
            step=int(row["step"]),
            bad_intervals=int(row["bad_intervals"]),
            interval_started_at=row["step_started_at"],
            created_by=row["created_by"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            ended_at=row["ended_at"],
            reason=row["reason"],
        )

    @property
    def arms(self) -> tuple[Arm, ...]:
        """The arms with their current weights (a canary's weight is its current step)."""
        if self.kind != "canary":
            return self.spec.arms
        weight = self.spec.steps[self.step]
        return tuple(
            Arm(a.version, a.role, weight if a.role == "canary" else 100.0 - weight)
            for a in self.spec.arms
        )

    @property
    def candidate(self) -> int:
        """The version under test (canary or shadow; an A/B deployment's first arm)."""
        chosen = [a for a in self.spec.arms if a.role in ("canary", "shadow")] or self.spec.arms
        return chosen[0].version

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "arms": [a.to_json() for a in self.arms],
            "spec": self.spec.to_json(),
            "step": self.step,
            "bad_intervals": self.bad_intervals,
            "interval_started_at": self.interval_started_at.isoformat(),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Measured:
    """One version's merged traffic over a window (any number of servers and buckets)."""

    version: int
    role: str
    requests: int = 0
    errors: int = 0
    latency: tuple[int, ...] = field(default=(0,) * (len(LATENCY_EDGES_MS) + 1))
    compared: int = 0
    disagreed: int = 0
    rejected: int = 0

    @classmethod
    def merge(cls, version: int, role: str, rows: Iterable[Mapping[str, Any]]) -> Measured:
        """Add up stored rows (``latency`` as ``{bucket index: count}``)."""
        counts = [0] * (len(LATENCY_EDGES_MS) + 1)
        requests = errors = compared = disagreed = rejected = 0
        for row in rows:
            requests += int(row["requests"])
            errors += int(row["errors"])
            compared += int(row.get("compared", 0))
            disagreed += int(row.get("disagreed", 0))
            rejected += int(row.get("rejected", 0) or 0)
            for index, count in (row["latency"] or {}).items():
                counts[min(int(index), len(counts) - 1)] += int(count)
        return cls(version, role, requests, errors, tuple(counts), compared, disagreed, rejected)

    def percentile_ms(self, q: float) -> float | None:
        """The ``q``-th percentile (0-100) of latency, as its bucket's upper edge."""
        total = sum(self.latency)
        if total == 0:
            return None
        rank = math.ceil(total * q / 100.0)
        seen = 0
        for index, count in enumerate(self.latency):
            seen += count
            if seen >= rank:
                return LATENCY_EDGES_MS[min(index, len(LATENCY_EDGES_MS) - 1)]
        return LATENCY_EDGES_MS[-1]

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def rejection_rate(self) -> float | None:
        """The share of requests this version refused as invalid (4xx answers)."""
        return self.rejected / self.requests if self.requests else None

    def value(self, metric: str) -> float | None:
        """A check's metric over this window."""
        if metric == "error_rate":
            return self.error_rate
        if metric == "rejection_rate":
            return self.rejection_rate
        if metric == "requests":
            return float(self.requests)
        return self.percentile_ms(float(metric[1:3]))  # p50_ms, p95_ms, p99_ms

    def to_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "version": self.version,
            "role": self.role,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "rejected": self.rejected,
            "rejection_rate": self.rejection_rate,
            "p50_ms": self.percentile_ms(50),
            "p95_ms": self.percentile_ms(95),
            "p99_ms": self.percentile_ms(99),
        }
        if self.role == "shadow":
            answer["compared"] = self.compared
            answer["disagreement_rate"] = self.disagreed / self.compared if self.compared else None
        return answer


COVERAGE_ROLES = ("copies", "shed", "dropped:full", "dropped:down", "dropped:lost")
"""The roles of the rows counting a shadow's copies (in ``requests``): made, not made while
primaries were queued, and dropped unscored: the buffer was full, the shadow process was down,
or it died holding them."""


def coverage_key(deployment_id: str) -> str:
    """The ``deployment_id`` of the rows counting a deployment's shadow copies: ``c-`` and its
    id, never a deployment id (hex) nor a model's key (``m-``), so neither the controller nor
    ``keel monitor`` reads them as traffic."""
    return "c-" + deployment_id


@dataclass(frozen=True)
class Coverage:
    """What became of a shadow version's copies: scored, or why not.

    ``copies == scored + dropped + shed`` once the shadow process has reported (the rest are
    on their way: ``pending``).
    """

    version: int
    copies: int = 0
    scored: int = 0
    shed: int = 0
    full: int = 0
    down: int = 0
    lost: int = 0

    @classmethod
    def of(cls, version: int, scored: int, by_role: Mapping[str, int]) -> Coverage:
        """From the counts per :data:`COVERAGE_ROLES` role and the shadow's scored copies."""
        copies, shed, full, down, lost = (int(by_role.get(r, 0)) for r in COVERAGE_ROLES)
        return cls(version, copies, scored, shed, full, down, lost)

    @property
    def dropped(self) -> int:
        return self.full + self.down + self.lost

    @property
    def pending(self) -> int:
        """Copies sent and not reported yet (never below 0: counts flush at different times)."""
        return max(0, self.copies - self.scored - self.dropped - self.shed)

    def to_json(self) -> dict[str, Any]:
        return {
            "copies": self.copies,
            "scored": self.scored,
            "scored_rate": self.scored / self.copies if self.copies else None,
            "dropped": self.dropped,
            "dropped_buffer_full": self.full,
            "dropped_process_down": self.down,
            "dropped_process_died": self.lost,
            "shed": self.shed,
            "pending": self.pending,
        }


def with_coverage(database: Any, shown: dict[str, Any]) -> dict[str, Any]:
    """A deployment's status (``Rollouts.status``) with, for each shadow version, what became
    of its copies since the deployment began, under ``coverage`` in its ``traffic`` entry (an
    entry with no request is added for a shadow that scored none)."""
    from keel.store import deployment_store as ds

    if not any(a["role"] == "shadow" for a in shown["spec"]["arms"]):
        return shown
    since = datetime.fromisoformat(shown["created_at"]) - timedelta(seconds=1)
    with database.read() as conn:
        rows = ds.sum_stats(conn, coverage_key(shown["id"]), since, None, buckets=0)
    counted: dict[int, dict[str, int]] = {}
    for row in rows:
        counted.setdefault(int(row["version"]), {})[row["role"]] = int(row["requests"])
    traffic = list(shown.get("traffic", ()))
    for arm in (a for a in shown["spec"]["arms"] if a["role"] == "shadow"):
        version = int(arm["version"])
        entry = next((t for t in traffic if t["role"] == "shadow" and t["version"] == version),
                     None)  # fmt: skip
        if entry is None:
            if version not in counted:
                continue
            entry = Measured(version, "shadow").to_json()
            traffic.append(entry)
        coverage = Coverage.of(version, entry["requests"], counted.get(version, {}))
        entry["coverage"] = coverage.to_json()
    return {**shown, "traffic": traffic}


REJECTION_MARGIN = 0.01
"""How much more often than the primary a canary may refuse requests before it fails (absolute)."""
REJECTION_ALPHA = 0.01
"""The one-sided two-proportion test's level for that comparison."""


def rejects_more(canary: Measured, primary: Measured) -> str | None:
    """Why the canary refuses requests the primary answers, or None when it does not.

    Arms split the same traffic at random, so a canary that answers 4xx (an input it cannot
    take: a column the new version needs that clients do not send, a changed category) far more
    often than the primary over the same interval is broken for these clients even though every
    refusal is, taken alone, a client mistake. It fails when its rejection rate is more than
    :data:`REJECTION_MARGIN` above the primary's and a one-sided two-proportion z-test rejects
    equal rates at :data:`REJECTION_ALPHA`. Without primary traffic in the window there is
    nothing to compare with (None).
    """
    if not canary.requests or not primary.requests:
        return None
    mine, theirs = canary.rejected / canary.requests, primary.rejected / primary.requests
    if mine - theirs <= REJECTION_MARGIN:
        return None
    pooled = (canary.rejected + primary.rejected) / (canary.requests + primary.requests)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / canary.requests + 1 / primary.requests))
    p_value = 0.5 * math.erfc((mine - theirs) / spread / math.sqrt(2)) if spread > 0 else 0.0
    if p_value >= REJECTION_ALPHA:
        return None
    return (
        f"rejection_rate {mine:.3g} above the primary's {theirs:.3g} "
        f"({canary.rejected}/{canary.requests} vs {primary.rejected}/{primary.requests} "
        f"requests refused, p={p_value:.2g})"
    )


def checks_of(text: str | Sequence[Check]) -> tuple[Check, ...]:
    """Checks from a ``--check`` string or already parsed."""
    return parse_checks(text) if isinstance(text, str) else tuple(text)
