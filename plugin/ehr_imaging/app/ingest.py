"""What happens when a study becomes stable: read it from Orthanc, record the ingest, match it.

Runs on the ingest worker thread (app/ingest_worker.py), never on Orthanc's storage path; in a flood it records
several stable studies per transaction (record_stable_studies).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..core import study_identity
from ..core.coercion import COERCED_TAGS, tag_changes
from ..core.errors import NotFound
from ..core.study_identity import REASON_COLLISION, Arrival, StudyObservation, same_patient
from ..services import Services
from ..store import collisions, link_batches, links, order_status, studies, study_locks
from ..store import upload_log as uploads
from . import observation

T = TypeVar("T")


def process_stable_study(services: Services, orthanc_study_id: str) -> links.LinkOutcome | None:
    seen = _observe_unless_held(services, orthanc_study_id)
    if seen is None:
        return None
    [outcome] = _record_stable(services, [seen])
    if outcome is None:
        return None  # deleted while it waited for its lock
    _quarantine(services, seen, outcome)
    _coerce_if_linked(services, seen, outcome)
    return outcome


def _observe_unless_held(services: Services, orthanc_study_id: str,
                         read: Mapping[str, StudyObservation | None] | None = None) -> StudyObservation | None:
    """The stable study to record, or None: an upload in progress holds it (it records it at its end, or hands it
    back if that fails), it is gone, or it has no StudyInstanceUID. ``read``: what its batch read of it."""
    if services.holds.is_held(orthanc_study_id):
        return None
    if read is not None and orthanc_study_id in read:
        seen = read[orthanc_study_id]
    else:
        seen = observation.observe_study(services, orthanc_study_id)
    if seen is None or not seen.study_instance_uid or services.holds.is_held(orthanc_study_id):
        return None  # (held again: an upload began while the study was being read)
    return seen


def _coerce_if_linked(services: Services, seen: StudyObservation, outcome: links.LinkOutcome) -> None:
    """After a stable study's commit: a linked study's tags coerced to its order (CoerceTags)."""
    if services.settings.CoerceTags and outcome.order_id is not None:
        coerce_tags(services, seen)


def record(services: Services, seen: StudyObservation,
           audit: uploads.UploadAudit | None = None) -> links.LinkOutcome | None:
    """Record one observation of a study (links.record_ingest), telling it whether the recorded Orthanc study
    of the same StudyInstanceUID still exists; a quarantined collision is logged. None: an API deletion removed
    the study after it was read (nothing recorded)."""
    outcome = links.record_ingest(services.engine, seen, services.match_policy, audit,
                                  held_now=_held_now(services),
                                  still_stored=lambda orthanc_id: stored(services, orthanc_id),
                                  coerce=services.settings.CoerceTags)
    if outcome is not None:
        _quarantine(services, seen, outcome)
    return outcome


def _quarantine(services: Services, seen: StudyObservation, outcome: links.LinkOutcome) -> None:
    if outcome.arrival is Arrival.COLLISION and outcome.quarantine_uid is not None:
        services.log_error(f"ehr-imaging: Orthanc study {seen.orthanc_study_id} quarantined: {REASON_COLLISION}"
                           f" (StudyInstanceUID {seen.study_instance_uid} is recorded under another patient);"
                           f" moving it to StudyInstanceUID {outcome.quarantine_uid}")
        move_out_of_the_way(services, seen.orthanc_study_id, outcome.quarantine_uid)


@dataclass(frozen=True)
class Recorded:
    """What record_stable_studies did: each recorded study's outcome, and those to record alone (why)."""

    outcomes: dict[str, links.LinkOutcome]
    failed: dict[str, str]


def record_stable_studies(services: Services, orthanc_study_ids: Sequence[str]) -> Recorded:
    """process_stable_study for several studies, recorded in one transaction (store/link_batches.py).

    A study an upload holds, one gone or without a StudyInstanceUID is passed over as process_stable_study
    passes it over; one whose read from Orthanc, or whose coercion after the commit, failed is in ``failed``
    (for the caller to record alone: its batch-mates are recorded). Raises when the transaction fails: then
    none of the batch is recorded."""
    observed: list[StudyObservation] = []
    uids: set[str] = set()
    failed: dict[str, str] = {}
    read = _read_together(services, [s for s in dict.fromkeys(orthanc_study_ids) if not services.holds.is_held(s)],
                          observation.observe_studies)
    for study in dict.fromkeys(orthanc_study_ids):  # once each, the latest read covers every change
        try:
            seen = _observe_unless_held(services, study, read)
        except Exception as exc:  # noqa: BLE001 - this study alone is retried by the caller
            failed[study] = f"{type(exc).__name__}: {exc}"
            continue
        if seen is None:
            continue
        if seen.study_instance_uid in uids:
            failed[study] = "another Orthanc study of the batch has its StudyInstanceUID"
        else:
            uids.add(seen.study_instance_uid)
            observed.append(seen)
    done: dict[str, links.LinkOutcome] = {}
    for seen, outcome in zip(observed, _record_stable(services, observed), strict=True):
        if outcome is None:
            continue  # deleted while it waited for its lock
        try:
            _quarantine(services, seen, outcome)
            _coerce_if_linked(services, seen, outcome)
        except Exception as exc:  # noqa: BLE001 - recorded; the caller retries the rest of it alone
            failed[seen.orthanc_study_id] = f"{type(exc).__name__}: {exc}"
            continue
        done[seen.orthanc_study_id] = outcome
    return Recorded(done, failed)


def _record_stable(services: Services, observed: list[StudyObservation]) -> list[links.LinkOutcome | None]:
    """Stable studies recorded in one transaction; None for one Orthanc no longer holds once its lock is held."""
    return link_batches.record_ingests(services.engine, observed, services.match_policy,
                                       still_stored=lambda orthanc_id: stored(services, orthanc_id),
                                       held_now=_held_now(services), coerce=services.settings.CoerceTags)


def _read_together(services: Services, studies: list[str], read: Callable[[Services, list[str]], dict[str, T]],
                   ) -> dict[str, T] | None:
    """A batch's studies read from Orthanc at once; None for a study alone, or when that fails (each is then read
    alone, and fails alone if it must)."""
    if len(studies) < 2:
        return None
    try:
        return read(services, studies)
    except Exception as exc:  # noqa: BLE001 - read one by one instead
        services.log_warning(f"ehr-imaging: {len(studies)} studies not read together ({type(exc).__name__}: {exc}):"
                             " one by one")
        return None


def move_out_of_the_way(services: Services, orthanc_study_id: str, quarantine_uid: str) -> None:
    """Give a quarantined study UIDs of its own, so that nothing found by UIDs alone (DICOMweb, the viewer)
    mixes it with the recorded patient's study: its StudyInstanceUID, and its series and SOP UIDs too (a
    modality re-sending a study under another PatientID reuses them all). Each is a 2.25 UID derived from
    the Orthanc resource it arrived as, so a later batch and another node moving the same files at once
    land on the same UIDs. Should Orthanc refuse, the study stays where it arrived, still quarantined (the
    next STABLE_STUDY tries again) and readers of that StudyInstanceUID fail closed meanwhile."""
    def modification(instance: dict[str, Any]) -> dict[str, Any]:
        return {"Replace": {"StudyInstanceUID": quarantine_uid,
                            "SeriesInstanceUID": study_identity.quarantine_uid(str(instance["ParentSeries"])),
                            "SOPInstanceUID": study_identity.quarantine_uid(str(instance["ID"]))},
                "Force": True}

    try:
        moved = _rewrite_instances(services, orthanc_study_id, modification)
    except Exception as exc:  # noqa: BLE001 - Orthanc refused: it stays where it is, quarantined, readers fail closed
        services.log_error(f"ehr-imaging: quarantined study {orthanc_study_id} could not be moved yet"
                           f" ({type(exc).__name__}: {exc})")
        return
    if moved:
        collisions.moved_to(services.engine, orthanc_study_id, moved)


def stored(services: Services, orthanc_study_id: str) -> bool:
    try:
        services.pacs.get_json(f"/studies/{orthanc_study_id}")
    except NotFound:
        return False
    return True


def coerce_tags(services: Services, seen: StudyObservation) -> None:
    """Make a linked study's PatientID, PatientName and AccessionNumber agree with its order.

    The whole rewrite runs under the study's lock (links.coercion), so two nodes never coerce one study at
    once and nothing records the study half-way. It never crosses a patient boundary on its own: the
    study's PatientID must name the order's patient, or be the one a person accepted for it (a forced link).
    The current values are the study's *shared* tags: a tag missing there differs between instances (a
    later batch with the old values), so the study is modified again. Checked at each STABLE_STUDY, so
    every node converges without an in-memory cache; it reads the study's files, which is why coercion is
    off by default and never runs on the storage path.
    """
    with links.coercion(services.engine, seen.study_instance_uid) as locked:
        order = locked.order
        if order is None or locked.orthanc_study_id is None:
            return
        accepted = locked.accepted_patient_id is not None and same_patient(seen.patient_id,
                                                                          locked.accepted_patient_id)
        if not (same_patient(seen.patient_id, order.mrn) or accepted):
            # Another patient's study under this UID (quarantined), or an order whose MRN is not the study's
            # patient: never rewritten into this patient's record.
            services.log_warning(f"ehr-imaging: Orthanc study {seen.orthanc_study_id} not coerced: its PatientID"
                                 " names another patient than its order's MRN")
            return
        try:
            shared = services.pacs.get_json(f"/studies/{seen.orthanc_study_id}/shared-tags?simplify")
        except NotFound:  # gone meanwhile (coerced by an earlier run, or deleted)
            return
        current = {tag: shared.get(tag) if isinstance(shared.get(tag), str) else None for tag in COERCED_TAGS}
        changes = tag_changes(current, order.fields())
        if not changes:
            return
        modification = {"Replace": changes, "Keep": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
                        "Force": True}
        if "PatientID" in changes:
            new_study_id = _rewrite_instances(services, seen.orthanc_study_id, lambda _: modification)
        else:
            # Same PatientID: Orthanc's IDs (hashes of PatientID and the UIDs) do not change, the modified
            # copies overwrite the originals, so the source must be kept (deleting it would delete them).
            # Instances arriving meanwhile keep their values; the next STABLE_STUDY modifies them.
            result = services.pacs.post_json(f"/studies/{seen.orthanc_study_id}/modify",
                                             {**modification, "KeepSource": True, "Synchronous": True})
            new_study_id = result["ID"]
        if new_study_id:
            locked.record(new_study_id, current, changes)


# Rounds of re-listing a study being rewritten (to the order's PatientID, or out of another patient's UID):
# instances a modality is still sending are moved in the next round; any left after the last round are
# moved at the study's next STABLE_STUDY.
MOVE_ROUNDS = 5


def _rewrite_instances(services: Services, orthanc_study_id: str,
                       modification: Callable[[dict[str, Any]], dict[str, Any]]) -> str:
    """Orthanc 1.10 refuses a new PatientID in a study-level modify (and a study-level modify lists the study
    once): rewrite instance by instance, and delete an original only once its modified copy is stored. The
    study is listed again until no original is left, so instances that arrive during the rewrite are moved
    too, never deleted unmoved. Returns the Orthanc study the copies are in."""
    pacs = services.pacs
    new_study_id = ""
    for _ in range(MOVE_ROUNDS):
        try:
            originals = pacs.get_json(f"/studies/{orthanc_study_id}/instances")
        except NotFound:  # every original moved: Orthanc removed the emptied study
            break
        if not originals:
            break
        for instance in originals:
            try:
                modified = pacs.post_bytes(f"/instances/{instance['ID']}/modify",
                                           json.dumps(modification(instance)))
                stored_copy = json.loads(pacs.post_bytes("/instances", modified))
                new_study_id = stored_copy["ParentStudy"]
                pacs.delete(f"/instances/{instance['ID']}")
            except NotFound:
                continue  # rewritten and deleted meanwhile (another node moving the same study): not lost
    return new_study_id


def study_deleted(services: Services, orthanc_study_id: str) -> list[str]:
    """A study deleted in Orthanc: out of reconciliation if it was a quarantined copy, else its deletion
    audited (when the EHR API did not delete it itself) and its order freed. Returns what to log. Nothing when
    Orthanc holds the study again (a replayed or stale deletion: the study was stored again since)."""
    engine = services.engine
    if stored(services, orthanc_study_id):
        return []
    if collisions.forget(engine, orthanc_study_id) or collisions.forget_arrival(
            engine, orthanc_study_id, lambda moved: stored(services, moved)):
        return [f"ehr-imaging: quarantined study {orthanc_study_id} was deleted: out of reconciliation"]
    uid = studies.record_deleted_in_orthanc(engine, orthanc_study_id)
    return [f"ehr-imaging: study {uid} was deleted in Orthanc outside the EHR API: audited"] if uid else []


def study_arrived(services: Services, orthanc_study_id: str) -> str | None:
    """The first instance of a new study (NEW_STUDY): its study.arrived event (EventEndpoints), and its order
    in progress (OrderStatusUpdates) when its accession and PatientID agree with exactly one scheduled order.
    Returns that order's id."""
    if not services.settings.OrderStatusUpdates and not services.settings.EventEndpoints:
        return None
    arrival = _arrival(services, orthanc_study_id)
    if arrival is None:
        return None
    return order_status.study_arrived(services.engine, arrival, services.settings.OrderStatusUpdates,
                                      _held_now(services))


def studies_arrived(services: Services, orthanc_study_ids: Sequence[str]) -> list[str]:
    """study_arrived for several new studies, in one transaction. Returns those to try alone (their read from
    Orthanc failed, or another of the batch has their StudyInstanceUID). Raises when the transaction fails."""
    if not services.settings.OrderStatusUpdates and not services.settings.EventEndpoints:
        return []
    arrivals: dict[str, order_status.Arrived] = {}
    alone = []
    read = _read_together(services, list(dict.fromkeys(orthanc_study_ids)),
                          lambda svc, ids: observation.bulk(svc, "Study", ids))
    for study in dict.fromkeys(orthanc_study_ids):
        try:
            arrival = _arrival(services, study, read)
        except Exception:  # noqa: BLE001 - tried alone, best effort
            alone.append(study)
            continue
        if arrival is not None and arrival.study_uid in arrivals:
            alone.append(study)
        elif arrival is not None:
            arrivals[arrival.study_uid] = arrival
    order_status.studies_arrived(services.engine, list(arrivals.values()), services.settings.OrderStatusUpdates,
                                 _held_now(services))
    return alone


def _held_now(services: Services) -> study_locks.HeldNow:
    """Which of these Orthanc studies Orthanc holds now (one call, asked under the studies' locks)."""
    return lambda orthanc_study_ids: set(observation.bulk(services, "Study", orthanc_study_ids))


def _arrival(services: Services, orthanc_study_id: str, read: Mapping[str, Any] | None = None,
             ) -> order_status.Arrived | None:
    """A new study's accession, PatientID and UID; None when it is gone. ``read``: the studies its batch read
    (one left out is gone)."""
    if read is not None:
        study = read.get(orthanc_study_id)
        if study is None:
            return None
    else:
        try:
            study = services.pacs.get_json(f"/studies/{orthanc_study_id}")
        except NotFound:  # gone already
            return None
    tags, patient = study.get("MainDicomTags", {}), study.get("PatientMainDicomTags", {})
    uid = str(tags.get("StudyInstanceUID") or "")
    if not uid:
        return None
    return order_status.Arrived(observation.text(tags.get("AccessionNumber")), observation.text(
        patient.get("PatientID")), uid, orthanc_study_id)
