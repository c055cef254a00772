"""Orthanc's change events, adapted: each goes to the service that acts on it.

STABLE_STUDY, NEW_STUDY and ORTHANC_STARTED only wake the ingest worker, which reads them from Orthanc's change
log itself (app/ingest_worker.py); a study's DELETED (never in that log) goes to the worker's deletion spool;
NEW_STUDY and DELETED keep the viewer gate's study hierarchy true; ORTHANC_STOPPED writes the last viewer access
counts and gives the change log's lease up. Nothing here waits: Orthanc calls this on its own thread.
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
            worker.wake()  # it reads the change from Orthanc's log
        elif change_type == changes.ORTHANC_STARTED:
            worker.orthanc_started()  # it starts following the log (from its cursor)
        elif study_deleted:
            worker.submit_deleted(resource_id)
            gate.hierarchy.forget(resource_id)
        elif change_type == changes.NEW_STUDY:
            gate.hierarchy.study_arrived(resource_id)
            worker.wake()  # its order in progress (OrderStatusUpdates), read from the log
        elif change_type == changes.ORTHANC_STOPPED:
            worker.release()
            try:
                gate.access_log.flush()  # the last seconds of viewer access counts
            except Exception as exc:  # noqa: BLE001 - stopping anyway; say what is lost
                log_error(f"ehr-imaging: viewer access counts not written at stop ({type(exc).__name__})")

    return on_change
