"""Imaging orders in PostgreSQL: idempotent upsert, read, list, cancel, the open orders of a worklist.

Orders come back as ``Order`` values (the row's fields, as typed values), never as the API's JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo
from typing import Any

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ..core.errors import Conflict
from ..core.matching import normalize_identifier
from ..core.orders import OPEN_STATUSES, OrderInput
from .models import ImagingOrder


@dataclass(frozen=True)
class Order:
    """One imaging order as recorded: the EHR's fields, then those matching fills in, then its timestamps."""

    order_id: str
    accession_number: str | None
    patient_id: str | None
    mrn: str | None
    patient_family_name: str | None
    patient_given_name: str | None
    birth_date: date | None
    sex: str | None
    modality: str | None
    scheduled_start: datetime | None
    description: str | None
    referring_physician: str | None
    status: str
    station_aet: str | None
    study_instance_uid: str | None
    orthanc_study_id: str | None
    number_of_series: int | None
    number_of_images: int | None
    study_date: date | None
    study_time: time | None
    uploaded_at: datetime | None
    uploaded_by: str | None
    upload_source: str | None
    match_rule: str | None
    created_at: datetime
    updated_at: datetime

    def fields(self) -> dict[str, Any]:
        """The order's fields by name (for the pure rules that read an order as a mapping: worklist, coercion)."""
        return dataclasses.asdict(self)


ORDER_FIELDS = tuple(field.name for field in dataclasses.fields(Order))  # ImagingOrder's columns


def order_of(row: ImagingOrder) -> Order:
    """The values of an order row (for the store modules that read orders in their own transactions)."""
    return Order(**{name: getattr(row, name) for name in ORDER_FIELDS})


@dataclass(frozen=True)
class OrderFilter:
    status: str | None = None
    unmatched: bool | None = None
    mrn: str | None = None
    accession: str | None = None
    patient_id: str | None = None
    patient_scope: frozenset[str] | None = None  # a scoped caller's EHR patients (core/patient_scope.py)
    limit: int = 50
    offset: int = 0


def upsert(engine: Engine, order: OrderInput) -> tuple[Order, bool]:
    """Insert or replace the EHR's fields of an order; match fields are left alone. Returns (order, created).

    An order linked to a study keeps its patient: another MRN would make the study (and, with tag coercion,
    its files) another patient's without anyone looking at it: Conflict (unlink first)."""
    row = order.as_row()
    values = insert(ImagingOrder).values(**row)
    statement = values.on_conflict_do_update(
        index_elements=[ImagingOrder.order_id],
        set_={**{name: values.excluded[name] for name in ImagingOrder.EHR_FIELDS}, "updated_at": func.now()},
    ).returning(ImagingOrder, (ImagingOrder.created_at == ImagingOrder.updated_at).label("created"))
    with Session(engine) as session, session.begin():
        # Columns, not the ORM object: the upsert below must return the row as written, not a cached copy.
        current = session.execute(select(ImagingOrder.mrn, ImagingOrder.study_instance_uid)
                                  .where(ImagingOrder.order_id == row["order_id"]).with_for_update()).first()
        if (current is not None and current.study_instance_uid is not None
                and normalize_identifier(current.mrn) != normalize_identifier(row.get("mrn"))):
            raise Conflict(f"order {row['order_id']} is linked to study {current.study_instance_uid}: its MRN"
                                " cannot change (unlink the study first)")
        result = session.execute(statement).one()
        return order_of(result[0]), bool(result[1])


def get(engine: Engine, order_id: str) -> Order | None:
    with Session(engine) as session:
        order = session.get(ImagingOrder, order_id)
        return order_of(order) if order else None


def search(engine: Engine, where: OrderFilter) -> tuple[int, list[Order]]:
    query = select(ImagingOrder)
    if where.status:
        query = query.where(ImagingOrder.status == where.status)
    if where.unmatched is not None:
        linked = ImagingOrder.study_instance_uid.is_(None)
        query = query.where(linked if where.unmatched else ~linked)
    if where.mrn:
        query = query.where(ImagingOrder.mrn == where.mrn)
    if where.accession:
        query = query.where(ImagingOrder.accession_number == where.accession)
    if where.patient_id:
        query = query.where(ImagingOrder.patient_id == where.patient_id)
    if where.patient_scope is not None:
        query = query.where(ImagingOrder.patient_id.in_(list(where.patient_scope)))
    with Session(engine) as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(
            query.order_by(ImagingOrder.scheduled_start.desc().nulls_last(), ImagingOrder.order_id)
            .limit(where.limit).offset(where.offset)
        ).all()
        return total, [order_of(row) for row in rows]


def cancel(engine: Engine, order_id: str) -> Order | None:
    with Session(engine) as session, session.begin():
        order = session.get(ImagingOrder, order_id, with_for_update=True)
        if order is None:
            return None
        order.status = "cancelled"
        order.updated_at = func.now()
        session.flush()
        session.refresh(order)
        return order_of(order)


def open_orders(engine: Engine, zone: tzinfo, *, station_aet: str, fallback_modalities: frozenset[str] = frozenset(),
                limit: int, mrn: str | None = None, accession: str | None = None,
                modality: str | None = None) -> list[Order]:
    """Scheduled and in-progress orders not yet performed (no study linked) for one modality, times in the
    site's zone: the orders naming ``station_aet``, and those naming no station whose modality is one of
    ``fallback_modalities`` (none when it is empty)."""
    station = ImagingOrder.station_aet == station_aet
    if fallback_modalities:
        unassigned = ImagingOrder.station_aet.is_(None) & ImagingOrder.modality.in_(sorted(fallback_modalities))
        station = or_(station, unassigned)
    query = select(ImagingOrder).where(ImagingOrder.status.in_(OPEN_STATUSES),
                                       ImagingOrder.study_instance_uid.is_(None), station)
    if mrn:
        query = query.where(ImagingOrder.mrn == mrn)
    if accession:
        query = query.where(ImagingOrder.accession_number == accession)
    if modality:
        query = query.where(ImagingOrder.modality == modality.upper())
    with Session(engine) as session:
        rows = session.scalars(query.order_by(ImagingOrder.scheduled_start, ImagingOrder.order_id).limit(limit)).all()
        return [dataclasses.replace(order_of(row), scheduled_start=row.scheduled_start.astimezone(zone)
                                    if row.scheduled_start else None) for row in rows]
