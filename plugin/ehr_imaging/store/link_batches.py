"""Recording several stable studies in one transaction: what the ingest worker does in a flood.

Each study is recorded exactly as ``links.record_ingest`` records it alone (its upload row, link, events and
order), in one transaction for the batch: one commit instead of one per study. Every study's lock is taken
first, all at once and in UID order, before any order row is locked: whoever else takes a study's lock (an
upload, a manual link, coercion) takes one and then orders, so no cycle of waits can form with a batch, and
two batches (a lease handed over) wait for each other in the same order. All or nothing: a failure rolls the
whole batch back, and the caller records its studies one by one instead (app/ingest.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ..core.study_identity import StudyObservation
from . import link_candidates, links, study_locks
from .models import StudyLink, StudyUidCollision


def record_ingests(engine: Engine, observations: Sequence[StudyObservation], policy: links.MatchPolicy, *,
                   still_stored: Callable[[str], bool], held_now: study_locks.HeldNow,
                   coerce: bool = False) -> list[links.LinkOutcome | None]:
    """links.record_ingest for each observation (no API upload's audit: C-STORE, stable studies), in one
    transaction, in the order given; the outcomes in that order. Each StudyInstanceUID once (the caller
    records a second Orthanc study under the same UID alone).

    ``held_now``: which of these Orthanc studies Orthanc holds, asked once the locks are held about those the
    deletion log names (study_locks.still_held). The studies were read before, and an API deletion holds a
    study's lock through Orthanc's delete and its commit: one deleted while this waited is gone now, and recording
    it again would only have it removed later as "deleted outside the EHR API". Its outcome is None: nothing of
    it is written."""
    uids = [seen.study_instance_uid for seen in observations]
    if not uids:
        return []
    if len(set(uids)) != len(uids):
        raise ValueError("a batch records each StudyInstanceUID once")
    with Session(engine) as session, session.begin():
        study_locks.lock_studies(session, uids)
        held = study_locks.still_held(session, {seen.study_instance_uid: seen.orthanc_study_id
                                                for seen in observations}, held_now)
        kept = [seen for seen in observations if seen.orthanc_study_id in held]
        recorded = {seen.orthanc_study_id: outcome for seen, outcome in zip(
            kept, _record_all(session, kept, policy, still_stored, coerce), strict=True)}
        return [recorded.get(seen.orthanc_study_id) for seen in observations]


def _record_all(session: Session, observations: Sequence[StudyObservation], policy: links.MatchPolicy,
                still_stored: Callable[[str], bool], coerce: bool) -> list[links.LinkOutcome]:
    """Each observation recorded in the caller's transaction, the studies' locks held.

    Written at the commit, each table's rows in one statement: no study of the batch reads another's rows (each
    its own StudyInstanceUID; orders they share are the same objects in this session). What each study's record
    reads first is read for all at once: their quarantine rows and candidate orders (both locked), and links."""
    if not observations:
        return []
    moved = {str(row.quarantine_orthanc_study_id): row for row in session.scalars(
        select(StudyUidCollision).where(StudyUidCollision.quarantine_orthanc_study_id.in_(
            [seen.orthanc_study_id for seen in observations])).with_for_update())}
    known = {link.study_instance_uid: link for link in session.scalars(
        select(StudyLink).where(StudyLink.study_instance_uid.in_([seen.study_instance_uid for seen in observations])))}
    keys = [_candidate_key(seen, known.get(seen.study_instance_uid)) for seen in observations
            if seen.orthanc_study_id not in moved]
    read = link_candidates.BatchReads(moved, known, link_candidates.candidate_orders(
        session, [key for key in keys if key is not None]))
    with session.no_autoflush:
        return [links.record_in(session, seen, policy, still_stored=still_stored, coerce=coerce, read=read)
                for seen in observations]


def _candidate_key(seen: StudyObservation, link: StudyLink | None) -> link_candidates.CandidateKey | None:
    """The key links._match will look the study's candidates up by (its facts once recorded), or None when it
    will not match (linked already, or a person unlinked it). Should it differ, _match reads them itself."""
    if link is not None and (link.order_id is not None or not link.auto_match):
        return None
    explicit = seen.explicit_order_id or (link.explicit_order_id if link is not None else None)
    return link_candidates.candidate_key(seen.study_instance_uid, seen.accession_number, seen.patient_id, explicit)
