"""Event-time windows judged again when late rows land in them.

With ``monitor.time_column`` a window is cut by the rows' own time, so rows can arrive after
``keel monitor run`` judged their window (a batch scored days later, a client that retries).
Each run keeps, per model, version, role and window size, what it judged of every window: its
rows and verdict (:class:`WindowLedger`, one ``monitor_window`` row of the ``events`` table per
window, updated in place when the window is judged again: superseded, never duplicated). On
the next run a window the checkpoint had passed that now holds more rows is **re-judged**: the
alert rules are evaluated on it again (an alert fires if it now crosses a threshold; one it
already raised is not raised twice: alerts are de-duplicated by rule and span) and the run
says which windows were re-judged and why.

The events table is used because no table holds per-window results and this change adds no
migration; a ``monitor_windows`` table (model, version, role, window, start, end, rows,
verdict, judged_at) would let a database index the look-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from keel.store.database import Database
from keel.store.tables import events, utc_now

__all__ = ["KIND", "Judged", "Rejudged", "WindowLedger", "rejudged_notes", "rejudged_windows"]

KIND = "monitor_window"
"""The ``events.kind`` of a window's stored judgement (no schedule trigger watches it)."""
SHOWN = 5
"""Re-judged windows named one by one in a run's notes."""


@dataclass(frozen=True, slots=True)
class Judged:
    """What a run judged of one window: its rows and verdict."""

    start: str
    end: str
    rows: int
    verdict: str
    judgements: int = 1


@dataclass(frozen=True, slots=True)
class Rejudged:
    """A window judged again because rows with an event time inside it arrived late."""

    start: str
    end: str
    rows_before: int
    rows_now: int
    verdict_before: str | None
    verdict_now: str

    @property
    def reason(self) -> str:
        """Why, in words."""
        late = self.rows_now - self.rows_before
        was = "no rows" if self.verdict_before is None else f"{self.rows_before} rows"
        return (
            f"{late} late row{'s' * (late != 1)} with an event time in it arrived after it "
            f"was judged ({was}, {self.verdict_before or 'not judged'} -> {self.rows_now} "
            f"rows, {self.verdict_now})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "start": self.start,
            "end": self.end,
            "rows_before": self.rows_before,
            "rows_now": self.rows_now,
            "verdict_before": self.verdict_before,
            "verdict_now": self.verdict_now,
            "reason": self.reason,
        }


class WindowLedger:
    """The judged windows of one model, version, role and window size."""

    def __init__(self, db: Database, model: str, version: str, role: str, window: str) -> None:
        self._db = db
        self._model = model
        self._key = {"version": version, "role": role, "window": window}

    def _rows(self) -> list[tuple[int, dict[str, Any]]]:
        query = sa.select(events.c.id, events.c.payload).where(
            events.c.kind == KIND, events.c.subject == self._model
        )
        with self._db.read() as conn:
            found = conn.execute(query.order_by(events.c.id)).all()
        return [
            (int(row.id), dict(row.payload))
            for row in found
            if all(row.payload.get(k) == v for k, v in self._key.items())
        ]

    def judged(self) -> dict[str, Judged]:
        """Each judged window by its start."""
        return {
            str(p["start"]): Judged(
                str(p["start"]), str(p["end"]), int(p["rows"]), str(p["verdict"]),
                int(p.get("judgements", 1)),
            )
            for _, p in self._rows()
        }  # fmt: skip

    def record(self, windows: Sequence[Mapping[str, Any]]) -> int:
        """Store what this run judged of ``windows``: a new window is added, one whose rows or
        verdict changed is updated in place; returns how many rows were written."""
        stored = {str(p["start"]): (i, p) for i, p in self._rows()}
        now = utc_now()
        written = 0
        with self._db.write() as conn:
            for window in windows:
                start, rows = str(window.get("start") or ""), int(window.get("rows") or 0)
                verdict = str(window.get("verdict"))
                if not start:
                    continue
                end = str(window.get("end") or "")
                payload = {**self._key, "start": start, "end": end, "rows": rows,
                           "verdict": verdict, "judged_at": now.isoformat()}  # fmt: skip
                if start not in stored:
                    conn.execute(
                        sa.insert(events).values(
                            kind=KIND, subject=self._model, payload=payload | {"judgements": 1},
                            created_at=now,
                        )
                    )  # fmt: skip
                    written += 1
                    continue
                row_id, before = stored[start]
                if (int(before["rows"]), str(before["verdict"])) == (rows, verdict):
                    continue
                payload["judgements"] = int(before.get("judgements", 1)) + 1
                payload["previous"] = {k: before.get(k) for k in ("rows", "verdict", "judged_at")}
                conn.execute(sa.update(events).where(events.c.id == row_id).values(payload=payload))
                written += 1
        return written


def rejudged_windows(
    windows: Sequence[Mapping[str, Any]],
    judged: Mapping[str, Judged],
    judged_until: float,
    end_of: Any,
) -> list[Rejudged]:
    """The windows ending at or before ``judged_until`` (the checkpoint: already judged) that
    now hold more rows than when they were judged (``end_of(window)``: its end as a number).

    With nothing stored yet (the first run that keeps judgements) nothing is re-judged: the
    stored rows are the baseline. A window judged while it held no rows has no record: any
    row in it now arrived late."""
    if not judged:
        return []
    out = []
    for window in windows:
        if end_of(window) > judged_until:
            continue  # not judged yet: checked as a fresh window
        start, rows = str(window.get("start") or ""), int(window.get("rows") or 0)
        before = judged.get(start)
        if rows > (0 if before is None else before.rows):
            out.append(
                Rejudged(
                    start, str(window.get("end") or ""), 0 if before is None else before.rows,
                    rows, None if before is None else before.verdict, str(window.get("verdict")),
                )
            )  # fmt: skip
    return out


def rejudged_notes(rejudged: Sequence[Rejudged], column: str | None) -> list[str]:
    """One note naming the re-judged windows and why (the first :data:`SHOWN`)."""
    if not rejudged:
        return []
    named = "; ".join(f"{r.start} .. {r.end}: {r.reason}" for r in rejudged[:SHOWN])
    more = f"; and {len(rejudged) - SHOWN} more" if len(rejudged) > SHOWN else ""
    by = f" by {column}" if column else ""
    return [
        f"re-judged {len(rejudged)} window{'s' * (len(rejudged) != 1)}{by} already checked, "
        f"since rows arrived late: {named}{more}."
    ]
