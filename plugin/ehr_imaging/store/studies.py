"""Studies as the EHR sees them: queries over ``study_links`` (joined to their orders), deletion audit,
upload history. They come back as values (``StudyRecord``, ``UploadRecord``); the API's JSON is api/presenters'.

``study_links`` holds every recorded study's facts and link, so queries never walk Orthanc. Identifiers
are compared as matching compares them (upper-cased, trimmed by ingest).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Engine, String, Text, and_, any_, cast, func, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from ..core.matching import normalize_identifier
from . import deletions, links, name_search, outbox, study_locks
from .models import DicomDeletionLog, DicomUploadLog, ImagingOrder, StudyLink


@dataclass(frozen=True)
class StudyFilter:
    patient_id: str | None = None  # the EHR's patient UUID (on the orders)
    mrn: str | None = None
    patient_name: str | None = None
    modality: str | None = None
    accession: str | None = None
    study_date_from: date | None = None
    study_date_to: date | None = None
    order_status: str | None = None
    order_id: str | None = None
    study_uid: str | None = None  # one StudyInstanceUID (FHIR ImagingStudy?identifier=urn:dicom:uid|...)
    patient_scope: frozenset[str] | None = None  # a scoped caller's EHR patients (core/patient_scope.py)
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class StudyFacts:
    """What a deletion audit row keeps of a study."""

    study_instance_uid: str
    orthanc_study_id: str | None
    patient_id: str | None
    patient_name: str | None
    accession_number: str | None
    study_date: date | None
    modalities: tuple[str, ...]
    number_of_series: int
    number_of_instances: int


@dataclass(frozen=True)
class StudyRecord:
    """A recorded study's facts (as its last ingest saw them) and its link: an order, or why it has none."""

    study_instance_uid: str
    orthanc_study_id: str
    patient_id: str | None
    patient_name: str | None
    study_date: date | None
    study_time: time | None
    study_description: str | None
    accession_number: str | None
    modalities: tuple[str, ...]
    number_of_series: int
    number_of_instances: int
    order_id: str | None
    match_rule: str | None
    match_reason: str | None


def _record(link: StudyLink) -> StudyRecord:
    return StudyRecord(
        link.study_instance_uid, link.orthanc_study_id, link.patient_id, link.patient_name, link.study_date,
        link.study_time, link.study_description, link.accession_number, tuple(link.modalities or ()),
        link.number_of_series, link.number_of_instances, link.order_id, link.match_rule, link.match_reason)


def search(engine: Engine, where: StudyFilter) -> tuple[int, list[StudyRecord]]:
    """Matching studies, newest first (StudyDate, StudyTime), with their link."""
    with Session(engine) as session:
        broad = name_search.is_broad(session, where.patient_name) if where.patient_name else False
        if where.patient_name:
            name_search.plan_the_search(session, where.patient_name, broad)
        count, page = search_statements(where, broad_name=broad)
        # Two statements, also for the name's contains-match: its count comes from the trigram index and its page
        # from the newest-first index, or, when few match, from the name's index and sorted (name_search
        # .sort_the_matches); one statement with count() OVER read every match in date order: 2-4x slower.
        total = session.scalar(count) or 0
        if where.patient_name and not broad:  # a broad spelling has no index to find a few matches by
            name_search.sort_the_matches(session, total)
        return total, [_record(link) for link in session.scalars(page).all()]


def search_statements(where: StudyFilter, *, broad_name: bool = False) -> tuple[Any, Any]:
    """The two statements of a search: how many match, and the page (tests read their query plans);
    ``broad_name``: the name search matches most studies (name_search.is_broad)."""
    query = _filtered(select(StudyLink), where, broad_name)
    if where.order_status:  # the only filter on the order: otherwise no join at all
        query = query.join(ImagingOrder, ImagingOrder.order_id == StudyLink.order_id).where(
            ImagingOrder.status == where.order_status)
    # The order of ix_study_links_newest: a page is read from the index, not sorted from the table.
    page = query.order_by(StudyLink.study_date.desc().nulls_last(), StudyLink.study_time.desc().nulls_last(),
                          StudyLink.study_instance_uid).limit(where.limit).offset(where.offset)
    return select(func.count()).select_from(query.subquery()), page


def _orders_and_mrns(patient_ids: Iterable[str]) -> tuple[Any, Any]:
    """The EHR patients' order ids and their orders' MRNs (upper-cased, as matching compares), each as one array
    computed once per query (``= ANY(array)`` lets PostgreSQL read both sides of the OR from indexes; ``IN
    (subquery)`` inside an OR made it scan the whole table)."""
    ids = list(patient_ids)

    def array_of(column: Any) -> Any:  # the CAST makes ANY() take the array, not a set-returning subquery
        return cast(select(func.array_agg(column)).where(ImagingOrder.patient_id.in_(ids)).scalar_subquery(),
                    ARRAY(Text))

    return array_of(ImagingOrder.order_id), array_of(func.upper(ImagingOrder.mrn))


def _of_patients(patient_ids: Iterable[str]) -> Any:
    """A study belongs to EHR patients when linked to one of their orders, or, while linked to no order, when its
    PatientID is the MRN of one of their orders (an unmatched study of a known patient): "a patient's studies",
    defined once. A study a person linked to another patient's order is that patient's, whatever its PatientID."""
    orders, mrns = _orders_and_mrns(patient_ids)
    return or_(StudyLink.order_id == any_(orders),
               and_(StudyLink.order_id.is_(None), func.upper(StudyLink.patient_id) == any_(mrns)))


def _filtered(query: Any, where: StudyFilter, broad_name: bool = False) -> Any:
    if where.patient_id:
        query = query.where(_of_patients([where.patient_id]))
    if where.study_uid:
        query = query.where(StudyLink.study_instance_uid == where.study_uid.strip())
    if where.patient_scope is not None:
        query = query.where(_of_patients(where.patient_scope))
    if where.mrn:
        query = query.where(func.upper(StudyLink.patient_id) == normalize_identifier(where.mrn))
    if where.patient_name:
        query = query.where(name_search.contains(where.patient_name, broad=broad_name))
    if where.modality:  # containment, so ix_study_links_modalities (GIN) can answer it
        query = query.where(StudyLink.modalities.contains([where.modality.strip().upper()]))
    if where.accession:
        query = query.where(func.upper(StudyLink.accession_number) == normalize_identifier(where.accession))
    if where.study_date_from:
        query = query.where(StudyLink.study_date >= where.study_date_from)
    if where.study_date_to:
        query = query.where(StudyLink.study_date <= where.study_date_to)
    if where.order_id:
        query = query.where(StudyLink.order_id == where.order_id)
    return query


def of_patients(engine: Engine, study_uids: Iterable[str], patient_ids: Iterable[str]) -> set[str]:
    """Those of the recorded ``study_uids`` that belong to these EHR patients."""
    with Session(engine) as session:
        return set(session.scalars(select(StudyLink.study_instance_uid).where(
            StudyLink.study_instance_uid.in_(list(study_uids)), _of_patients(patient_ids))))


def uid_of_orthanc_study(engine: Engine, orthanc_study_id: str) -> str | None:
    """The StudyInstanceUID recorded for an Orthanc study (None: not recorded, e.g. a quarantined copy)."""
    with Session(engine) as session:
        return session.scalar(select(StudyLink.study_instance_uid).where(
            StudyLink.orthanc_study_id == orthanc_study_id))


def get(engine: Engine, study_uid: str) -> StudyRecord | None:
    with Session(engine) as session:
        link = session.get(StudyLink, study_uid)
        return _record(link) if link else None


@dataclass(frozen=True)
class RecordedStudy:
    """The Orthanc study recorded for a StudyInstanceUID, its PatientID, and whether it is linked to an order."""

    study_instance_uid: str
    orthanc_study_id: str
    patient_id: str | None
    linked: bool
    accepted_patient_id: str | None = None  # a PatientID a person accepted as this study's patient


def recorded(engine: Engine, study_uids: list[str]) -> dict[str, RecordedStudy]:
    """The recorded Orthanc study of each of these StudyInstanceUIDs that is recorded (one query, outside a
    transaction: every upload asks it first, and BEGIN and ROLLBACK around one SELECT are two round trips more)."""
    if not study_uids:
        return {}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        rows = conn.execute(select(StudyLink.study_instance_uid, StudyLink.orthanc_study_id, StudyLink.patient_id,
                                   StudyLink.order_id, StudyLink.accepted_patient_id)
                            .where(StudyLink.study_instance_uid.in_(study_uids)))
        return {uid: RecordedStudy(uid, orthanc_id, patient, order is not None, accepted)
                for uid, orthanc_id, patient, order, accepted in rows}


def order_exists(engine: Engine, order_id: str) -> bool:
    with Session(engine) as session:
        return session.get(ImagingOrder, order_id) is not None


# --- deletion ---------------------------------------------------------------------------------------------

def facts_of(engine: Engine, study_uid: str) -> StudyFacts | None:
    """A recorded study's facts (when Orthanc no longer has it)."""
    with Session(engine) as session:
        link = session.get(StudyLink, study_uid)
        return _facts(link) if link else None


def _facts(link: StudyLink) -> StudyFacts:
    return StudyFacts(link.study_instance_uid, link.orthanc_study_id, link.patient_id, link.patient_name,
                      link.accession_number, link.study_date, tuple(link.modalities or ()), link.number_of_series,
                      link.number_of_instances)


def record_deletion(engine: Engine, study: StudyFacts, *, actor: str, reason: str,
                    delete_in_orthanc: Callable[[], int | None] | None = None, deletion_id: uuid.UUID | None = None,
                    retention: timedelta | None = None, approval: deletions.Approval | None = None) -> str | None:
    """Audit a deleted study in one transaction: its order freed (an 'unlink' with the reason), a deletion
    row, its upload rows soft-deleted, its ``study_links`` row removed (so queries no longer list it and a
    later re-send is a new study). Returns the order it was linked to.

    ``delete_in_orthanc`` runs inside the transaction, under the study's lock: if Orthanc refuses, nothing
    is recorded; the ingest worker's DELETED handling for the same study waits for the lock, then finds
    the study gone and does nothing. It returns how many files it kept (restorable for ``retention``).
    ``approval``: the request approved in the same transaction (none recorded if it was decided meanwhile).
    """
    deletion_id = deletion_id or uuid.uuid4()
    with Session(engine) as session, session.begin():
        study_locks.lock_study(session, study.study_instance_uid)
        order_id = _delete(session, session.get(StudyLink, study.study_instance_uid), study, actor=actor, reason=reason,
                           deletion_id=deletion_id, approval=approval)
        if approval is not None:
            session.flush()
            deletions.mark_approved(session, approval.request_id, deletion_id=deletion_id,
                                    actor=approval.approved_by)
        if delete_in_orthanc is not None:
            session.flush()
            kept = delete_in_orthanc()
            if kept and retention:
                deletions.keep_files(session, deletion_id, kept, retention)
        return order_id


def _delete(session: Session, link: StudyLink | None, study: StudyFacts, *, actor: str, reason: str,
            deletion_id: uuid.UUID | None = None, approval: deletions.Approval | None = None) -> str | None:
    outbox.study_deleted(session, study, order_id=link.order_id if link else None, actor=actor, reason=reason)
    order_id = links.detach_order(session, link, actor=actor, reason=f"study deleted: {reason}") if link else None
    session.add(DicomDeletionLog(
        id=deletion_id or uuid.uuid4(),
        study_instance_uid=study.study_instance_uid, orthanc_study_id=study.orthanc_study_id, order_id=order_id,
        patient_id=study.patient_id, patient_name=study.patient_name, accession_number=study.accession_number,
        study_date=study.study_date.strftime("%Y%m%d") if study.study_date else None,
        modalities=",".join(study.modalities) or None, number_of_series=study.number_of_series,
        number_of_instances=study.number_of_instances, deleted_by=actor, reason=reason,
        deletion_request_id=approval.request_id if approval else None,
        approved_by=approval.approved_by if approval else None,
    ))
    session.execute(update(DicomUploadLog).where(DicomUploadLog.study_instance_uid == study.study_instance_uid)
                    .values(is_deleted=True))
    if link is not None:
        session.delete(link)
    return order_id


ORTHANC_ACTOR = "orthanc"
DELETED_IN_ORTHANC = "deleted in Orthanc, outside the EHR API (Explorer, REST API or storage recycling)"


def record_deleted_in_orthanc(engine: Engine, orthanc_study_id: str) -> str | None:
    """Orthanc's DELETED change for a study: audit it if it is still recorded under that Orthanc ID (a
    deletion through the API has already removed it). Returns the StudyInstanceUID when recorded."""
    with Session(engine) as session:
        uid = session.scalar(select(StudyLink.study_instance_uid)
                             .where(StudyLink.orthanc_study_id == orthanc_study_id).limit(1))
    if uid is None:
        return None
    with Session(engine) as session, session.begin():
        study_locks.lock_study(session, uid)
        link = session.get(StudyLink, uid)
        if link is None or link.orthanc_study_id != orthanc_study_id:
            return None  # deleted through the API meanwhile, or moved to a new Orthanc ID (tag coercion)
        _delete(session, link, _facts(link), actor=ORTHANC_ACTOR, reason=DELETED_IN_ORTHANC)
    return uid


# --- upload history ---------------------------------------------------------------------------------------

UPLOAD_STATUSES = ("success", "failed", "partial")


@dataclass(frozen=True)
class UploadFilter:
    status: str | None = None
    source: str | None = None
    patient_id: str | None = None
    patient_scope: frozenset[str] | None = None  # a scoped caller's EHR patients (core/patient_scope.py)
    upload_id: uuid.UUID | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class UploadRecord:
    """One upload audit row (``dicom_upload_logs``)."""

    id: uuid.UUID
    patient_id: str | None
    order_id: str | None
    uploaded_by: str | None
    study_instance_uid: str
    orthanc_study_id: str | None
    number_of_files: int
    total_size_bytes: int
    file_names: list[str]
    original_patient_id: str | None
    original_patient_name: str | None
    original_accession_number: str | None
    original_study_date: str | None
    original_modality: str | None
    modified_patient_id: str | None
    modified_patient_name: str | None
    modified_accession_number: str | None
    tags_modified: bool
    upload_status: str
    error_message: str | None
    uploaded_at: datetime
    upload_source: str
    upload_duration_seconds: float | None
    is_deleted: bool


def _upload(row: DicomUploadLog) -> UploadRecord:
    return UploadRecord(**{field.name: getattr(row, field.name) for field in dataclasses.fields(UploadRecord)})


def uploads(engine: Engine, where: UploadFilter) -> tuple[int, list[UploadRecord]]:
    """Upload audit rows, newest first; soft-deleted ones included (``is_deleted``): this is history."""
    query = select(DicomUploadLog)
    if where.status:
        query = query.where(DicomUploadLog.upload_status == where.status)
    if where.source:
        query = query.where(DicomUploadLog.upload_source == where.source)
    if where.patient_id:
        query = query.where(_uploads_of_patients([where.patient_id]))
    if where.patient_scope is not None:
        query = query.where(_uploads_of_patients(where.patient_scope))
    if where.upload_id is not None:
        query = query.where(DicomUploadLog.id == where.upload_id)
    with Session(engine) as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.order_by(DicomUploadLog.uploaded_at.desc(), cast(DicomUploadLog.id, String))
                               .limit(where.limit).offset(where.offset)).all()
        return total, [_upload(row) for row in rows]


def _uploads_of_patients(patient_ids: Iterable[str]) -> Any:
    """Upload rows of EHR patients: rows of their orders, and rows of no order that name them or a PatientID that
    is the MRN of one of their orders (a row of another patient's order is that patient's)."""
    ids = list(patient_ids)
    orders, mrns = _orders_and_mrns(ids)
    return or_(DicomUploadLog.order_id == any_(orders),
               and_(DicomUploadLog.order_id.is_(None),
                    or_(DicomUploadLog.patient_id.in_(ids), func.upper(DicomUploadLog.patient_id) == any_(mrns))))


def upload(engine: Engine, upload_id: uuid.UUID) -> UploadRecord | None:
    with Session(engine) as session:
        row = session.get(DicomUploadLog, upload_id)
        return _upload(row) if row else None
