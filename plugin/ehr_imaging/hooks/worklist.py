"""DICOM modality worklist (MWL C-FIND) answered from the open imaging orders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pydicom

from ..core.worklist import to_bytes, worklist_item
from ..services import Services
from ..store import orders as order_store

MAX_ITEMS = 1000


def make_worklist_callback(services: Services, log_error: Callable[[str], None]) -> Callable[..., None]:
    zone = ZoneInfo(services.settings.Timezone)

    def on_worklist(answers: Any, query: Any, issuer_aet: str, called_aet: str) -> None:
        try:
            keys = _exact_keys(query.WorklistGetDicomQuery())
            for order in order_store.open_orders(services.engine, zone, limit=MAX_ITEMS, **keys):
                item = to_bytes(worklist_item(order))
                if query.WorklistIsMatch(item):
                    answers.WorklistAddAnswer(query, item)
        except Exception as exc:
            log_error(f"ehr-imaging: worklist query from {issuer_aet} failed: {type(exc).__name__}: {exc}")
            raise

    return on_worklist


def _exact_keys(query_bytes: bytes) -> dict[str, str | None]:
    """Exact (no wildcard) PatientID / AccessionNumber / Modality narrow the SQL; Orthanc matches the rest."""
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(query_bytes), force=True)
    step = ds.get("ScheduledProcedureStepSequence")
    modality = step[0].get("Modality") if step else None

    def exact(value: Any) -> str | None:
        text = str(value or "").strip()
        return text if text and not any(ch in text for ch in "*?\\") else None

    return {"mrn": exact(ds.get("PatientID")), "accession": exact(ds.get("AccessionNumber")),
            "modality": exact(modality)}
