"""The per-study lock every change to a study's record holds (a PostgreSQL advisory lock on its UID, for the
transaction): links, ingests, deletions, arrivals and coercions of one study never interleave, on one node or
several. Several studies' locks are taken in one statement, in UID order, so two batches never wait on each other
in a cycle (store/link_batches.py); whoever takes study locks takes them before any order row."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

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
