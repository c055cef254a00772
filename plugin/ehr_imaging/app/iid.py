"""IHE Invoke Image Display: the studies an IID request selects, narrowed to the caller's patients, and the
viewer URL (with a viewer token minted for exactly those studies) the route redirects the browser to.

The parameters and the selection rules are core/iid.py; the token and the URL are app/viewer_tokens.py, as for
every other viewer URL. A study the caller may not see (another patient's, for a patient-scoped token) is
treated as one that does not exist: nothing tells the caller it is there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..core import errors
from ..core.iid import PATIENT, Candidate, IidRequest, select
from ..core.viewer_tokens import MAX_STUDIES
from ..services import Services
from ..store import studies as study_store
from ..store.studies import StudyFilter, StudyRecord
from . import study_resolution, viewer_tokens

# Recorded studies of one patient read for a PATIENT request: the selection (dates, modalities, most recent) is
# made on them; a patient with more studies than this has the newest ones considered.
PATIENT_STUDIES_READ = 2000


@dataclass(frozen=True)
class Opened:
    url: str
    study_uids: tuple[str, ...]
    token_id: str


def open_viewer(services: Services, iid: IidRequest, subject: str, patients: frozenset[str] | None,
                ttl_seconds: int) -> Opened:
    """Mint a viewer token for the studies ``iid`` selects and answer OHIF's URL on them; NotFound when none."""
    uids = selected(services, iid, patients)
    if not uids:
        raise errors.NotFound("no study matches this request")
    studies = viewer_tokens.studies_for(services, study_uids=uids, patients=patients)
    issued = viewer_tokens.issue(services, subject, studies, ttl_seconds,
                                 patient_id=iid.patient_id if iid.request_type == PATIENT else None)
    return Opened(viewer_tokens.viewer_url(services.settings, list(studies), issued.token), tuple(studies),
                  issued.token_id)


def selected(services: Services, iid: IidRequest, patients: frozenset[str] | None) -> list[str]:
    """The StudyInstanceUIDs the request names that are stored and the caller may see, in the request's order
    (STUDY) or newest first (PATIENT), at most core.viewer_tokens.MAX_STUDIES."""
    if iid.study_uids:
        uids = list(iid.study_uids)
        if patients is not None:
            mine = study_store.of_patients(services.engine, uids, patients)
            uids = [uid for uid in uids if uid in mine]
        stored = study_resolution.resolve(services, uids) if uids else {}
        return [uid for uid in uids if uid in stored][:MAX_STUDIES]
    if iid.accession_numbers:
        found: list[str] = []
        for accession in iid.accession_numbers:
            found += [s.study_instance_uid for s in _search(services, StudyFilter(accession=accession,
                                                                                 patient_scope=patients))]
        return list(dict.fromkeys(found))[:MAX_STUDIES]
    assert iid.patient_id is not None
    # The IID patientID is the EHR's patient id, or the PatientID (MRN) the studies carry: either selects them.
    records = {s.study_instance_uid: s for where in (StudyFilter(patient_id=iid.patient_id, patient_scope=patients),
                                                     StudyFilter(mrn=iid.patient_id, patient_scope=patients))
               for s in _search(services, where)}
    return select(iid, (_candidate(s) for s in records.values()), MAX_STUDIES)


def _search(services: Services, where: StudyFilter) -> list[StudyRecord]:
    return study_store.search(services.engine, dataclasses.replace(where, limit=PATIENT_STUDIES_READ))[1]


def _candidate(study: StudyRecord) -> Candidate:
    return Candidate(study.study_instance_uid, study.study_date, study.study_time, study.modalities)
