"""DICOM modality worklist (MWL C-FIND) answered from the open imaging orders of the calling modality.

A modality sees the orders that name it (``station_aet``), plus, when ``WorklistModalities`` lists its AET,
the orders naming no station whose modality it does; nothing else. Answers are capped
(``WorklistMaxAnswers``) and every query is audited in ``dimse_audit`` before it is answered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pydicom

from ..core.dimse import DimseEvent
from ..core.worklist import audit_keys, station_modalities, to_bytes, worklist_item
from ..services import Services
from ..store import dimse_audit
from ..store import orders as order_store
from .dimse import audit_failure

MAX_SCAN = 5000  # open orders of one modality read per query before Orthanc's matcher filters them


def make_worklist_callback(services: Services, log_error: Callable[[str], None]) -> Callable[..., None]:
    settings = services.settings
    zone = ZoneInfo(settings.Timezone)
    fallback = station_modalities(settings.WorklistModalities)  # raises on a bad setting: start-up refuses it
    cap = settings.WorklistMaxAnswers

    def on_worklist(answers: Any, query: Any, issuer_aet: str, called_aet: str) -> None:
        calling = (issuer_aet or "").strip()
        try:
            asked = pydicom.dcmread(pydicom.filebase.DicomBytesIO(query.WorklistGetDicomQuery()), force=True)
            keys = _exact_keys(asked)
            orders = order_store.open_orders(services.engine, zone, station_aet=calling, limit=MAX_SCAN,
                                             fallback_modalities=fallback.get(calling, frozenset()), **keys)
            items: list[bytes] = []
            truncated = len(orders) == MAX_SCAN  # more open orders than were read: say the answer is partial
            for order in orders:
                item = to_bytes(worklist_item(order.fields(), station_aet=calling))
                if query.WorklistIsMatch(item):
                    if len(items) == cap:
                        truncated = True
                        break
                    items.append(item)
            event = DimseEvent("MWL", calling, called_aet, "answered", level="WORKLIST",
                               query=audit_keys(asked), answers=len(items), truncated=truncated)
            dimse_audit.record(services.engine, event, services.node, services.audit_spool)  # no audit row, no answer
            for item in items:
                answers.WorklistAddAnswer(query, item)
            if truncated:
                answers.WorklistMarkIncomplete()
        except Exception as exc:
            log_error(f"ehr-imaging: worklist query from {calling} failed: {type(exc).__name__}: {exc}")
            audit_failure(services, DimseEvent("MWL", calling, called_aet, "failed", level="WORKLIST"), log_error)
            raise

    return on_worklist


def _exact_keys(ds: pydicom.Dataset) -> dict[str, str | None]:
    """Exact (no wildcard) PatientID / AccessionNumber / Modality narrow the SQL; Orthanc matches the rest."""
    step = ds.get("ScheduledProcedureStepSequence")
    modality = step[0].get("Modality") if step else None

    def exact(value: Any) -> str | None:
        text = str(value or "").strip()
        return text if text and not any(ch in text for ch in "*?\\") else None

    return {"mrn": exact(ds.get("PatientID")), "accession": exact(ds.get("AccessionNumber")),
            "modality": exact(modality)}
