"""Deleting a study with a reason: asked for, approved by another person when ``DeletionApproval`` is
'required', then deleted from Orthanc with its order freed, audited, its upload rows soft-deleted, and its
files kept for ``DeletedStudyRetentionDays`` so that it can be restored (app/deletion_recovery.py).

The deletion is recorded and Orthanc's copy deleted in one step (``store.studies.record_deletion`` calls
back into Orthanc inside its transaction): the study's files are kept first, then Orthanc deletes it; a
refused or failed delete in Orthanc records nothing (and the kept copy is discarded). An approval is
written in the same transaction, so a request is approved exactly when its study is deleted.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import timedelta

from ..core import errors
from ..core.study_identity import StudyObservation
from ..services import Services
from ..store import deletions, studies
from . import deletion_recovery, observation, study_resolution

APPROVAL_REQUIRED = "required"


@dataclass(frozen=True)
class Deletion:
    facts: studies.StudyFacts  # what was deleted (counts as Orthanc held them; 0 for a stale record)
    order_id: str | None  # the order it was linked to, now free again
    reason: str
    deleted_by: str  # who asked for it
    record: deletions.DeletionRecord  # its deletion log row (restorable, kept until, approved by)


def request_deletion(services: Services, study_uid: str, *, actor: str,
                     reason: str) -> Deletion | deletions.RequestRecord:
    """``DELETE /studies/{uid}``: the study deleted now, or (approval required) a pending request."""
    if services.settings.DeletionApproval != APPROVAL_REQUIRED:
        return delete_study(services, study_uid, actor=actor, reason=reason)
    facts, _ = _study(services, study_uid)
    recorded = studies.get(services.engine, study_uid)
    requested = deletions.RequestedStudy(
        facts.study_instance_uid, facts.orthanc_study_id, facts.patient_id, facts.patient_name,
        facts.accession_number, recorded.order_id if recorded else None, facts.number_of_instances)
    return deletions.create_request(services.engine, requested, actor=actor, reason=reason,
                                    ttl=timedelta(hours=services.settings.DeletionRequestTtlHours))


def approve(services: Services, request_id: uuid.UUID, *, actor: str) -> Deletion:
    """A second person approves: the study is deleted now (as its requester asked, approved by ``actor``)."""
    request = deletions.pending_request(services.engine, request_id)
    if request.requested_by == actor:
        raise errors.Forbidden(f"{actor} asked for this deletion: another admin must approve it")
    return delete_study(services, request.study_instance_uid, actor=request.requested_by, reason=request.reason,
                        approval=deletions.Approval(request.id, actor),
                        asked_for=(request.orthanc_study_id, request.patient_id))


def reject(services: Services, request_id: uuid.UUID, *, actor: str, reason: str) -> deletions.RequestRecord:
    return deletions.reject(services.engine, request_id, actor=actor, reason=reason)


def delete_study(services: Services, study_uid: str, *, actor: str, reason: str,
                 approval: deletions.Approval | None = None,
                 asked_for: tuple[str | None, str | None] | None = None) -> Deletion:
    """``asked_for``: the (Orthanc study, PatientID) a request was made for; another study now under its UID
    (the one asked for deleted elsewhere, the UID stored again for someone else) is refused, never deleted."""
    facts, seen = _study(services, study_uid)
    if asked_for is not None and (facts.orthanc_study_id, facts.patient_id) != asked_for:
        raise errors.Conflict(f"study {study_uid} is no longer the one this request asked to delete"
                              " (deleted or stored again since): reject it and ask again")
    retention = timedelta(days=services.settings.DeletedStudyRetentionDays)
    keep = retention > timedelta(0) and seen is not None
    deletion_id = uuid.uuid4()
    folder = deletion_recovery.kept_files_dir(services) / str(deletion_id) if keep else None
    deleted = False

    def delete_in_orthanc() -> int | None:
        nonlocal deleted
        if seen is None:
            return None
        kept = deletion_recovery.keep_study(services, seen.orthanc_study_id, folder) if folder else None
        try:
            services.pacs.delete(f"/studies/{seen.orthanc_study_id}")
        except (errors.NotFound, errors.ArchiveError) as exc:  # gone meanwhile, or refused: nothing recorded
            raise errors.Conflict(f"Orthanc could not delete the study: {exc}") from None
        deleted = True
        return kept

    try:
        order_id = studies.record_deletion(services.engine, facts, actor=actor, reason=reason,
                                           delete_in_orthanc=delete_in_orthanc, deletion_id=deletion_id,
                                           retention=retention if keep else None, approval=approval)
    except BaseException:
        if folder is not None and not deleted:  # (deleted but not recorded: the files stay, for a person)
            deletion_recovery.discard(folder)
        raise
    record = deletions.deletion(services.engine, deletion_id)
    assert record is not None
    return Deletion(facts, order_id, reason, actor, record)


def _study(services: Services, study_uid: str) -> tuple[studies.StudyFacts, StudyObservation | None]:
    orthanc_id = study_resolution.resolve_one(services, study_uid)
    seen = observation.observe_study(services, orthanc_id) if orthanc_id else None
    if seen is not None:
        return studies.StudyFacts(study_uid, seen.orthanc_study_id, seen.patient_id, seen.patient_name,
                                  seen.accession_number, seen.study_date, seen.modalities, seen.number_of_series,
                                  seen.number_of_instances), seen
    # Not in Orthanc: only a stale record (deleted while the plugin was down) is still worth cleaning up.
    recorded = studies.facts_of(services.engine, study_uid)
    if recorded is None:
        raise errors.NotFound(f"study {study_uid} not found")
    return dataclasses.replace(recorded, number_of_series=0, number_of_instances=0), None
