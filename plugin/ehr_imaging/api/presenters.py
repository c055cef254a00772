"""The API's JSON for what the store returns: orders, studies, upload history, the reconciliation queue, a
study's match, upload jobs, the stats counts, the audit timeline, deletions and deletion requests, events.

The store hands out values (``store.orders.Order``, ``store.studies.StudyRecord`` ...); the field names, their
order and the text forms of dates, times and identifiers the EHR reads are decided here, once (the OpenAPI
contracts in api/schemas.py describe the same shapes).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Any

from ..core.events import display_url
from ..store.audit import AuditEvent
from ..store.deletions import DeletionRecord, RequestRecord
from ..store.orders import Order
from ..store.outbox import EventRecord
from ..store.reconciliation import MatchStatus, QueueEntry
from ..store.studies import StudyRecord, UploadRecord
from ..store.summary import Counts
from ..store.upload_log import UploadJobRecord

ORDER_FIELDS = (
    "order_id", "accession_number", "patient_id", "mrn", "patient_family_name", "patient_given_name", "birth_date",
    "sex", "modality", "scheduled_start", "description", "referring_physician", "status", "station_aet",
    "study_instance_uid", "orthanc_study_id", "number_of_series", "number_of_images", "study_date", "study_time",
    "uploaded_at", "uploaded_by", "upload_source", "match_rule", "created_at", "updated_at",
)

UPLOAD_FIELDS = (
    "id", "patient_id", "order_id", "uploaded_by", "study_instance_uid", "orthanc_study_id", "number_of_files",
    "total_size_bytes", "file_names", "original_patient_id", "original_patient_name", "original_accession_number",
    "original_study_date", "original_modality", "modified_patient_id", "modified_patient_name",
    "modified_accession_number", "tags_modified", "upload_status", "error_message", "uploaded_at", "upload_source",
    "upload_duration_seconds", "is_deleted",
)


def _iso(value: Any) -> Any:
    """Dates, times and timestamps as ISO 8601 text; UUIDs as text; anything else as it is."""
    if isinstance(value, (date, datetime, time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def page(total: int, limit: int, offset: int, items: list[dict[str, Any]]) -> dict[str, Any]:
    """One page of a list route: how many match in all, the page asked for, its items."""
    return {"total": total, "limit": limit, "offset": offset, "items": items}


def order(found: Order) -> dict[str, Any]:
    return {name: _iso(getattr(found, name)) for name in ORDER_FIELDS}


def optional_order(found: Order | None) -> dict[str, Any] | None:
    return order(found) if found is not None else None


def study(study_uid: str, orthanc_id: str | None, *, patient_id: str | None, patient_name: str | None,
          study_date: date | None, study_time: time | None, description: str | None, accession: str | None,
          modalities: list[str], series: int, instances: int, order_id: str | None,
          match: dict[str, Any]) -> dict[str, Any]:
    """One study: DICOM keywords for its tags (DA/TM values), then its link."""
    return {
        "StudyInstanceUID": study_uid, "OrthancStudyID": orthanc_id, "PatientID": patient_id,
        "PatientName": patient_name, "StudyDate": study_date.strftime("%Y%m%d") if study_date else None,
        "StudyTime": study_time.strftime("%H%M%S") if study_time else None, "StudyDescription": description,
        "AccessionNumber": accession, "ModalitiesInStudy": modalities, "NumberOfSeries": series,
        "NumberOfInstances": instances, "order_id": order_id, "match": match,
    }


def study_match(record: StudyRecord) -> dict[str, Any]:
    """A recorded study's link: linked to its order, or unmatched (why)."""
    return {"status": "linked" if record.order_id else "unmatched", "rule": record.match_rule,
            "reason": record.match_reason}


def recorded_study(record: StudyRecord) -> dict[str, Any]:
    """A study as recorded (the study lists)."""
    return study(record.study_instance_uid, record.orthanc_study_id, patient_id=record.patient_id,
                 patient_name=record.patient_name, study_date=record.study_date, study_time=record.study_time,
                 description=record.study_description, accession=record.accession_number,
                 modalities=list(record.modalities), series=record.number_of_series,
                 instances=record.number_of_instances, order_id=record.order_id, match=study_match(record))


def upload(record: UploadRecord) -> dict[str, Any]:
    """One upload audit row."""
    return {name: _iso(getattr(record, name)) for name in UPLOAD_FIELDS}


def queue_entry(entry: QueueEntry) -> dict[str, Any]:
    """One study of the reconciliation queue."""
    return {
        "study_instance_uid": entry.study_instance_uid, "orthanc_study_id": entry.orthanc_study_id,
        "patient_id": entry.patient_id, "patient_name": entry.patient_name,
        "accession_number": entry.accession_number, "study_date": _iso(entry.study_date),
        "modalities": list(entry.modalities), "number_of_series": entry.number_of_series,
        "number_of_instances": entry.number_of_instances, "reason": entry.reason,
        "candidate_order_ids": list(entry.candidate_order_ids), "upload_source": entry.upload_source,
        "uploaded_by": entry.uploaded_by, "first_seen_at": entry.first_seen_at.isoformat(),
        "collides_with_orthanc_study_id": entry.collides_with_orthanc_study_id,
        "original_study_instance_uid": entry.original_study_instance_uid,
    }


def match_status(status: MatchStatus) -> dict[str, Any]:
    """Where one study stands."""
    return {
        "study_instance_uid": status.study_instance_uid, "status": status.status, "order_id": status.order_id,
        "match_rule": status.match_rule, "reason": status.reason,
        "candidate_order_ids": list(status.candidate_order_ids), "order": optional_order(status.order),
        "quarantined_orthanc_study_ids": list(status.quarantined_orthanc_study_ids),
    }


def upload_job(job: UploadJobRecord) -> dict[str, Any]:
    """A ZIP upload job's progress; its per-file results once it is done."""
    answer: dict[str, Any] = {
        "job_id": str(job.job_id), "status": job.status, "total_files": job.total_files,
        "processed_files": job.processed_files, "successful": job.successful, "failed": job.failed,
        "error": job.error, "created_at": job.created_at.isoformat(), "finished_at": _iso(job.finished_at),
    }
    if job.status in ("completed", "failed"):
        answer["results"] = job.results or []
    return answer


def counts(found: Counts) -> dict[str, int]:
    """The stats route's database counts."""
    return {"total_orders": found.orders, "matched_orders": found.matched_orders, "total_uploads": found.uploads}


def audit_event(event: AuditEvent) -> dict[str, Any]:
    """One row of the audit timeline (a refused upload names no study: null)."""
    return {"at": event.at.isoformat(), "started_at": event.started_at.isoformat(), "action": event.action,
            "actor": event.actor, "patient_id": event.patient_id, "mrn": event.mrn,
            "study_uid": event.study_uid or None, "order_id": event.order_id, "details": event.details or {}}


def deletion(record: DeletionRecord) -> dict[str, Any]:
    """A deletion log row: what was deleted, by whom and why, and whether its files can still be restored."""
    return {name: _iso(getattr(record, name)) for name in (
        "study_instance_uid", "orthanc_study_id", "order_id", "patient_id", "patient_name", "accession_number",
        "number_of_series", "number_of_instances", "deleted_by", "reason", "deleted_at", "deletion_request_id",
        "approved_by", "restorable", "kept_files", "files_kept_until", "purged_at", "restored_at", "restored_by",
    )} | {"deletion_id": str(record.id)}


def deletion_request(record: RequestRecord) -> dict[str, Any]:
    return {"deletion_request_id": str(record.id)} | {name: _iso(getattr(record, name)) for name in (
        "status", "study_instance_uid", "orthanc_study_id", "patient_id", "patient_name", "accession_number",
        "order_id", "number_of_instances", "reason", "requested_by", "requested_at", "expires_at", "decided_by",
        "decided_at", "decision_reason", "deletion_id")}


def event(record: EventRecord) -> dict[str, Any]:
    """An outbox event with its deliveries; an endpoint by its URL without user information or query (secrets)."""
    item = record.event
    return {
        "event_id": item.event_id, "type": item.type, "occurred_at": _iso(item.occurred_at),
        "study_instance_uid": item.study_instance_uid, "order_id": item.order_id, "patient_id": item.patient_id,
        "data": dict(item.data),
        "deliveries": [{"endpoint": display_url(d.endpoint), "status": d.status, "attempts": d.attempts,
                        "next_attempt_at": _iso(d.next_attempt_at), "last_attempt_at": _iso(d.last_attempt_at),
                        "delivered_at": _iso(d.delivered_at), "last_error": d.last_error}
                       for d in record.deliveries],
    }
