"""Pipeline runs: one record per ``keel run`` (manual, scheduled, event or retry).

A pipeline run groups the step runs of one execution of the pipeline: its trigger and reason,
the config hash, its status, and per step the run id, status, whether the cache hit, seconds,
CPU seconds, the peak memory while that step ran and which attempt it was (retries). A run
whose process died while it was ``running`` is marked failed, like its step runs, the next time
the store is opened.

Statuses: ``running``; ``cancel_requested`` (``keel runs cancel``: the runner, which polls it,
stops); then ``succeeded``, ``failed`` or ``cancelled`` (Ctrl-C or ``keel runs cancel``), each
stored as such since migration 0010. Rows written before it kept the two cancel statuses as
``running`` / ``failed`` with the ``error`` column saying so (:data:`CANCEL_REQUESTED`,
:data:`CANCELLED`); the migration rewrites them and this module still reads that form as the
status it meant. A step's status is ``succeeded``,
``cached``, ``failed``, ``cancelled`` or ``not_run`` (a step failed or the run was cancelled
before it started). A resumed run's reason is ``resumes <id>`` (:attr:`PipelineRun.resumes`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from keel.errors import ConfigError, ConflictError, NotFoundError
from keel.store.database import Database
from keel.store.leases import Owner, judge
from keel.store.processes import identity, this_host
from keel.store.tables import pipeline_runs, utc_now

__all__ = ["ACTIVE", "FINISHED", "PipelineRun", "StepOutcome", "Trigger"]

Trigger = Literal["manual", "schedule", "event", "retry"]
TRIGGERS: tuple[str, ...] = ("manual", "schedule", "event", "retry")
#: Statuses of a pipeline run still in progress.
ACTIVE: tuple[str, ...] = ("running", "cancel_requested")
#: Statuses :func:`finish` records.
FINISHED: tuple[str, ...] = ("succeeded", "failed", "cancelled")
#: Before migration 0010: the ``error`` of a running run someone asked to cancel.
CANCEL_REQUESTED = "cancel requested"
#: Before migration 0010: how the ``error`` of a cancelled (stored ``failed``) run began.
CANCELLED = "cancelled: "
_RESUMES = "resumes "


@dataclass(frozen=True)
class StepOutcome:
    """How one step of a pipeline run went."""

    step: str
    run_id: str
    status: str
    cache: Literal["hit", "miss"]
    seconds: float
    cpu_seconds: float | None = None
    peak_rss_mb: float | None = None
    attempt: int = 1
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        extra: dict[str, Any] = {"attempt": self.attempt}
        if self.error is not None:
            extra["error"] = self.error[:2000]
        return extra | {
            "step": self.step,
            "run_id": self.run_id,
            "status": self.status,
            "cache": self.cache,
            "seconds": round(self.seconds, 4),
            "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 4),
            "peak_rss_mb": None if self.peak_rss_mb is None else round(self.peak_rss_mb, 1),
        }


@dataclass(frozen=True)
class PipelineRun:
    """One execution of a project's pipeline."""

    id: str
    config_hash: str
    trigger: str
    reason: str | None
    status: str
    started_at: datetime
    ended_at: datetime | None
    steps: tuple[dict[str, Any], ...]
    error: str | None

    @property
    def resumes(self) -> str | None:
        """The pipeline run this one resumed (``keel run --resume``), if any."""
        if self.reason and self.reason.startswith(_RESUMES):
            return self.reason[len(_RESUMES) :].split()[0]
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, times as ISO 8601."""
        return {
            "resumes": self.resumes,
            "id": self.id,
            "config_hash": self.config_hash,
            "trigger": self.trigger,
            "reason": self.reason,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "ended_at": None if self.ended_at is None else self.ended_at.isoformat(),
            "steps": list(self.steps),
            "error": self.error,
        }


def start(db: Database, run_id: str, *, config_hash: str, trigger: str, reason: str | None) -> None:
    """Record a pipeline run as ``running``.

    Raises:
        ConfigError: ``trigger`` is not one of manual, schedule, event, retry.
    """
    if trigger not in TRIGGERS:
        msg = f"trigger {trigger!r} is not one of {', '.join(TRIGGERS)}."
        raise ConfigError(msg, field="trigger")
    values: dict[str, Any] = {
        "id": run_id,
        "config_hash": config_hash,
        "trigger": trigger,
        "reason": reason,
        "status": "running",
        "started_at": utc_now(),
        "steps": [],
        "owner_host": this_host()[:255],
        "owner_pid": os.getpid(),
    }
    values["owner_started_at"], values["owner_boot_id"] = identity(os.getpid())
    with db.write() as conn:
        conn.execute(pipeline_runs.insert().values(**values))


def finish(
    db: Database, run_id: str, *, status: str, steps: list[StepOutcome], error: str | None
) -> None:
    """Close a pipeline run with its steps' outcomes (status succeeded, failed or
    cancelled; ``error`` says why it did not succeed).

    Raises:
        ConfigError: ``status`` is not one of them.
    """
    if status not in FINISHED:
        msg = f"pipeline run status {status!r} is not one of {', '.join(FINISHED)}."
        raise ConfigError(msg, field="status")
    values: dict[str, Any] = {
        "status": status,
        "ended_at": utc_now(),
        "steps": [step.to_dict() for step in steps],
        "error": None if error is None else error[:4000],
    }
    with db.write() as conn:
        conn.execute(pipeline_runs.update().where(pipeline_runs.c.id == run_id).values(**values))


def resume_reason(run_id: str) -> str:
    """The reason recorded on a run that resumes ``run_id``."""
    return f"{_RESUMES}{run_id}"


def request_cancel(db: Database, ref: str) -> PipelineRun:
    """Ask the process running a pipeline run to stop it (status ``cancel_requested``); the
    runner polls the status, stops its steps and records them and the run ``cancelled``.

    Raises:
        NotFoundError: No pipeline run matches ``ref``.
        ConflictError: The run has already ended (its status says how).
    """
    run = get(db, ref)
    with db.write() as conn:
        changed = conn.execute(
            pipeline_runs.update()
            .where(pipeline_runs.c.id == run.id, pipeline_runs.c.status == "running")
            .values(status="cancel_requested")
        ).rowcount
    if not changed:
        current = get(db, run.id)
        if current.status == "cancel_requested":
            return current
        raise ConflictError(
            f"pipeline run {run.id} is not running (status {current.status}); nothing to "
            "cancel. Resume a failed or cancelled run with 'keel run --resume ID'.",
            field="pipeline_run",
        )
    return get(db, run.id)


def status_of(db: Database, run_id: str) -> str | None:
    """A pipeline run's status now (None: no such run)."""
    query = sa.select(pipeline_runs.c.status, pipeline_runs.c.error)
    with db.read() as conn:
        found = conn.execute(query.where(pipeline_runs.c.id == run_id)).one_or_none()
    return None if found is None else _status(found.status, found.error)


def _status(stored: str, error: str | None) -> str:
    """The status a row means, rows written before migration 0010 included."""
    if stored == "running" and error == CANCEL_REQUESTED:
        return "cancel_requested"
    if stored == "failed" and error is not None and error.startswith(CANCELLED):
        return "cancelled"
    return stored


def _error(stored: str, error: str | None) -> str | None:
    """The error a row means: without the markers rows before migration 0010 carried."""
    if error is None or (stored == "running" and error == CANCEL_REQUESTED):
        return None
    if stored == "failed" and error.startswith(CANCELLED):
        return error[len(CANCELLED) :]
    return error


def get(db: Database, ref: str) -> PipelineRun:
    """A pipeline run by id or unique prefix.

    Raises:
        NotFoundError: No pipeline run matches, or the prefix is ambiguous.
    """
    query = sa.select(pipeline_runs).where(pipeline_runs.c.id.startswith(ref, autoescape=True))
    with db.read() as conn:
        rows = conn.execute(query.limit(2)).mappings().all()
    if len(rows) != 1:
        what = "no pipeline run" if not rows else "more than one pipeline run"
        raise NotFoundError(f"{what} matches '{ref}'. List them with 'keel runs list --pipeline'.")
    return _record(rows[0])


def recent(db: Database, limit: int = 50) -> list[PipelineRun]:
    """Pipeline runs, newest first."""
    query = sa.select(pipeline_runs).order_by(
        pipeline_runs.c.started_at.desc(), pipeline_runs.c.id.desc()
    )
    with db.read() as conn:
        rows = conn.execute(query.limit(limit)).mappings().all()
    return [_record(row) for row in rows]


def reap_dead(db: Database) -> int:
    """Mark failed the ``running`` (or ``cancel_requested``) pipeline runs of this host whose
    process is gone (or whose pid now belongs to a later process); returns how many. Other
    hosts' runs are left alone."""
    t = pipeline_runs.c
    query = sa.select(t.id, t.owner_host, t.owner_pid, t.owner_started_at, t.owner_boot_id,
                      t.started_at)  # fmt: skip
    with db.read() as conn:
        rows = conn.execute(query.where(t.status.in_(ACTIVE))).all()
    dead = [row.id for row in rows if not _alive(row)]
    if dead:
        error = "the process running this pipeline died; its step runs say where it stopped"
        with db.write() as conn:
            conn.execute(
                pipeline_runs.update()
                .where(pipeline_runs.c.id.in_(dead), pipeline_runs.c.status.in_(ACTIVE))
                .values(status="failed", ended_at=utc_now(), error=error)
            )
    return len(dead)


def _alive(row: Any) -> bool:
    """Whether a pipeline run's owner may still run it (another host's cannot be judged)."""
    if row.owner_host != this_host() or row.owner_pid is None:
        return True
    if row.owner_started_at is not None:  # recorded since migration 0012: as a step run's owner
        owner = Owner(row.owner_host, row.owner_pid, row.owner_started_at, row.owner_boot_id)
        return judge(owner, None, row.started_at)[0] != "dead"
    # Older rows: the process must have started before the pipeline run (epoch seconds, which
    # a stepped clock can move: rows written before the upgrade only).
    from keel.store.processes import process_start_time

    began = process_start_time(row.owner_pid)
    return began is not None and began <= row.started_at.timestamp() + 1.0


def _record(row: Any) -> PipelineRun:
    return PipelineRun(
        id=row["id"],
        config_hash=row["config_hash"],
        trigger=row["trigger"],
        reason=row["reason"],
        status=_status(row["status"], row["error"]),
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        steps=tuple(row["steps"] or ()),
        error=_error(row["status"], row["error"]),
    )
