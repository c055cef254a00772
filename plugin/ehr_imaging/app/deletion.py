"""Deleting a study with a reason: from Orthanc, its order freed, audited; its upload rows soft-deleted.

The deletion is recorded and Orthanc's copy deleted in one step (``store.studies.record_deletion`` calls
back into Orthanc inside its transaction), so a refused or failed delete in Orthanc records nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..core import errors
from ..services import Services
from ..store import studies
from . import ingest, study_resolution


@dataclass(frozen=True)
class Deletion:
    facts: studies.StudyFacts  # what was deleted (counts as Orthanc held them; 0 for a stale record)
    order_id: str | None  # the order it was linked to, now free again
    reason: str
    deleted_by: str


def delete_study(services: Services, study_uid: str, *, actor: str, reason: str) -> Deletion:
    orthanc_id = study_resolution.resolve_one(services, study_uid)
    seen = ingest.observe_study(services, orthanc_id) if orthanc_id else None
    if seen is not None:
        facts = studies.StudyFacts(study_uid, seen.orthanc_study_id, seen.patient_id, seen.patient_name,
                                   seen.accession_number, seen.study_date, seen.modalities, seen.number_of_series,
                                   seen.number_of_instances)
    else:
        # Not in Orthanc: only a stale record (deleted while the plugin was down) is still worth cleaning up.
        recorded = studies.facts_of(services.engine, study_uid)
        if recorded is None:
            raise errors.NotFound(f"study {study_uid} not found")
        facts = dataclasses.replace(recorded, number_of_series=0, number_of_instances=0)

    def delete_in_orthanc() -> None:
        if seen is not None:
            try:
                services.pacs.delete(f"/studies/{seen.orthanc_study_id}")
            except (errors.NotFound, errors.ArchiveError) as exc:  # gone meanwhile, or refused: nothing recorded
                raise errors.Conflict(f"Orthanc could not delete the study: {exc}") from None

    order_id = studies.record_deletion(services.engine, facts, actor=actor, reason=reason,
                                       delete_in_orthanc=delete_in_orthanc)
    return Deletion(facts, order_id, reason, actor)
