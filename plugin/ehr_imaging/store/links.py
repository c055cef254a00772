"""Linking studies to orders in PostgreSQL, safely when several Orthanc nodes share the database.

Every change to one study's link happens in one transaction that holds an advisory lock on the
study UID and row locks on the candidate orders, so two nodes (or an ingest and an order update)
never link one study twice or one order to two studies; ``imaging_orders.study_instance_uid`` is
UNIQUE as the last line of defence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, time
from typing import Any

from sqlalchemy import Engine, func, or_, select, text
from sqlalchemy.orm import Session

from ..core.matching import Decision, OrderFacts, StudyFacts, decide, normalize_identifier
from .models import DicomUploadLog, ImagingOrder, StudyLink


@dataclass(frozen=True)
class StudyObservation:
    """A study as Orthanc holds it right now, read by the ingest worker."""

    study_instance_uid: str
    orthanc_study_id: str
    patient_id: str | None
    patient_name: str | None
    accession_number: str | None
    study_date: date | None
    study_time: time | None
    study_description: str | None
    modalities: tuple[str, ...]
    number_of_series: int
    number_of_instances: int
    total_size_bytes: int
    upload_source: str
    uploaded_by: str | None
    explicit_order_id: str | None = None


@dataclass(frozen=True)
class LinkOutcome:
    decision: Decision
    new_instances: int


def record_ingest(engine: Engine, seen: StudyObservation, *, window_days: int) -> LinkOutcome:
    """Record what arrived (upload log), keep the study's facts current, and link it if a rule allows."""
    with Session(engine) as session, session.begin():
        _lock_study(session, seen.study_instance_uid)
        link = session.get(StudyLink, seen.study_instance_uid)
        previous_instances = link.number_of_instances if link else 0
        previous_bytes = link.total_size_bytes if link else 0
        if link is None:
            link = StudyLink(study_instance_uid=seen.study_instance_uid, orthanc_study_id=seen.orthanc_study_id,
                             upload_source=seen.upload_source, uploaded_by=seen.uploaded_by)
            session.add(link)
        _copy_facts(link, seen)
        decision = _match(session, link, window_days)
        new_instances = max(seen.number_of_instances - previous_instances, 0)
        if new_instances:
            session.add(DicomUploadLog(
                patient_id=seen.patient_id, order_id=link.order_id, uploaded_by=seen.uploaded_by,
                study_instance_uid=seen.study_instance_uid, orthanc_study_id=seen.orthanc_study_id,
                number_of_files=new_instances, total_size_bytes=max(seen.total_size_bytes - previous_bytes, 0),
                original_patient_id=seen.patient_id, original_patient_name=seen.patient_name,
                original_accession_number=seen.accession_number,
                original_study_date=seen.study_date.strftime("%Y%m%d") if seen.study_date else None,
                original_modality=",".join(seen.modalities) or None, upload_status="success",
                upload_source=seen.upload_source,
            ))
        return LinkOutcome(decision, new_instances)


def rematch_for_order(engine: Engine, order_id: str, *, window_days: int) -> list[str]:
    """After an order changed, try again the unmatched studies it could concern; return those linked."""
    with Session(engine) as session:
        order = session.get(ImagingOrder, order_id)
        if order is None:
            return []
        keys = [k for k in (normalize_identifier(order.accession_number), normalize_identifier(order.mrn)) if k]
        uids = session.scalars(
            select(StudyLink.study_instance_uid).where(
                StudyLink.order_id.is_(None),
                or_(func.upper(StudyLink.accession_number).in_(keys), func.upper(StudyLink.patient_id).in_(keys)),
            )
        ).all()
    linked = []
    for uid in uids:
        with Session(engine) as session, session.begin():
            _lock_study(session, uid)
            link = session.get(StudyLink, uid)
            if link is not None and link.order_id is None and _match(session, link, window_days).linked:
                linked.append(uid)
    return linked


def _lock_study(session: Session, study_uid: str) -> None:
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:uid, 0))"), {"uid": study_uid})


def _copy_facts(link: StudyLink, seen: StudyObservation) -> None:
    for name in ("orthanc_study_id", "patient_id", "patient_name", "accession_number", "study_date", "study_time",
                 "study_description", "number_of_series", "number_of_instances", "total_size_bytes"):
        setattr(link, name, getattr(seen, name))
    link.modalities = list(seen.modalities)
    if seen.explicit_order_id:
        link.explicit_order_id = seen.explicit_order_id
    link.updated_at = func.now()


def _match(session: Session, link: StudyLink, window_days: int) -> Decision:
    """Decide on the study's link with the candidate orders locked, then write the outcome."""
    study = StudyFacts(
        study_instance_uid=link.study_instance_uid, patient_id=link.patient_id,
        accession_number=link.accession_number, modalities=frozenset(link.modalities or ()),
        study_date=link.study_date, explicit_order_id=link.explicit_order_id,
    )
    orders = _candidate_orders(session, study, link.order_id)
    if link.order_id is not None:
        # A link is final once made (a person may unlink it); keep the order's counts current.
        decision = Decision(order_id=link.order_id, rule=link.match_rule, reason=None,
                            candidates=(link.order_id,))
    else:
        decision = decide(study, [_facts(o) for o in orders], window_days=window_days)
    link.order_id = decision.order_id
    link.match_rule = decision.rule
    link.match_reason = decision.reason
    link.candidates = list(decision.candidates)
    if decision.order_id is not None:
        order = next(o for o in orders if o.order_id == decision.order_id)
        _fill_order(order, link)
    return decision


def _candidate_orders(session: Session, study: StudyFacts, linked_order: str | None) -> Sequence[ImagingOrder]:
    conditions: list[Any] = [ImagingOrder.study_instance_uid == study.study_instance_uid]
    accession = normalize_identifier(study.accession_number)
    mrn = normalize_identifier(study.patient_id)
    if accession:
        conditions.append(func.upper(ImagingOrder.accession_number) == accession)
    if mrn:
        conditions.append(func.upper(ImagingOrder.mrn) == mrn)
    for order_id in (study.explicit_order_id, linked_order):
        if order_id:
            conditions.append(ImagingOrder.order_id == order_id)
    query = select(ImagingOrder).where(or_(*conditions)).order_by(ImagingOrder.order_id).with_for_update()
    return session.scalars(query).all()


def _facts(order: ImagingOrder) -> OrderFacts:
    return OrderFacts(
        order_id=order.order_id, accession_number=order.accession_number, mrn=order.mrn, modality=order.modality,
        scheduled_start=order.scheduled_start, status=order.status, linked_study_uid=order.study_instance_uid,
    )


def _fill_order(order: ImagingOrder, link: StudyLink) -> None:
    order.study_instance_uid = link.study_instance_uid
    order.orthanc_study_id = link.orthanc_study_id
    order.number_of_series = link.number_of_series
    order.number_of_images = link.number_of_instances
    order.study_date = link.study_date
    order.study_time = link.study_time
    order.match_rule = link.match_rule
    if order.uploaded_at is None:
        order.uploaded_at = link.first_seen_at or func.now()
        order.uploaded_by = link.uploaded_by
        order.upload_source = link.upload_source
    order.updated_at = func.now()


def known_orthanc_ids(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return set(session.scalars(select(StudyLink.orthanc_study_id)).all())
