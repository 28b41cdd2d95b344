"""Alert evaluation: ``keel monitor run`` checks the windows not yet checked against the rules.

:func:`evaluate` is pure: for each rule it walks the report's windows in order and, wherever
the rule's condition holds in ``N`` consecutive windows (``for N windows``; a window without a
value breaks the streak), yields a :class:`Firing` for that span with every window's value as
evidence. :func:`monitor_run` computes the report of the windows since the last check (time
windows are UTC-aligned, so re-reading from a window boundary gives the same windows; a
realised-performance rule also looks again at checked windows within
``monitor.feedback.max_delay``, where late labels may have arrived), stores
each firing once (its de-duplication key is rule, model, version, role and span), keeps a rule
quiet for its ``cooldown`` after an alert (measured in the log's time: a backfill over a month
alerts as a live monitor would have), records the ``alert`` event the scheduler's ``on: alert``
trigger watches, and delivers to the rule's sinks (:mod:`keel.monitor.sinks`). With
``monitor.time_column`` a checked window that late rows (event time inside it) have grown is
judged again (:mod:`keel.monitor.rejudge`) and listed in the result's ``rejudged``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError
from keel.monitor.rejudge import Rejudged, WindowLedger, rejudged_notes, rejudged_windows
from keel.monitor.rules import AlertRule, rules_of
from keel.monitor.sinks import DeliveryCount, deliver_pending
from keel.store.alert_store import Alert, AlertStore, NewAlert

if TYPE_CHECKING:
    from keel.project import Project

__all__ = [
    "CONTEXT",
    "DELIVERY_PATIENCE",
    "Firing",
    "RunResult",
    "Skipped",
    "alerts_in",
    "evaluate",
    "monitor_run",
]

CONTEXT = 12
"""Windows of the quantity an alert's evidence keeps, up to and including its span."""
DELIVERY_PATIENCE = 60.0
"""Seconds a one-off run waits for its deliveries' retries before leaving them pending."""
_EXAMPLE = (
    "monitor:\n  alerts:\n    - name: feature-drift\n"
    "      when: drift.any_feature.psi > 0.2 for 2 windows"
)


@dataclass(frozen=True, slots=True)
class Firing:
    """A rule broken over a span of consecutive windows."""

    rule: AlertRule
    start: str
    end: str
    observed_at: datetime | None
    value: float
    feature: str | None
    windows: tuple[Mapping[str, Any], ...]
    context: tuple[Mapping[str, Any], ...] = ()
    """The quantity in the windows up to the span's end (at most :data:`CONTEXT`), to plot."""

    @property
    def message(self) -> str:
        """What broke, in words."""
        c = self.rule.condition
        where = f" ({self.feature})" if self.feature and c.quantity.feature == "any_feature" else ""
        streak = f" in {c.windows} consecutive windows" if c.windows > 1 else ""
        return f"{c.quantity.describe()}{where} = {self.value:.4g} {c.op} {c.threshold:g}{streak}"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A firing not stored: already stored (``duplicate``) or within the rule's cooldown."""

    rule: str
    start: str
    end: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "start": self.start, "end": self.end, "reason": self.reason}


@dataclass(frozen=True)
class RunResult:
    """One ``keel monitor run`` pass: what it checked, the alerts it stored, what it skipped."""

    model: str
    version: str
    role: str | None
    window: str
    windows_checked: int
    alerts: tuple[Alert, ...]
    skipped: tuple[Skipped, ...]
    deliveries: DeliveryCount
    checked_until: str | None
    report: Mapping[str, Any] = field(repr=False, default_factory=dict)
    rejudged: tuple[Rejudged, ...] = ()
    """Event-time windows already checked that late rows changed, judged again."""
    time_column: str | None = None  # monitor.time_column: windows by event time

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (without the report itself)."""
        return {
            "model": self.model,
            "version": self.version,
            "role": self.role,
            "window": self.window,
            "windows_checked": self.windows_checked,
            "alerts": [a.to_dict() for a in self.alerts],
            "skipped": [s.to_dict() for s in self.skipped],
            "deliveries": self.deliveries.to_dict(),
            "checked_until": self.checked_until,
            "latest_verdict": self.report.get("latest_verdict"),
            "rejudged": [r.to_dict() for r in self.rejudged],
            "notes": [
                *self.report.get("notes", []),
                *rejudged_notes(self.rejudged, self.time_column),
            ],
        }


def evaluate(rules: Sequence[AlertRule], windows: Sequence[Mapping[str, Any]]) -> list[Firing]:
    """Every span of consecutive windows in which a rule holds, in window order per rule."""
    firings: list[Firing] = []
    for rule in rules:
        condition = rule.condition
        streak: list[tuple[Mapping[str, Any], float, str | None]] = []
        measures = [condition.measure(window) for window in windows]
        for index, (window, measure) in enumerate(zip(windows, measures, strict=True)):
            if measure is None or not math.isfinite(measure.value):
                streak = []
                continue
            if not condition.breached(measure.value):
                streak = []
                continue
            streak.append((window, measure.value, measure.feature))
            if len(streak) < condition.windows:
                continue
            span = streak[-condition.windows :]
            first, last = span[0][0], span[-1][0]
            earliest = max(0, index + 1 - CONTEXT)
            context = tuple(
                {"start": w.get("start"), "end": w.get("end"), "value": m and m.value}
                for w, m in zip(windows[earliest : index + 1], measures[earliest : index + 1],
                                strict=True)
            )  # fmt: skip
            firings.append(
                Firing(
                    rule=rule,
                    start=str(first.get("start", "")),
                    end=str(last.get("end", "")),
                    observed_at=_observed(last),
                    value=span[-1][1],
                    feature=span[-1][2],
                    windows=tuple(_evidence(w, v, f) for w, v, f in span),
                    context=context,
                )
            )
    return firings


def monitor_run(
    project: Project,
    ref: str,
    *,
    version: str | None = None,
    role: str | None = None,
    window: str | None = None,
    step: str | None = None,
    since: str | None = None,
    until: str | None = None,
    patience: float = DELIVERY_PATIENCE,
) -> RunResult:
    """Check the windows of ``ref``'s log not yet checked, store and deliver the alerts.

    Args:
        project: The open project.
        ref: ``NAME``, ``NAME@VERSION`` or ``NAME@ALIAS``.
        version: Read the logged rows of this version (``all``: every version).
        role: Read only this deployment role.
        window: ``1d``, ``6h``, ``1000rows``; default keel.yaml's ``monitor.window``.
        step: Slide the windows by this.
        since: Read requests at or after this ISO time (besides the checkpoint).
        until: Read requests before this ISO time.
        patience: Seconds to wait for deliveries' retries (0: leave them for the next run).

    Raises:
        ConfigError: No rules in ``monitor.alerts``, or a rule that does not fit the model.
    """
    from keel.monitor.check import check_model, parse_time
    from keel.monitor.report import load_reference
    from keel.monitor.window import parse_window

    cfg = project.config.monitor
    if not cfg.alerts:
        msg = f"monitor.alerts in keel.yaml has no rules for keel monitor run; add one:\n{_EXAMPLE}"
        raise ConfigError(msg, field="monitor.alerts")
    name = ref.partition("@")[0]
    resolved = project.metadata.resolve(
        f"{name}@{version}" if version not in (None, "all") else ref
    )
    reference = load_reference(
        project.artifacts, resolved.package_sha256, version=str(resolved.version), target=None
    )
    rules = rules_of(cfg, inputs=list(reference.inputs), task=reference.task)
    spec = parse_window(window or cfg.window, step or (None if window else cfg.step),
                        field="--window" if window else "monitor.window")  # fmt: skip
    version_key = "all" if version == "all" else str(resolved.version)
    store = AlertStore(project.metadata.database)
    key = (name, version_key, role or "*", spec.describe())
    checkpoint = store.checkpoint(*key) if spec.kind != "all" else None
    # labels arrive late: a realised-performance rule looks at checked windows again, for as
    # long as monitor.feedback.max_delay lets a label come (its alerts de-duplicated by span)
    late = any(rule.condition.quantity.source == "realised" for rule in rules)
    read_since = since
    # with monitor.time_column the windows are in event time: --since (request time) cannot
    # skip the checked ones, the checkpoint alone does
    if checkpoint is not None and spec.kind == "time" and cfg.time_column is None:
        longest = max(rule.condition.windows for rule in rules)
        back = checkpoint - spec.size - (longest - 1) * spec.step
        if late:
            from keel.monitor.feedback import delay_seconds

            back -= delay_seconds(cfg.feedback.max_delay)
        back = math.floor(back / spec.step) * spec.step
        asked = parse_time(since, "--since")
        if asked is None or asked < back:
            read_since = _iso(back)
    report = check_model(project, ref, version=version, role=role, window=window, step=step,
                         since=read_since, until=until)  # fmt: skip
    windows = list(report["windows"]) or [_whole(report)]
    fresh = [w for w in windows if checkpoint is None or _end_value(w, spec.kind) > checkpoint]
    # event-time windows: rows that arrive late land in windows already checked
    ledger = None
    judged: dict[str, Any] = {}
    rejudged: list[Rejudged] = []
    if cfg.time_column is not None and spec.kind in ("time", "months"):
        ledger = WindowLedger(project.metadata.database, *key)
        judged = ledger.judged()
        if checkpoint is not None:
            rejudged = rejudged_windows(windows, judged, checkpoint,
                                        lambda w: _end_value(w, spec.kind))  # fmt: skip
    again = {r.start for r in rejudged}
    firings = [
        f
        for f in evaluate(rules, windows)
        if checkpoint is None
        or _span_end(f) > checkpoint
        or any(w.get("start") in again for w in f.windows)
        or (
            f.rule.condition.quantity.source == "realised"
            and not store.exists(_dedup_key(f.rule.name, name, version_key, role, f.start, f.end))
        )
    ]
    firings.sort(key=lambda f: (_span_end(f), f.rule.name))
    stored, skipped = _store(store, firings, name, version_key, role)
    delivered = deliver_pending(store, patience=patience)
    closed = _closed_until(windows, spec.kind, spec.size)
    if closed is not None and spec.kind != "all":
        store.set_checkpoint(*key, closed)
    if ledger is not None:  # what this run judged (fresh, re-judged): the next one compares
        starts = again | {w.get("start") for w in fresh}
        judged_now = [w for w in report["windows"] if not judged or w.get("start") in starts]
        ledger.record(judged_now)
    return RunResult(
        model=name,
        version=version_key,
        role=role,
        window=spec.describe(),
        windows_checked=len(fresh) + len(rejudged),
        alerts=tuple(stored),
        skipped=tuple(skipped),
        deliveries=delivered,
        checked_until=None if closed is None else _checked_text(closed, spec.kind),
        report=report,
        rejudged=tuple(rejudged),
        time_column=cfg.time_column,
    )


def _store(
    store: AlertStore, firings: Sequence[Firing], model: str, version: str, role: str | None
) -> tuple[list[Alert], list[Skipped]]:
    stored: list[Alert] = []
    skipped: list[Skipped] = []
    last: dict[str, datetime | None] = {}
    for firing in firings:
        rule = firing.rule
        key = _dedup_key(rule.name, model, version, role, firing.start, firing.end)
        if store.exists(key):
            skipped.append(Skipped(rule.name, firing.start, firing.end, "duplicate"))
            continue
        if rule.name not in last:
            last[rule.name] = store.last_observed(rule.name, model, version, role)
        before, now = last[rule.name], firing.observed_at
        if before is not None and now is not None and rule.cooldown > 0:
            quiet = (now - before).total_seconds()
            if 0 <= quiet < rule.cooldown:
                why = (
                    f"cooldown: {quiet:.0f} s after this rule's previous alert, within its "
                    f"cooldown of {rule.cooldown:.0f} s"
                )
                skipped.append(Skipped(rule.name, firing.start, firing.end, why))
                continue
        alert = store.record(
            NewAlert(
                dedup_key=key,
                rule=rule.name,
                model=model,
                version=version,
                role=role,
                severity=rule.severity,
                condition=rule.condition.describe(),
                window_start=firing.start,
                window_end=firing.end,
                observed_at=now,
                value=firing.value,
                threshold=rule.condition.threshold,
                message=firing.message,
                evidence={
                    "quantity": rule.condition.quantity.describe(),
                    "op": rule.condition.op,
                    "threshold": rule.condition.threshold,
                    "for_windows": rule.condition.windows,
                    "feature": firing.feature,
                    "windows": list(firing.windows),
                    "context": list(firing.context),
                },
                sinks=[(s.kind, s.target(), _spec(s)) for s in rule.sinks],
            )
        )
        if alert is None:
            skipped.append(Skipped(rule.name, firing.start, firing.end, "duplicate"))
            continue
        stored.append(alert)
        previous = last[rule.name]
        if now is not None and (previous is None or now > previous):
            last[rule.name] = now
    return stored, skipped


def _spec(sink: Any) -> dict[str, Any]:
    from dataclasses import asdict

    spec = asdict(sink)
    if "argv" in spec:
        spec["argv"] = list(spec["argv"])
    return spec


def _dedup_key(rule: str, model: str, version: str, role: str | None, start: str, end: str) -> str:
    text = "\0".join((rule, model, version, role or "*", start, end))
    return hashlib.sha256(text.encode()).hexdigest()


def _evidence(window: Mapping[str, Any], value: float, feature: str | None) -> dict[str, Any]:
    performance = window.get("performance") or {}
    return {
        "start": window.get("start"),
        "end": window.get("end"),
        "rows": window.get("rows"),
        "verdict": window.get("verdict"),
        "value": value,
        "feature": feature,
        "drifted_columns": list(window.get("drifted_columns") or [])[:10],
        "estimated": {k: performance.get(k) for k in ("accuracy", "accuracy_error",
                                                      "roc_auc", "roc_auc_error")}
        if performance else None,
    }  # fmt: skip


def _whole(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report's overall selection as one window (``window: all``)."""
    first, last = _first_last(report)
    return {
        **{
            k: report.get(k)
            for k in ("rows", "columns", "prediction", "performance", "realised", "latency")
            if k in report
        },
        "verdict": report.get("verdict"),
        "drifted_columns": report.get("drifted_columns", []),
        "start": "" if first is None else _iso(first),
        "end": "" if last is None else _iso(last),
        "first_request": first,
        "last_request": last,
    }


def _first_last(report: Mapping[str, Any]) -> tuple[float | None, float | None]:
    windows = report.get("windows") or []
    firsts = [w["first_request"] for w in windows if w.get("first_request") is not None]
    lasts = [w["last_request"] for w in windows if w.get("last_request") is not None]
    overall = report.get("first_request"), report.get("last_request")
    return (min(firsts) if firsts else overall[0], max(lasts) if lasts else overall[1])


def _observed(window: Mapping[str, Any]) -> datetime | None:
    """The window's end as a time (a time window), else its last request's time."""
    end = str(window.get("end") or "")
    if end and not end.isdigit():
        try:
            return datetime.fromisoformat(end.replace("Z", "+00:00"))
        except ValueError:
            pass
    last = window.get("last_request")
    return None if last is None else datetime.fromtimestamp(float(last), UTC)


def _end_value(window: Mapping[str, Any], kind: str) -> float:
    end = str(window.get("end") or "")
    if kind == "rows":
        return float(end or 0)
    observed = _observed(window)
    return observed.timestamp() if observed is not None else math.inf


def _span_end(firing: Firing) -> float:
    if firing.end.isdigit():
        return float(firing.end)
    return firing.observed_at.timestamp() if firing.observed_at is not None else math.inf


def _closed_until(windows: Sequence[Mapping[str, Any]], kind: str, size: int) -> float | None:
    """The end of the last window that can no longer change (its time is past, its rows full)."""
    now = datetime.now(UTC).timestamp()
    ends = []
    for window in windows:
        end = _end_value(window, kind)
        full = int(window.get("rows") or 0) >= size
        if (kind in ("time", "months") and end <= now) or (kind == "rows" and full):
            ends.append(end)
    return max(ends) if ends else None


def _checked_text(value: float, kind: str) -> str:
    return f"row {int(value)}" if kind == "rows" else _iso(value)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def alerts_in(store: AlertStore, report: Mapping[str, Any], *, limit: int = 500) -> list[Alert]:
    """The stored alerts of the report's model, version, role and period (newest first)."""
    windows = report.get("windows") or []
    version = report.get("version")
    found = []
    rows = bool(windows) and str(windows[0].get("start", "")).isdigit()
    low = min((str(w["start"]) for w in windows), key=_order(rows), default=None)
    high = max((str(w["end"]) for w in windows), key=_order(rows), default=None)
    for alert in store.list_alerts(model=str(report.get("model")), limit=limit):
        if alert.version not in (version, "all") or alert.role != report.get("role"):
            continue
        if low is not None and high is not None:
            key = _order(rows)
            if key(alert.window_end) <= key(low) or key(alert.window_start) >= key(high):
                continue
        found.append(alert)
    return found


def _order(rows: bool) -> Any:
    """Sort key of window bounds: row numbers as numbers, ISO times as text."""
    return (lambda text: float(text) if text.isdigit() else math.inf) if rows else str
