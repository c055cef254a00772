"""Deletion requests and the deletion log: a pending request's life (asked, approved, rejected, expired), and
a deleted study's kept files (restorable until restored or purged). Returns values; decides nothing about
who may do what (app/deletion.py does).

A request is decided once: each decision is an UPDATE of a *pending*, unexpired row, so two admins deciding
at once (or a decision racing its expiry) cannot both win. The approval itself is written in the deletion's
own transaction (``store.studies.record_deletion`` calls ``mark_approved``), so a deletion Orthanc refuses
leaves the request pending.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg.errors import LockNotAvailable
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ..core.errors import Conflict, NotFound
from .models import DeletionRequest, DicomDeletionLog

REQUEST_STATUSES = ("pending", "approved", "rejected", "expired")
SYSTEM_ACTOR = "ehr-imaging"  # who "decides" an expiry


@dataclass(frozen=True)
class Approval:
    """A pending request approved by a person other than its requester (checked by app/deletion.py)."""

    request_id: uuid.UUID
    approved_by: str


@dataclass(frozen=True)
class RequestedStudy:
    """What a request keeps of the study it asks to delete (as Orthanc held it when asked)."""

    study_instance_uid: str
    orthanc_study_id: str | None
    patient_id: str | None
    patient_name: str | None
    accession_number: str | None
    order_id: str | None
    number_of_instances: int


@dataclass(frozen=True)
class RequestRecord:
    id: uuid.UUID
    study_instance_uid: str
    orthanc_study_id: str | None
    patient_id: str | None
    patient_name: str | None
    accession_number: str | None
    order_id: str | None
    number_of_instances: int
    reason: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    status: str
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    deletion_id: uuid.UUID | None


@dataclass(frozen=True)
class DeletionRecord:
    """One deletion log row; ``restorable``: its files are kept and not past their retention."""

    id: uuid.UUID
    study_instance_uid: str
    orthanc_study_id: str | None
    order_id: str | None
    patient_id: str | None
    patient_name: str | None
    accession_number: str | None
    number_of_series: int | None
    number_of_instances: int | None
    deleted_by: str
    reason: str
    deleted_at: datetime
    deletion_request_id: uuid.UUID | None
    approved_by: str | None
    restorable: bool
    kept_files: int
    files_kept_until: datetime | None
    purged_at: datetime | None
    restored_at: datetime | None
    restored_by: str | None


def _request(row: DeletionRequest) -> RequestRecord:
    return RequestRecord(**{name: getattr(row, name) for name in RequestRecord.__dataclass_fields__})


def _deletion(row: DicomDeletionLog, now: datetime) -> DeletionRecord:
    values = {name: getattr(row, name) for name in DeletionRecord.__dataclass_fields__}
    values["restorable"] = bool(row.restorable and row.files_kept_until and row.files_kept_until > now)
    return DeletionRecord(**values)


# --- requests ---------------------------------------------------------------------------------------------

def expire(session: Session) -> int:
    """Pending requests past their time become 'expired' (decided by the system, when they expired)."""
    result = session.execute(
        update(DeletionRequest).where(DeletionRequest.status == "pending", DeletionRequest.expires_at <= func.now())
        .values(status="expired", decided_by=SYSTEM_ACTOR, decided_at=DeletionRequest.expires_at))
    return int(getattr(result, "rowcount", 0) or 0)


def expire_requests(engine: Engine) -> int:
    with Session(engine) as session, session.begin():
        return expire(session)


def create_request(engine: Engine, study: RequestedStudy, *, actor: str, reason: str,
                   ttl: timedelta) -> RequestRecord:
    """A pending request; Conflict when the study already has one (one pending request per study)."""
    try:
        with Session(engine) as session, session.begin():
            expire(session)
            row = DeletionRequest(id=uuid.uuid4(), **dataclasses.asdict(study), reason=reason, requested_by=actor,
                                  status="pending", expires_at=func.now() + ttl)
            session.add(row)
            session.flush()
            session.refresh(row)
            return _request(row)
    except IntegrityError:
        pending = requests(engine, status="pending", study_uid=study.study_instance_uid, limit=1)[1]
        detail = f": {pending[0].id}" if pending else ""
        raise Conflict(f"a deletion request for this study is already pending{detail}") from None


def requests(engine: Engine, *, status: str | None = None, study_uid: str | None = None, limit: int = 50,
             offset: int = 0) -> tuple[int, list[RequestRecord]]:
    """Requests, newest first (expired ones marked so first)."""
    with Session(engine) as session, session.begin():
        expire(session)
        query = select(DeletionRequest)
        if status:
            query = query.where(DeletionRequest.status == status)
        if study_uid:
            query = query.where(DeletionRequest.study_instance_uid == study_uid)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.order_by(DeletionRequest.requested_at.desc(), DeletionRequest.id)
                               .limit(limit).offset(offset)).all()
        return total, [_request(row) for row in rows]


def pending_request(engine: Engine, request_id: uuid.UUID) -> RequestRecord:
    """The request if it is still pending; NotFound, or Conflict naming what became of it."""
    with Session(engine) as session, session.begin():
        expire(session)
        row = session.get(DeletionRequest, request_id)
        if row is None:
            raise NotFound(f"deletion request {request_id} not found")
        if row.status != "pending":
            raise Conflict(f"deletion request {request_id} is {row.status}, not pending")
        return _request(row)


def mark_approved(session: Session, request_id: uuid.UUID, *, deletion_id: uuid.UUID, actor: str) -> None:
    """Inside the deletion's transaction: the request approved (Conflict if it was decided or expired meanwhile)."""
    result = session.execute(
        update(DeletionRequest).where(DeletionRequest.id == request_id, DeletionRequest.status == "pending",
                                      DeletionRequest.expires_at > func.now())
        .values(status="approved", decided_by=actor, decided_at=func.now(), deletion_id=deletion_id))
    if not getattr(result, "rowcount", 0):
        raise Conflict(f"deletion request {request_id} is no longer pending (decided or expired meanwhile)")


def reject(engine: Engine, request_id: uuid.UUID, *, actor: str, reason: str) -> RequestRecord:
    pending_request(engine, request_id)  # NotFound / Conflict with what became of it
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(DeletionRequest).where(DeletionRequest.id == request_id, DeletionRequest.status == "pending",
                                          DeletionRequest.expires_at > func.now())
            .values(status="rejected", decided_by=actor, decided_at=func.now(), decision_reason=reason))
        if not getattr(result, "rowcount", 0):
            raise Conflict(f"deletion request {request_id} is no longer pending (decided or expired meanwhile)")
        row = session.get(DeletionRequest, request_id)
        assert row is not None
        session.refresh(row)
        return _request(row)


# --- the deletion log and kept files ----------------------------------------------------------------------

def deletions(engine: Engine, *, study_uid: str | None = None, restorable: bool | None = None, limit: int = 50,
              offset: int = 0) -> tuple[int, list[DeletionRecord]]:
    """Deletion log rows, newest first."""
    query = select(DicomDeletionLog)
    if study_uid:
        query = query.where(DicomDeletionLog.study_instance_uid == study_uid)
    if restorable is not None:
        kept = DicomDeletionLog.restorable.is_(True) & (DicomDeletionLog.files_kept_until > func.now())
        query = query.where(kept if restorable else ~kept)
    with Session(engine) as session:
        now = session.scalar(select(func.now()))
        assert now is not None
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.order_by(DicomDeletionLog.deleted_at.desc(), DicomDeletionLog.id)
                               .limit(limit).offset(offset)).all()
        return total, [_deletion(row, now) for row in rows]


def deletion(engine: Engine, deletion_id: uuid.UUID) -> DeletionRecord | None:
    with Session(engine) as session:
        row = session.get(DicomDeletionLog, deletion_id)
        now = session.scalar(select(func.now()))
        return _deletion(row, now) if row is not None and now is not None else None


def keep_files(session: Session, deletion_id: uuid.UUID, count: int, retention: timedelta) -> None:
    """Inside the deletion's transaction: its files are kept (``count``) until now + ``retention``."""
    row = session.get(DicomDeletionLog, deletion_id)
    assert row is not None
    row.kept_files, row.restorable, row.files_kept_until = count, count > 0, func.now() + retention


class Restoring:
    """A restorable deletion under its row lock while its files go back to Orthanc; ``done`` records it."""

    def __init__(self, session: Session, row: DicomDeletionLog, now: datetime) -> None:
        self._session, self._row = session, row
        self.record = _deletion(row, now)

    def done(self, actor: str) -> DeletionRecord:
        self._row.restorable, self._row.restored_by, self._row.restored_at = False, actor, func.now()
        self._session.flush()
        self._session.refresh(self._row)
        self.record = _deletion(self._row, self._row.deleted_at)  # no longer restorable, whatever the time
        return self.record


@contextmanager
def restoring(engine: Engine, deletion_id: uuid.UUID) -> Iterator[Restoring]:
    """The deletion, locked (Conflict if another restore or a purge holds it, or nothing is restorable)."""
    with Session(engine) as session, session.begin():
        try:
            row = session.get(DicomDeletionLog, deletion_id, with_for_update={"nowait": True})
        except OperationalError as exc:
            if not isinstance(exc.orig, LockNotAvailable):
                raise  # the database itself (503 via db.UNAVAILABLE)
            raise Conflict(f"deletion {deletion_id} is being restored or purged right now") from None
        if row is None:
            raise NotFound(f"deletion {deletion_id} not found")
        now = session.scalar(select(func.now()))
        assert now is not None
        locked = Restoring(session, row, now)
        if not locked.record.restorable:
            why = ("it was restored" if row.restored_at else "its files were purged" if row.purged_at
                   else "its files are past their retention" if row.restorable else "its files were not kept")
            raise Conflict(f"deletion {deletion_id} cannot be restored: {why}")
        yield locked


def purgeable(engine: Engine) -> list[uuid.UUID]:
    """Deletions whose kept files are past their retention."""
    with Session(engine) as session:
        return list(session.scalars(select(DicomDeletionLog.id).where(
            DicomDeletionLog.restorable.is_(True), DicomDeletionLog.files_kept_until <= func.now())).all())


@contextmanager
def purging(engine: Engine, deletion_id: uuid.UUID) -> Iterator[bool]:
    """Yields whether this deletion is still to purge (skipped if a restore holds it); marks it purged after."""
    with Session(engine) as session, session.begin():
        row = session.scalar(select(DicomDeletionLog).where(
            DicomDeletionLog.id == deletion_id, DicomDeletionLog.restorable.is_(True),
            DicomDeletionLog.files_kept_until <= func.now()).with_for_update(skip_locked=True))
        yield row is not None
        if row is not None:
            row.restorable, row.purged_at = False, func.now()
