"""Orthanc's change events, adapted: each goes to the service that acts on it.

STABLE_STUDY, NEW_STUDY (an order in progress) and a study's DELETED go to the ingest worker's queue (in
Orthanc's order); ORTHANC_STARTED
starts its catch-up; NEW_STUDY and DELETED keep the viewer gate's study hierarchy true; ORTHANC_STOPPED
writes the last viewer access counts. Nothing here waits: Orthanc calls this on its own thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orthanc

from ..app.dicomweb_gate import ViewerGate
from ..app.ingest_worker import IngestWorker


def make_change_callback(worker: IngestWorker, gate: ViewerGate,
                         log_error: Callable[[str], None]) -> Callable[[Any, Any, str], None]:
    changes, resources = orthanc.ChangeType, orthanc.ResourceType

    def on_change(change_type: Any, level: Any, resource_id: str) -> None:
        study_deleted = change_type == changes.DELETED and level == resources.STUDY
        if change_type == changes.STABLE_STUDY:
            worker.submit(resource_id)
        elif study_deleted:
            worker.submit_deleted(resource_id)
            gate.hierarchy.forget(resource_id)
        elif change_type == changes.NEW_STUDY:
            gate.hierarchy.study_arrived(resource_id)
            worker.submit_arrival(resource_id)  # its order in progress (OrderStatusUpdates)
        elif change_type == changes.ORTHANC_STARTED:
            worker.submit_unknown_studies()
        elif change_type == changes.ORTHANC_STOPPED:
            try:
                gate.access_log.flush()  # the last seconds of viewer access counts
            except Exception as exc:  # noqa: BLE001 - stopping anyway; say what is lost
                log_error(f"ehr-imaging: viewer access counts not written at stop ({type(exc).__name__})")

    return on_change
