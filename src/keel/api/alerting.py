"""The Python API for alerts: ``keel monitor run``, the stored alerts, and monitoring reports.

>>> import keel
>>> result = keel.monitor_run("adult", window="1d", project="adult-demo")
>>> [a["message"] for a in result["alerts"]]
>>> keel.alerts(model="adult", status="open", project="adult-demo")
>>> keel.ack_alert(result["alerts"][0]["id"], project="adult-demo")
>>> keel.monitor_report("adult", "report.html", window="1d", project="adult-demo")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keel.api.projects import _project

__all__ = [
    "ack_alert",
    "alerts",
    "get_alert",
    "monitor_metrics",
    "monitor_report",
    "monitor_run",
    "render_report",
    "resolve_alert",
    "write_report",
]


def monitor_run(
    ref: str,
    *,
    project: str | Path | None = None,
    version: str | None = None,
    role: str | None = None,
    window: str | None = None,
    step: str | None = None,
    since: str | None = None,
    until: str | None = None,
    patience: float | None = None,
) -> dict[str, Any]:
    """Check the windows of ``ref``'s prediction log not checked yet against keel.yaml's
    ``monitor.alerts``; store each new alert once (with its evidence and an ``alert`` event that
    ``on: alert`` schedules watch) and deliver it to its sinks.

    ``version``, ``role``, ``window``, ``step``, ``since`` and ``until`` select as in
    :func:`keel.monitor`. ``patience``: seconds to wait for deliveries' retries (default 60;
    0 leaves failed attempts pending for the next run). See :func:`keel.monitor.alerts.monitor_run`.
    """
    from keel.features.custom import importable_from
    from keel.monitor.alerts import DELIVERY_PATIENCE
    from keel.monitor.alerts import monitor_run as run_checks

    with _project(project) as proj, importable_from(proj.root):
        result = run_checks(
            proj, ref, version=version, role=role, window=window, step=step, since=since,
            until=until, patience=DELIVERY_PATIENCE if patience is None else patience,
        )  # fmt: skip
        return result.to_dict()


def alerts(
    *,
    project: str | Path | None = None,
    model: str | None = None,
    status: str | None = None,
    rule: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Stored alerts, newest first (``status``: open, acknowledged or resolved)."""
    from keel.store.alert_store import AlertStore

    with _project(project) as proj:
        store = AlertStore(proj.metadata.database)
        found = store.list_alerts(model=model, status=status, rule=rule, limit=limit)
        return [a.to_dict() for a in found]


def get_alert(alert_id: int, *, project: str | Path | None = None) -> dict[str, Any]:
    """One alert with its evidence and its deliveries (NotFoundError when there is none)."""
    from keel.store.alert_store import AlertStore

    with _project(project) as proj:
        store = AlertStore(proj.metadata.database)
        alert = store.get(alert_id).to_dict()
        alert["deliveries"] = [d.to_dict() for d in store.deliveries(alert_id)]
        return alert


def ack_alert(
    alert_id: int, *, project: str | Path | None = None, actor: str | None = None
) -> dict[str, Any]:
    """Acknowledge an alert, recording who did (``actor``: default KEEL_ACTOR or the user)."""
    return _set_status(alert_id, "acknowledged", project, actor)


def resolve_alert(
    alert_id: int, *, project: str | Path | None = None, actor: str | None = None
) -> dict[str, Any]:
    """Mark an alert resolved, recording who did."""
    return _set_status(alert_id, "resolved", project, actor)


def _set_status(
    alert_id: int, status: str, project: str | Path | None, actor: str | None
) -> dict[str, Any]:
    from keel.settings import current_actor
    from keel.store.alert_store import AlertStore

    with _project(project) as proj:
        store = AlertStore(proj.metadata.database)
        return store.set_status(alert_id, status, actor=current_actor(actor)).to_dict()


def monitor_report(
    ref: str,
    path: str | Path,
    *,
    project: str | Path | None = None,
    version: str | None = None,
    role: str | None = None,
    window: str | None = None,
    step: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    """Write the monitoring report of ``ref`` as one self-contained HTML page to ``path``
    (drift per feature over time, prediction drift, estimated and realised performance,
    latency, the alerts of the period); returns the report's JSON."""
    from keel.features.custom import importable_from
    from keel.monitor.check import check_model

    with _project(project) as proj, importable_from(proj.root):
        report = check_model(proj, ref, version=version, role=role, window=window, step=step,
                             since=since, until=until)  # fmt: skip
    render_report(report, path, project=project)
    return report


def render_report(
    report: dict[str, Any], path: str | Path, *, project: str | Path | None = None
) -> Path:
    """Write a computed monitoring report (:func:`keel.monitor`'s) as HTML, with the stored
    alerts of its period; returns the path written."""
    from keel.monitor.alerts import alerts_in
    from keel.monitor.html import render_html
    from keel.store.alert_store import AlertStore

    with _project(project) as proj:
        found = alerts_in(AlertStore(proj.metadata.database), report)
    target = Path(path)
    write_report(target, render_html(report, [a.to_dict() for a in found]))
    return target


def monitor_metrics(
    ref: str,
    *,
    project: str | Path | None = None,
    version: str | None = None,
    role: str | None = None,
    window: str | None = None,
    step: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> str:
    """The latest window's gauges of ``ref`` in Prometheus' text exposition format."""
    from keel.features.custom import importable_from
    from keel.monitor.check import check_model
    from keel.monitor.html import render_prometheus

    with _project(project) as proj, importable_from(proj.root):
        report = check_model(proj, ref, version=version, role=role, window=window, step=step,
                             since=since, until=until)  # fmt: skip
    return render_prometheus(report)


def write_report(path: Path, text: str, *, option: str = "--report") -> None:
    """Write ``text`` to ``path`` atomically; a clear error when the folder cannot take it."""
    from keel.errors import ConfigError

    if path.is_dir():
        msg = f"{option} {path} is a folder; name a file such as {path / 'report.html'}."
        raise ConfigError(msg, field=option)
    if not path.parent.exists():
        msg = f"{option} {path}: folder {path.parent} does not exist; create it or pick another."
        raise ConfigError(msg, field=option)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        msg = f"{option} {path}: cannot write it: {exc.strerror}."
        raise ConfigError(msg, field=option) from exc
