"""The per-study lock every change to a study's record holds (a PostgreSQL advisory lock on its UID, for the
transaction): links, ingests, deletions, arrivals and coercions of one study never interleave, on one node or
several. Several studies' locks are taken in one statement, in UID order, so two batches never wait on each other
in a cycle (store/link_batches.py); whoever takes study locks takes them before any order row."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from .deletion_models import DicomDeletionLog

# Which of these Orthanc studies Orthanc holds now: asked once a study's lock is held by whoever read the study
# from Orthanc before taking it (a deletion holds the lock through Orthanc's delete and its commit).
HeldNow = Callable[[list[str]], set[str]]

_ONE = text("SELECT pg_advisory_xact_lock(hashtextextended(:uid, 0))")
# Every lock of a batch in one statement, taken in the order given (the subquery's).
_ALL = text("SELECT count(pg_advisory_xact_lock(hashtextextended(u, 0)))"
            " FROM (SELECT u FROM unnest(CAST(:uids AS text[])) WITH ORDINALITY AS t(u, n) ORDER BY n) AS s")


def lock_study(session: Session, study_uid: str) -> None:
    session.execute(_ONE, {"uid": study_uid})


def lock_studies(session: Session, study_uids: Iterable[str]) -> None:
    """Each study's lock, in UID order."""
    session.execute(_ALL, {"uids": sorted(set(study_uids))})


def still_held(session: Session, studies: Mapping[str, str], held_now: HeldNow) -> set[str]:
    """Of these studies (StudyInstanceUID -> Orthanc study), read from Orthanc before their locks were taken, the
    Orthanc studies Orthanc still holds now that the locks are held. Only a study whose UID the deletion log names
    can have been deleted meanwhile (every deletion writes its row under the study's lock, in the transaction
    that deletes it from Orthanc), so Orthanc is asked about those alone: a flood of new studies costs one
    indexed query, not a call to Orthanc per batch."""
    deleted = session.scalars(select(DicomDeletionLog.study_instance_uid).distinct().where(
        DicomDeletionLog.study_instance_uid.in_(list(studies)))).all()
    asked = [studies[uid] for uid in deleted]
    gone = set(asked) - held_now(asked) if asked else set()
    return set(studies.values()) - gone
