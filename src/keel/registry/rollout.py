"""The deployment controller: create, promote, abort, and :meth:`Rollouts.tick` for canaries.

A canary takes ``steps[0]`` percent of its model's traffic. Every ``interval`` the controller
merges the canary's own traffic since the interval began (every server's ``deployment_stats``
rows): fewer than ``min_requests`` requests, or none at all, neither advances nor fails (waiting
for traffic: the window grows until there are enough); checks that hold move it to the next
step, and past the last step below 100 % it is promoted (the registry's alias moves through
:meth:`Registry.promote`, so the move is audited as any promotion); ``failures`` consecutive bad
intervals roll it back (its traffic returns to the primary). Every decision is one transaction
that writes the deployment, its ``deployment_events`` row with the measured values, and an
audit-log row (``keel audit`` shows ``deploy_rollback`` and ``deploy_promote``).

One process drives the canaries: a server holding the controller lease, or
``keel deploy --wait`` in the foreground; a stale decision is refused by the interval-start
compare-and-set, so two controllers never decide the same interval twice.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from keel.config.registry import RegistryConfig
from keel.errors import ConfigError, ConflictError, NotFoundError
from keel.registry.deployments import (
    LATENCY_EDGES_MS,
    Arm,
    Check,
    Deployment,
    Kind,
    Measured,
    Spec,
    checks_of,
    rejects_more,
)
from keel.registry.records import PromotionRequest
from keel.registry.registry import Registry
from keel.settings import current_actor
from keel.store import deployment_store as ds
from keel.store import registry_tables as rt
from keel.store.database import Database
from keel.store.tables import utc_now

__all__ = ["Decision", "Rollouts", "final_arms"]

DEFAULT_STEPS = (5.0, 25.0, 50.0, 100.0)
_BUCKETS = len(LATENCY_EDGES_MS) + 1


@dataclass(frozen=True)
class Decision:
    """What :meth:`Rollouts.tick` decided for one canary, with the values behind it.

    ``action``: ``waiting`` (too little traffic), ``stepped``, ``bad_interval``, ``promoted``
    or ``rolled_back``.
    """

    deployment_id: str
    name: str
    action: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        measured = self.details.get("measured", {})
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in measured.items())
        failed = self.details.get("failed")
        why = f"; failed {', '.join(failed)}" if failed else ""
        weight = self.details.get("weight")
        step = f" -> {weight:g}%" if weight is not None and self.action == "stepped" else ""
        return f"{self.name} {self.deployment_id}: {self.action}{step} ({shown}{why})"


def _waiting(requests: int, needed: int) -> str:
    """Why a canary's interval waits: too few of its requests (none at all, with
    ``min_requests`` 0: a check of nothing would fail, or pass, on no evidence)."""
    if needed <= 1:
        return "waiting for traffic (no canary requests yet this interval)"
    return f"waiting for traffic ({requests} < {needed} requests)"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _sticky(key: str | None) -> str | None:
    """A sticky key as given, trimmed; an empty one is an error (it would never match)."""
    if key is None:
        return None
    if not key.strip():
        msg = (
            f"sticky key {key!r} names no field: give the request field whose value keeps a "
            "client on one arm (e.g. user_id), or leave it out to split at random."
        )
        raise ConfigError(msg, field="sticky_key")
    return key.strip()


def final_arms(arms: Sequence[Mapping[str, Any]], serving: int | None) -> list[dict[str, Any]]:
    """An ended deployment's arms (``Arm.to_json()``) at their final weights: 100 % for the
    version that now takes the traffic (``serving``), 0 % for the others."""
    return [dict(arm, weight=100.0 if arm["version"] == serving else 0.0) for arm in arms]


class Rollouts:
    """Deployments of a metadata database, and the controller that steps canaries.

    Args:
        db: The metadata database.
        config: keel.yaml's ``registry:`` section (approvals and webhooks of the promotion).
        actor: Who acts (default: ``KEEL_ACTOR``, else the OS user).
        alias: The alias a promotion moves (the project's ``registry.alias``).
    """

    def __init__(
        self,
        db: Database,
        config: RegistryConfig | None = None,
        *,
        actor: str | None = None,
        alias: str = "production",
    ) -> None:
        self._db = db
        self.config = config or RegistryConfig()
        self.actor = current_actor(actor)
        self.alias = alias
        self.registry = Registry(db, self.config, actor=self.actor)

    # -- creating ----------------------------------------------------------------------------

    def canary(
        self,
        name: str,
        version: int,
        *,
        steps: Sequence[float] = DEFAULT_STEPS,
        interval_s: float = 300.0,
        checks: str | Sequence[Check] = "error_rate<=0.01",
        failures: int = 2,
        min_requests: int = 20,
        sticky_key: str | None = None,
        reason: str = "",
    ) -> Deployment:
        """Start a canary of ``version``: ``steps[0]`` percent of ``name``'s traffic."""
        if failures < 1 or min_requests < 0:
            msg = (
                f"failures must be at least 1 and min requests at least 0; got {failures} and "
                f"{min_requests}."
            )
            raise ConfigError(msg, field="failures" if failures < 1 else "min_requests")
        if not steps or interval_s < 0.1:
            raise ConfigError(
                "a canary needs steps and an interval of at least 100ms.", field="steps"
            )
        primary = self._candidate(name, version, "canary")
        spec = Spec(
            arms=(Arm(version, "canary", 0.0),),
            primary=primary,
            steps=tuple(float(s) for s in steps),
            interval_s=float(interval_s),
            checks=checks_of(checks),
            failures=failures,
            min_requests=min_requests,
            sticky_key=_sticky(sticky_key),
        )
        return self._create(name, "canary", spec, reason)

    def shadow(self, name: str, version: int, *, reason: str = "") -> Deployment:
        """Mirror ``name``'s traffic to ``version``: logged and compared, never answered."""
        primary = self._candidate(name, version, "shadow")
        return self._create(name, "shadow", Spec((Arm(version, "shadow", 0.0),), primary), reason)

    def ab(
        self,
        name: str,
        arms: Sequence[tuple[int, float]],
        *,
        sticky_key: str | None = None,
        reason: str = "",
    ) -> Deployment:
        """Split ``name``'s traffic across versions by weight (sticky by ``sticky_key``)."""
        total = sum(weight for _, weight in arms)
        if len(arms) < 2 or total <= 0:
            raise ConfigError("an A/B deployment needs two or more arms with weights.", field="ab")
        for version, _ in arms:
            self._check_version(name, version)
        spec = Spec(
            arms=tuple(Arm(v, "ab", 100.0 * w / total) for v, w in arms),
            primary=self._primary(name),
            sticky_key=_sticky(sticky_key),
        )
        return self._create(name, "ab", spec, reason)

    def _candidate(self, name: str, version: int, kind: str) -> int | None:
        self._check_version(name, version)
        primary = self._primary(name)
        if primary == version:
            alias = "" if self.alias == "production" else f" (naming the alias {self.alias})"
            msg = (
                f"version {version} already holds {name}@{self.alias} (registry.alias: the "
                f"primary a deployment starts from; keel run's gate may have moved it there); "
                f"a {kind} needs another version: `keel models list {name}` shows them, and "
                f"`keel models rollback {name}`{alias} moves {name}@{self.alias} back to the "
                f"version before, from which {version} can then be deployed as a {kind}."
            )
            raise ConflictError(msg, field="version")
        return primary

    def _check_version(self, name: str, version: int) -> None:
        found = self.registry.show(name, version)  # NotFoundError lists what exists
        if found.archived:
            msg = f"{name}@{version} is archived; restore it before deploying it."
            raise ConflictError(msg, field="version")

    def _primary(self, name: str) -> int | None:
        try:
            return self.registry.resolve(f"{name}@{self.alias}").version
        except NotFoundError:
            return None

    def _create(self, name: str, kind: Kind, spec: Spec, reason: str) -> Deployment:
        now = utc_now()
        row: dict[str, Any] = {
            "id": secrets.token_hex(6),
            "model_name": name,
            "kind": kind,
            "status": "active",
            "spec": spec.to_json(),
            "step": 0,
            "bad_intervals": 0,
            "step_started_at": now,
            "created_by": self.actor,
            "created_at": now,
            "updated_at": now,
            "ended_at": None,
            "reason": reason,
        }
        with self._db.write() as conn:
            ds.insert(conn, row)
            ident = str(row["id"])
            details = {"deployment": ident, "kind": kind, **spec.to_json(), "reason": reason}
            self._record(conn, ident, name, "created", details)
            return Deployment.from_row(ds.load(conn, ident))

    # -- reading -----------------------------------------------------------------------------

    def get(self, ref: str) -> Deployment:
        """A deployment by id, or a model name's active (else latest) deployment."""
        with self._db.read() as conn:
            return Deployment.from_row(ds.load(conn, ref))

    def listed(self, *, name: str | None = None, limit: int = 100) -> list[Deployment]:
        """Deployments newest first."""
        with self._db.read() as conn:
            rows = ds.list_deployments(conn, name=name, limit=limit)
        return [Deployment.from_row(r) for r in rows]

    def active(self) -> list[Deployment]:
        """The active deployments (what servers route by)."""
        with self._db.read() as conn:
            return [Deployment.from_row(r) for r in ds.active(conn)]

    def events(self, ref: str) -> list[dict[str, Any]]:
        """A deployment's decisions, oldest first."""
        with self._db.read() as conn:
            found = ds.load(conn, ref)
            rows = ds.events_of(conn, found["id"])
        return [
            {"action": r["action"], "actor": r["actor"], "at": r["at"].isoformat(), **r["details"]}
            for r in rows
        ]

    def measure(
        self, deployment: Deployment, since: datetime, until: datetime | None
    ) -> list[Measured]:
        """Each (version, role)'s merged traffic with ``since < bucket <= until`` (None: no
        upper bound; added up by the database: one grouped query, however many servers and
        flushes wrote it). Rows are stamped at their flush, so the row straddling ``since``
        counts whole here (:func:`keel.store.deployment_store.sum_stats`)."""
        with self._db.read() as conn:
            sums = ds.sum_stats(conn, deployment.id, since, until, buckets=_BUCKETS)
        measured = [Measured.merge(int(row["version"]), row["role"], [row]) for row in sums]
        return sorted(measured, key=lambda m: (m.version, m.role))

    def status(self, ref: str, *, now: datetime | None = None) -> dict[str, Any]:
        """A deployment with each arm's traffic (since it began and this interval) and history."""
        now = now or utc_now()
        found = self.get(ref)
        begun = found.created_at - timedelta(seconds=1)
        answer = found.to_json()
        # no upper bound: servers write rows under its id only while they route by it, and the
        # flush after the end still counts requests routed before it (or before they noticed)
        answer["traffic"] = [m.to_json() for m in self.measure(found, begun, None)]
        if found.kind == "canary" and found.status == "active":
            window = self.measure(found, found.interval_started_at, now)
            answer["interval"] = [m.to_json() for m in window]
            own = sum(
                m.requests for m in window if m.version == found.candidate and m.role == "canary"
            )
            if own < max(found.spec.min_requests, 1):  # what the next judgement will say
                answer["waiting"] = _waiting(own, found.spec.min_requests)
        answer["events"] = self.events(found.id)
        if found.status != "active":  # who takes the traffic now, not the weights it ended at
            answer["final"] = self._final(found, answer["events"])
            answer["arms"] = final_arms(answer["arms"], answer["final"]["serving"])
        return answer

    def with_outcome(self, found: Deployment) -> dict[str, Any]:
        """``found`` as JSON and, when it has ended, its ``final`` outcome with the arms at
        their final weights (what ``keel deployments list`` shows, as :meth:`status` does)."""
        answer = found.to_json()
        if found.status != "active":
            answer["final"] = self._final(found, self.events(found.id))
            answer["arms"] = final_arms(answer["arms"], answer["final"]["serving"])
        return answer

    def _final(self, found: Deployment, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """An ended deployment's outcome: ``serving``, the version that takes all of the
        model's traffic now (the promoted one, else the primary; None: no version held the
        alias), ``promoted``, the ``alias`` it moved, a ``promotion_request`` still awaiting
        approvals, and for a canary the ``step`` (1-based) of ``steps`` it ended at (all of
        them when the controller promoted it past the last step below 100 %); ``by_hand``
        (promoted or aborted by a person, not by the controller's checks), ``ended_by`` and
        ``ended_at`` (who ended it, when: ISO 8601 UTC)."""
        final: dict[str, Any] = {"status": found.status, "serving": found.spec.primary,
                                 "promoted": None, "alias": self.alias,
                                 "promotion_request": None}  # fmt: skip
        ended = next((e for e in reversed(events) if e["action"] == found.status), None)
        final.update(
            by_hand=found.status == "aborted"
            or (found.status == "promoted" and ended is not None and "measured" not in ended),
            ended_by=None if ended is None else ended["actor"],
            ended_at=None if ended is None else ended["at"],
        )
        done = next((e for e in reversed(events) if e["action"] == "promoted"), None)
        if found.status == "promoted" and done is not None:
            version = int(done.get("version", found.candidate))
            final.update(promoted=version, alias=done.get("alias", self.alias))
            pending = done.get("promotion_request")
            if pending is not None and self._primary(found.name) != version:
                final["promotion_request"] = pending  # the alias waits for approvals
            else:
                final["serving"] = version
        if found.kind == "canary":
            steps = len(found.spec.steps)
            past = found.status == "promoted" and done is not None and "measured" in done
            final.update(step=steps if past else found.step + 1, steps=steps)
        return final

    # -- ending ------------------------------------------------------------------------------

    def promote(self, ref: str, *, version: int | None = None, reason: str = "") -> Deployment:
        """End a deployment by moving the alias to its candidate (an A/B arm: ``version``)."""
        found = self._active(ref)
        target = version if version is not None else found.candidate
        versions = {a.version for a in found.spec.arms}
        if found.kind == "ab" and version is None:
            msg = (
                f"deployment {found.id} is an A/B test of versions "
                f"{', '.join(str(v) for v in sorted(versions))}: name the winner's version, "
                f"one of {', '.join(str(v) for v in sorted(versions))} (the version to promote)."
            )
            raise ConfigError(msg, field="version")
        if target not in versions:
            arms = ", ".join(str(v) for v in sorted(versions))
            msg = (
                f"version {target} is not an arm of deployment {found.id} of {found.name!r}; "
                f"name one of its versions: {arms}."
            )
            raise ConfigError(msg, field="version")
        # no reason given: the one it was started with stays its headline
        headline = reason or found.reason
        return self._promote(found, target, reason or "promoted by hand", {}, None, headline)

    def abort(self, ref: str, *, reason: str = "") -> Deployment:
        """End a deployment: its traffic returns to the primary, no alias moves."""
        found = self._active(ref)
        with self._db.write() as conn:
            ds.update(conn, found.id, status="aborted", reason=reason or found.reason)
            details = {"deployment": found.id, "kind": found.kind, "reason": reason}
            self._record(conn, found.id, found.name, "aborted", details)
            return Deployment.from_row(ds.load(conn, found.id))

    def _active(self, ref: str) -> Deployment:
        found = self.get(ref)
        if found.status != "active":
            none = f"; {found.name!r} has no active deployment" if ref == found.name else ""
            msg = (
                f"deployment {found.id} of {found.name!r} already ended "
                f"({found.status.replace('_', ' ')}){none}. `keel deployments list` shows "
                f"them; `keel deploy {found.name} --canary VERSION` starts another."
            )
            raise ConflictError(msg, field="deployment")
        return found

    def _promote(
        self,
        found: Deployment,
        version: int,
        reason: str,
        details: Mapping[str, Any],
        since: datetime | None,
        headline: str | None = None,
    ) -> Deployment:
        why = f"deployment {found.id} ({found.kind}): {reason}"
        extra: dict[str, Any] = {}
        try:
            outcome = self.registry.promote(found.name, version, alias=self.alias, reason=why)
        except ConflictError as exc:
            if self._primary(found.name) != version:
                raise
            extra["note"] = str(exc)  # moved there already (by hand): the deployment is done
        else:
            if isinstance(outcome, PromotionRequest):
                extra["promotion_request"] = outcome.id  # the alias waits for approvals
        with self._db.write() as conn:
            ds.update(conn, found.id, since=since, status="promoted", reason=headline or reason)
            record = {
                "deployment": found.id,
                "version": version,
                "alias": self.alias,
                "reason": reason,
                **details,
                **extra,
            }
            self._record(conn, found.id, found.name, "promoted", record)
            return Deployment.from_row(ds.load(conn, found.id))

    # -- the controller ----------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> list[Decision]:
        """Judge every active canary whose interval has elapsed; the decisions taken."""
        now = now or utc_now()
        decisions = []
        for found in self.active():
            if found.kind != "canary":
                continue
            if now - found.interval_started_at < timedelta(seconds=found.spec.interval_s):
                continue
            try:
                decisions.append(self._judge(found, now))
            except ConflictError:
                continue  # another controller decided this interval first
        return decisions

    def _judge(self, found: Deployment, now: datetime) -> Decision:
        spec = found.spec
        window = self.measure(found, found.interval_started_at, now)
        own = next(
            (m for m in window if m.version == found.candidate and m.role == "canary"),
            Measured(found.candidate, "canary"),
        )
        measured = {c.metric: own.value(c.metric) for c in spec.checks}
        measured["requests"] = float(own.requests)
        weight = spec.steps[found.step]
        details: dict[str, Any] = {
            "deployment": found.id,
            "version": found.candidate,
            "step": found.step,
            "weight": weight,
            "window_s": (now - found.interval_started_at).total_seconds(),
            "measured": measured,
            "checks": [str(c) for c in spec.checks],
        }
        if own.requests < max(spec.min_requests, 1):  # no request: nothing to judge
            details["why"] = _waiting(own.requests, spec.min_requests)
            return Decision(found.id, found.name, "waiting", details)
        failed = [str(c) for c in spec.checks if not c.holds(own.value(c.metric))]
        primaries = [m for m in window if m.role == "primary"]  # whichever versions it held
        primary = Measured(
            spec.primary or 0, "primary", requests=sum(m.requests for m in primaries),
            rejected=sum(m.rejected for m in primaries),
        )  # fmt: skip
        details["primary_rejection_rate"] = primary.rejection_rate
        refused = rejects_more(own, primary)
        if refused is not None:
            failed.append(refused)
        since = found.interval_started_at
        if not failed:
            following = found.step + 1
            if following < len(spec.steps) and spec.steps[following] < 100.0:
                details["weight"] = spec.steps[following]
                with self._db.write() as conn:
                    ds.update(
                        conn, found.id, since=since, step=following, bad_intervals=0,
                        step_started_at=now,
                    )  # fmt: skip
                    self._record(conn, found.id, found.name, "stepped", details)
                return Decision(found.id, found.name, "stepped", details)
            self._promote(found, found.candidate, "checks held at every step", details, since)
            return Decision(found.id, found.name, "promoted", details)
        bad = found.bad_intervals + 1
        details.update(failed=failed, bad_intervals=bad, failures_allowed=spec.failures)
        with self._db.write() as conn:
            if bad >= spec.failures:
                why = f"checks failed {bad} intervals in a row: {', '.join(failed)}"
                details["reason"] = why
                ds.update(conn, found.id, since=since, status="rolled_back", reason=why)
                self._record(conn, found.id, found.name, "rolled_back", details)
                return Decision(found.id, found.name, "rolled_back", details)
            ds.update(conn, found.id, since=since, bad_intervals=bad, step_started_at=now)
            ds.add_event(conn, found.id, "bad_interval", self.actor, details)
        return Decision(found.id, found.name, "bad_interval", details)

    def _record(
        self, conn: Any, deployment_id: str, name: str, action: str, details: Mapping[str, Any]
    ) -> None:
        """The decision in the deployment's history, the audit log and the event stream."""
        ds.add_event(conn, deployment_id, action, self.actor, details)
        audit_id = rt.record_audit(conn, f"deploy_{action}", name, self.actor, details)
        payload = {**details, "name": name, "actor": self.actor, "audit_id": audit_id}
        rt.emit_event(conn, f"deployment_{action}", name, payload, self.config.webhooks)
