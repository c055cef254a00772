"""An order's status as the images move it (setting ``OrderStatusUpdates``), with an audit row per change.

scheduled -> in-progress when the first instance of a study arrives with the order's accession and MRN (the
same agreement linking needs), -> completed when a study is linked to it; an order freed again (unlink,
deletion) goes back to scheduled, but only from a status the images set (never one the EHR set since). A
cancelled order never changes (core/orders.status_moves_forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ..core.orders import COMPLETED, IN_PROGRESS, SCHEDULED, status_moves_forward
from . import link_candidates, outbox, study_locks
from .models import ImagingOrder, OrderStatusAudit

ACTOR = "ehr-imaging"


def advance(session: Session, order: ImagingOrder, to: str, *, study_uid: str | None, reason: str) -> bool:
    """Within the caller's transaction (the order locked): move the order forward to ``to`` if it may."""
    if not status_moves_forward(order.status, to):
        return False
    _change(session, order, to, study_uid=study_uid, reason=reason)
    return True


def reopen(session: Session, order: ImagingOrder, *, study_uid: str | None, reason: str) -> bool:
    """An order freed of its study: back to scheduled, if its current status is one the images set."""
    if order.status not in (IN_PROGRESS, COMPLETED):
        return False
    last = session.scalars(select(OrderStatusAudit).where(OrderStatusAudit.order_id == order.order_id)
                           .order_by(OrderStatusAudit.id.desc()).limit(1)).first()
    if last is None or last.to_status != order.status:
        return False  # the EHR set it: the EHR's to change
    _change(session, order, SCHEDULED, study_uid=study_uid, reason=reason)
    return True


@dataclass(frozen=True)
class Arrived:
    """A study's first instance, as study_arrived takes it."""

    accession: str | None
    patient_id: str | None
    study_uid: str
    orthanc_study_id: str = ""


def study_arrived(engine: Engine, arrival: Arrived, status_updates: bool, held_now: study_locks.HeldNow,
                  ) -> str | None:
    """The first instance of a study: its study.arrived event (store/outbox.py), and (``status_updates``) the one
    scheduled order with its accession and MRN (and no other study) is in progress now. Returns that order's
    id, or None (no such order, or more than one, or the study gone: see studies_arrived)."""
    return studies_arrived(engine, [arrival], status_updates, held_now)[0]


def studies_arrived(engine: Engine, arrivals: Sequence[Arrived], status_updates: bool,
                    held_now: study_locks.HeldNow) -> list[str | None]:
    """study_arrived for several studies (each StudyInstanceUID once) in one transaction, every study's lock
    taken first in UID order (as store/link_batches.py does); each one's order id, in the order given.

    ``held_now`` is asked under the locks: an arrival is read from Orthanc before them, and a deletion holds
    the study's lock through Orthanc's delete and its commit, so a study deleted while this waited is gone now
    and nothing of it is written (its order, freed by the deletion, stays freed)."""
    if not arrivals:
        return []
    with Session(engine) as session, session.begin():
        study_locks.lock_studies(session, [arrival.study_uid for arrival in arrivals])
        held = study_locks.still_held(session, {a.study_uid: a.orthanc_study_id for a in arrivals}, held_now)
        kept = [a for a in arrivals if a.orthanc_study_id in held]
        order_ids = dict(zip(kept, _all_arrived(session, kept, status_updates), strict=True))
        return [order_ids.get(arrival) for arrival in arrivals]


def _all_arrived(session: Session, arrivals: Sequence[Arrived], status_updates: bool) -> list[str | None]:
    """Every arrival's scheduled orders read (and locked) in one statement, then each arrival in turn."""
    keys = [link_candidates.candidate_key(a.study_uid, a.accession, a.patient_id) for a in arrivals]
    wanted = [key for key in keys if status_updates and key.accession and key.mrn]
    orders = link_candidates.scheduled_orders(session, wanted)
    return [_arrived(session, arrival, orders.get(key, [])) for arrival, key in zip(arrivals, keys, strict=True)]


def _arrived(session: Session, arrival: Arrived, scheduled: list[ImagingOrder]) -> str | None:
    study_uid = arrival.study_uid
    # As they are now: an earlier arrival of the batch may have moved one of them on, or linked it.
    orders = [o for o in scheduled if o.status == SCHEDULED and o.study_instance_uid in (None, study_uid)]
    order = orders[0] if len(orders) == 1 else None
    outbox.study_arrived(session, study_uid=study_uid, orthanc_study_id=arrival.orthanc_study_id,
                         accession=arrival.accession, mrn=arrival.patient_id,
                         order_id=order.order_id if order is not None else None)
    if order is None:
        return None
    advance(session, order, IN_PROGRESS, study_uid=study_uid, reason="the study's first instance arrived")
    return order.order_id


def _change(session: Session, order: ImagingOrder, to: str, *, study_uid: str | None, reason: str) -> None:
    outbox.order_status_changed(session, order, to=to, study_uid=study_uid, reason=reason)
    session.add(OrderStatusAudit(order_id=order.order_id, from_status=order.status, to_status=to,
                                 study_instance_uid=study_uid, actor=ACTOR, reason=reason))
    order.status = to
    order.updated_at = func.now()
