"""What the registry returns: typed, frozen records with a ``to_json()`` (what REST serves)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "AliasMove",
    "AuditEntry",
    "Decision",
    "ModelSummary",
    "PromotionRequest",
    "VersionInfo",
]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One registered version: its package, the run that made it, metrics, aliases, state."""

    name: str
    version: int
    package_sha256: str
    run_id: str | None
    created_at: datetime
    metrics: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    aliases: tuple[str, ...] = ()
    archived_at: datetime | None = None
    archived_by: str | None = None

    @property
    def archived(self) -> bool:
        """Whether the version is archived (kept, but it cannot take an alias or be loaded)."""
        return self.archived_at is not None

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "package_sha256": self.package_sha256,
            "run_id": self.run_id,
            "created_at": _iso(self.created_at),
            "metrics": self.metrics,
            "aliases": list(self.aliases),
            "archived": self.archived,
            "archived_at": _iso(self.archived_at),
            "archived_by": self.archived_by,
        }


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """One model: how many versions, the newest, and where its aliases point."""

    name: str
    latest_version: int | None
    versions: int
    aliases: tuple[tuple[str, int], ...]
    created_at: datetime
    description: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "latest_version": self.latest_version,
            "versions": self.versions,
            "aliases": dict(self.aliases),
            "created_at": _iso(self.created_at),
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class AliasMove:
    """One move of an alias (a promotion, rollback, approval that applied, or removal)."""

    name: str
    alias: str
    version: int | None
    previous_version: int | None
    action: str
    actor: str
    reason: str
    at: datetime
    audit_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alias": self.alias,
            "version": self.version,
            "previous_version": self.previous_version,
            "action": self.action,
            "actor": self.actor,
            "reason": self.reason,
            "at": _iso(self.at),
            "audit_id": self.audit_id,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """One approval or rejection of a promotion request, with its comment."""

    actor: str
    decision: str
    comment: str
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "decision": self.decision,
            "comment": self.comment,
            "at": _iso(self.at),
        }


@dataclass(frozen=True, slots=True)
class PromotionRequest:
    """A promotion to an alias that needs approvals: pending until enough people approve."""

    id: str
    name: str
    version: int
    alias: str
    from_version: int | None
    requested_by: str
    reason: str
    required_approvals: int
    status: str
    created_at: datetime
    decided_at: datetime | None
    decisions: tuple[Decision, ...] = ()

    @property
    def approvals(self) -> int:
        """How many approvals it has."""
        return sum(1 for d in self.decisions if d.decision == "approve")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "from_version": self.from_version,
            "requested_by": self.requested_by,
            "reason": self.reason,
            "required_approvals": self.required_approvals,
            "approvals": self.approvals,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "decided_at": _iso(self.decided_at),
            "decisions": [d.to_json() for d in self.decisions],
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit-log row: who did what to which target, when, and the details (from, to, why)."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "details": self.details,
        }
