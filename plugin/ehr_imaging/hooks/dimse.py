"""The plugin's C-FIND and C-MOVE SCPs: Orthanc's own answer, audited.

Orthanc checks first that the calling modality may use the service (``DicomModalities``: ``AllowFind``,
``AllowMove``, off by default here); what it allows reaches these callbacks, which write a ``dimse_audit``
row before answering: no row, no answer. C-FIND is answered from Orthanc's index (``/tools/find``, capped
by ``DicomFindMaxAnswers``); C-MOVE sends with Orthanc's own C-STORE SCU (a job, polled without holding
the GIL). C-GET has no plugin callback in Orthanc 1.10: start-up refuses any configuration allowing it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..core.dimse import (
    STUDY_COMPUTED,
    STUDY_ROOT_FIND,
    DimseEvent,
    FindRequest,
    QueryKey,
    find_answer,
    find_request,
    move_request,
)
from ..core.worklist import to_bytes
from ..services import Services
from ..store import dimse_audit

MOVE_TIMEOUT_SECONDS = 3600.0
MOVE_POLL_SECONDS = 0.2


def make_find_callback(services: Services, log_error: Callable[[str], None]) -> Callable[..., None]:
    cap = services.settings.DicomFindMaxAnswers

    def on_find(answers: Any, query: Any, issuer_aet: str, called_aet: str) -> None:
        calling = (issuer_aet or "").strip()
        try:
            keys = [QueryKey(query.GetFindQueryTagGroup(i), query.GetFindQueryTagElement(i),
                             query.GetFindQueryTagName(i), query.GetFindQueryValue(i))
                    for i in range(query.GetFindQuerySize())]
            request = find_request(keys)
            found = services.pacs.post_json("/tools/find", request.orthanc_query(cap + 1))
            truncated = len(found) > cap
            items = [to_bytes(find_answer(request, resource, _computed(services.pacs, request, resource)),
                              STUDY_ROOT_FIND) for resource in found[:cap]]
            dimse_audit.record(services.engine, DimseEvent(
                "C-FIND", calling, called_aet, "answered", level=request.level, query=request.audit_query(),
                answers=len(items), truncated=truncated), services.node, services.audit_spool)
            for item in items:
                answers.FindAddAnswer(item)
            if truncated:
                answers.FindMarkIncomplete()
        except Exception as exc:
            log_error(f"ehr-imaging: C-FIND from {calling} failed: {type(exc).__name__}: {exc}")
            audit_failure(services, DimseEvent("C-FIND", calling, called_aet, "failed"), log_error)
            raise

    return on_find


def audit_failure(services: Services, event: DimseEvent, log_error: Callable[[str], None]) -> None:
    """Best effort: the request fails anyway; say so when even its failure cannot be recorded."""
    try:
        dimse_audit.record(services.engine, event, services.node, services.audit_spool)
    except Exception as exc:  # noqa: BLE001
        log_error(f"ehr-imaging: {event.service} failure from {event.calling_aet} not audited ({type(exc).__name__})")


def make_move_callback(services: Services, log_error: Callable[[str], None]) -> Callable[..., None]:
    pacs = services.pacs

    def on_move(**request: Any) -> None:
        # orthanc-python's keywords: OriginatorAET is the calling modality, SourceAET is Orthanc (who sends).
        calling = str(request.get("OriginatorAET") or "").strip()
        called = str(request.get("SourceAET") or "").strip() or None
        target = str(request.get("TargetAET") or "").strip()
        event = DimseEvent("C-MOVE", calling, called, "refused", level=str(request.get("Level") or ""),
                           query=_move_query(request), target_aet=target)
        try:
            wanted = move_request(request)
            resources = _resources(pacs, wanted.level, wanted.identifiers, wanted.by_accession)
            destination = _modality_named(pacs, target)
            event = DimseEvent("C-MOVE", calling, called, "allowed", level=wanted.level, query=event.query,
                               answers=len(resources), target_aet=target)
            dimse_audit.record(services.engine, event, services.node, services.audit_spool)  # before anything leaves
            if resources:
                job = pacs.post_json(f"/modalities/{destination}/store", {
                    "Resources": resources, "Asynchronous": True,
                    "MoveOriginatorAet": calling,
                    "MoveOriginatorID": int(request.get("OriginatorID") or 0)})
                _wait_for_job(pacs, str(job["ID"]))
        except Exception as exc:
            log_error(f"ehr-imaging: C-MOVE from {calling} to {target} failed: {type(exc).__name__}: {exc}")
            failed = "failed" if event.outcome == "allowed" else "refused"
            audit_failure(services, DimseEvent("C-MOVE", calling, called, failed, level=event.level, query=event.query,
                                               answers=event.answers, target_aet=target), log_error)
            raise

    return on_move


def _computed(pacs: Any, request: FindRequest, resource: dict[str, Any]) -> dict[str, Any]:
    """The computed study keys asked for (ModalitiesInStudy, counts): a few in-process REST calls per study."""
    if request.level != "Study" or not any(request.asks(name) for name in STUDY_COMPUTED):
        return {}
    series = [pacs.get_json(f"/series/{series_id}") for series_id in resource.get("Series") or []]
    modalities = sorted({str(s.get("MainDicomTags", {}).get("Modality") or "") for s in series} - {""})
    instances = sum(len(s.get("Instances") or []) for s in series)
    return {"ModalitiesInStudy": modalities, "NumberOfStudyRelatedSeries": str(len(series)),
            "NumberOfStudyRelatedInstances": str(instances)}


def _move_query(request: dict[str, Any]) -> dict[str, str]:
    names = ("PatientID", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    return {name: str(request[name]) for name in names if request.get(name)}


def _resources(pacs: Any, level: str, identifiers: tuple[str, ...], by_accession: bool) -> list[str]:
    found: list[str] = []
    for identifier in identifiers:
        if by_accession:
            matches = pacs.post_json("/tools/find", {"Level": "Study", "Query": {"AccessionNumber": identifier}})
            found += [str(m) for m in matches]
        else:
            found += [str(m["ID"]) for m in pacs.post_json_bytes("/tools/lookup", identifier.encode())
                      if m.get("Type") == level]
    return sorted(set(found))


def _modality_named(pacs: Any, aet: str) -> str:
    """Orthanc's name of the modality whose AET is the move destination; ValueError if unknown."""
    for name, entry in (pacs.get_json("/modalities?expand") or {}).items():
        if isinstance(entry, dict) and str(entry.get("AET", "")) == aet:
            return str(name)
    raise ValueError(f"C-MOVE destination {aet!r} is not a configured modality")


def _wait_for_job(pacs: Any, job_id: str) -> None:
    deadline = time.monotonic() + MOVE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        job = pacs.get_json(f"/jobs/{job_id}")
        if job.get("State") == "Success":
            return
        if job.get("State") == "Failure":
            raise RuntimeError(f"C-STORE job {job_id} failed: {job.get('ErrorDescription', '')}")
        time.sleep(MOVE_POLL_SECONDS)
    raise TimeoutError(f"C-STORE job {job_id} still running after {MOVE_TIMEOUT_SECONDS:.0f} s")
