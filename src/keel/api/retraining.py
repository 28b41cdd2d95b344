"""The Python API of the retraining loop: run keel.yaml's ``retrain:`` policy for alerts.

>>> import keel.api
>>> checked = keel.api.monitor_run("bike-sharing", project="bikes")
>>> keel.api.retrain([a["id"] for a in checked["alerts"]], project="bikes")
[{"status": "canary", "pipeline_run": "...", "version": 2, "deployment_id": "...", ...}]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from keel.api.projects import _project

__all__ = ["retrain"]


def retrain(
    alert_ids: Sequence[int],
    *,
    project: str | Path | None = None,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Run the ``retrain:`` policy for the newest of these alerts that its ``on`` rule fired:
    add the labelled window to the training data, run the pipeline through its gates (trigger
    ``event``, the alert in its reason), and start a canary of a version that passes them.

    Returns:
        One summary per policy run (none when no alert is of the policy's rule): ``status``
        (canary, gates_failed, unchanged, no_data, deployment_active), ``alert_id``, ``rows_added``
        (labelled rows appended after the training-schema check), ``rows_excluded`` and
        ``excluded`` (refused rows per reason), ``rows_carried`` (rows kept from the previous
        policy run), ``labelled_sha256``, ``pipeline_run``, ``version``, ``gates``,
        ``deployment_id``.

    Raises:
        ConfigError: No ``retrain:`` policy, or bad canary settings (the field is named).
        NotFoundError: An unknown alert id.
    """
    from keel.features.custom import importable_from
    from keel.pipeline.retrain import run_for_alerts
    from keel.store.alert_store import AlertStore

    with _project(project) as proj, importable_from(proj.root):
        store = AlertStore(proj.metadata.database)
        found = [store.get(int(alert_id)) for alert_id in alert_ids]
        return [r.to_dict() for r in run_for_alerts(proj, found, console=console)]
