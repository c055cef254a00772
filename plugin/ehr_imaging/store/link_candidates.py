"""The orders a study could be linked to, or moved to in progress, read and locked for many studies at once.

One statement per batch (the ingest worker records up to IngestBatchSize studies per transaction): a round trip
per study was most of the worker's time in a flood. A study alone asks the same statement with one row, so
the two paths cannot disagree on what a candidate is. Each order is locked ``FOR UPDATE`` once, in order_id
order, after the caller took its studies' locks (store/links.py's lock order: studies, then orders).

The join compares what the database holds; a caller recording several studies in one session re-checks the
fields its batch-mates may have changed meanwhile (an order's status and linked study, on the same objects).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, Text, and_, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import TableValuedAlias

from ..core.matching import StudyFacts, normalize_identifier
from ..core.orders import SCHEDULED
from .models import ImagingOrder, StudyLink, StudyUidCollision


@dataclass(frozen=True)
class CandidateKey:
    """What a study's candidate orders are found by: its UID, normalized accession and MRN, explicit order."""

    study_uid: str
    accession: str | None
    mrn: str | None
    explicit_order_id: str | None = None


@dataclass(frozen=True)
class BatchReads:
    """What a batch's studies read first, read for all of them at once (store/link_batches.py): quarantine rows
    by the Orthanc study moved to (locked), links by StudyInstanceUID, candidate orders by key (locked)."""

    moved: Mapping[str, StudyUidCollision]
    known: Mapping[str, StudyLink]
    candidates: Mapping[CandidateKey, list[ImagingOrder]]


def candidate_key(study_uid: str, accession: str | None, patient_id: str | None,
                  explicit_order_id: str | None = None) -> CandidateKey:
    return CandidateKey(study_uid, normalize_identifier(accession), normalize_identifier(patient_id),
                        explicit_order_id or None)


def key_of(study: StudyFacts) -> CandidateKey:
    return candidate_key(study.study_instance_uid, study.accession_number, study.patient_id, study.explicit_order_id)


def _keys_table(keys: Sequence[CandidateKey]) -> TableValuedAlias:
    columns = {"uid": [k.study_uid for k in keys], "acc": [k.accession for k in keys], "mrn": [k.mrn for k in keys],
               "explicit": [k.explicit_order_id for k in keys]}
    arrays = [bindparam(f"key_{name}", values, type_=ARRAY(Text)) for name, values in columns.items()]
    return func.unnest(*arrays).table_valued(*columns, with_ordinality="n").render_derived(name="k")


Condition = Callable[[Any], ColumnElement[bool]]  # the keys' columns (uid, acc, mrn, explicit) -> the join's ON


def _candidate(k: Any) -> ColumnElement[bool]:
    return or_(ImagingOrder.study_instance_uid == k.uid, func.upper(ImagingOrder.accession_number) == k.acc,
               func.upper(ImagingOrder.mrn) == k.mrn, ImagingOrder.order_id == k.explicit)


def _scheduled(k: Any) -> ColumnElement[bool]:
    return and_(func.upper(ImagingOrder.accession_number) == k.acc, func.upper(ImagingOrder.mrn) == k.mrn,
                ImagingOrder.status == SCHEDULED,
                ImagingOrder.study_instance_uid.is_(None) | (ImagingOrder.study_instance_uid == k.uid))


def statement(keys: Sequence[CandidateKey], condition: Condition) -> Select[Any]:
    """(the key's position from 1, an order), every order locked, by order_id."""
    table = _keys_table(keys)
    return (select(table.c.n, ImagingOrder).join(table, condition(table.c))
            .order_by(ImagingOrder.order_id, table.c.n).with_for_update(of=ImagingOrder))


def _grouped(session: Session, keys: Sequence[CandidateKey], condition: Condition,
             ) -> dict[CandidateKey, list[ImagingOrder]]:
    keys = list(dict.fromkeys(keys))
    found: dict[CandidateKey, list[ImagingOrder]] = {key: [] for key in keys}
    if keys:
        for n, order in session.execute(statement(keys, condition)).all():
            found[keys[n - 1]].append(order)
    return found


def candidate_orders(session: Session, keys: Sequence[CandidateKey]) -> dict[CandidateKey, list[ImagingOrder]]:
    """Each key's candidates (core.matching decides among them), by order_id: the order already linked to the
    study, those with its accession or MRN, its explicit order."""
    return _grouped(session, keys, CANDIDATE)


def scheduled_orders(session: Session, keys: Sequence[CandidateKey]) -> dict[CandidateKey, list[ImagingOrder]]:
    """Each key's scheduled orders with both its accession and MRN, free or already its study's, by order_id
    (a first instance moves exactly one such order to in progress: store/order_status.py)."""
    return _grouped(session, keys, SCHEDULED_WITH_BOTH)


CANDIDATE: Condition = _candidate
SCHEDULED_WITH_BOTH: Condition = _scheduled
