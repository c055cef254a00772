"""Issuing viewer tokens: which studies a token opens, minting it, recording it, and the viewer URL.

A token is scoped to StudyInstanceUIDs, each bound to the Orthanc study it names for its recorded patient
(study_resolution: never another patient's study stored under the same UID); an order or a patient is
expanded to its studies when the token is minted (a study stored later needs a new token). Every token
issued is recorded (who asked, for what) so it can be audited and revoked before it expires.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from urllib.parse import quote

from ..config import Settings
from ..core import errors
from ..core.dicom_values import is_uid
from ..core.viewer_tokens import MAX_STUDIES, mint_viewer_token
from ..services import Services
from ..store import studies as study_store
from ..store import viewer_tokens as token_store
from ..store.studies import StudyFilter
from . import patient_scope, study_resolution


@dataclass(frozen=True)
class Issued:
    token: str
    token_id: str
    expires_at: float  # epoch seconds
    study_uids: tuple[str, ...]


def studies_for(services: Services, *, study_uids: list[str] | None = None, order_id: str | None = None,
                patient_id: str | None = None, patients: frozenset[str] | None = None) -> dict[str, str]:
    """StudyInstanceUID -> the Orthanc study the token will open, for exactly one of: the UIDs given, an
    order's studies, a patient's studies; for a patient-scoped caller (``patients``) only their patients'."""
    found = _studies_for(services, study_uids=study_uids, order_id=order_id, patient_id=patient_id,
                         patients=patients)
    if patients is not None:
        patient_scope.check_studies(services, patients, found)  # what an order or a patient expanded to, too
    return found


def _studies_for(services: Services, *, study_uids: list[str] | None, order_id: str | None,
                 patient_id: str | None, patients: frozenset[str] | None) -> dict[str, str]:
    given = [name for name, value in (("study_uids", study_uids), ("order_id", order_id),
                                      ("patient_id", patient_id)) if value not in (None, "", [])]
    if len(given) != 1:
        raise errors.Invalid("give exactly one of study_uids, order_id, patient_id")
    if study_uids:
        uids = list(dict.fromkeys(u.strip() for u in study_uids))
        _cap(uids)  # before any lookup: a list of 20,000 UIDs costs nothing but this check
        bad = [u for u in uids if not is_uid(u)]
        if bad:
            raise errors.Invalid(f"study_uids: not a DICOM UID: {bad[0][:80]!r}")
        if patients is not None:
            patient_scope.check_studies(services, patients, uids)  # another patient's study: as unknown
        found = _resolved(services, uids)
        unknown = [u for u in uids if u not in found]
        if unknown:
            raise errors.NotFound(f"unknown studies: {', '.join(unknown[:5])}")
        return {uid: found[uid] for uid in uids}
    if order_id:
        if patients is not None:
            patient_scope.check_order(services, patients, order_id)
        if not study_store.order_exists(services.engine, order_id):
            raise errors.NotFound(f"unknown order {order_id}")
        uids = _recorded_studies(services, StudyFilter(order_id=order_id))
        if not uids:
            raise errors.NotFound(f"order {order_id} has no study yet")
        return _resolved(services, uids)
    if patients is not None and patient_id:
        patient_scope.check_patient(patients, patient_id)
    uids = _recorded_studies(services, StudyFilter(patient_id=patient_id))
    if not uids:
        raise errors.NotFound(f"no studies for patient {patient_id}")
    return _resolved(services, uids)


def issue(services: Services, subject: str, studies: dict[str, str], ttl_seconds: int, *,
          order_id: str | None = None, patient_id: str | None = None) -> Issued:
    """Mint a token for ``subject`` opening ``studies`` and record it."""
    minted = mint_viewer_token(secret=services.signing_secret, issuer=services.settings.JwtIssuer,
                               subject=subject, studies=studies, ttl_seconds=ttl_seconds)
    token_store.record_issued(services.engine, token_id=minted.token_id, subject=subject,
                              study_uids=minted.study_uids, expires_at=minted.expires_at, order_id=order_id,
                              patient_id=patient_id)
    return Issued(minted.token, minted.token_id, minted.expires_at, tuple(minted.study_uids))


def viewer_url(settings: Settings, study_uids: list[str], token: str) -> str:
    """OHIF's URL for these studies, with the token (OHIF hands it to DICOMweb as a bearer token)."""
    base = settings.PublicBaseUrl.rstrip("/")
    return (f"{base}{settings.ViewerPath}?StudyInstanceUIDs={quote(','.join(study_uids), safe=',')}"
            f"&token={quote(token, safe='')}")


def _cap(uids: list[str]) -> None:
    if len(uids) > MAX_STUDIES:
        raise errors.Invalid(f"at most {MAX_STUDIES} studies per viewer token ({len(uids)} asked)")


def _resolved(services: Services, uids: list[str]) -> dict[str, str]:
    _cap(uids)
    return study_resolution.resolve(services, uids)


def _recorded_studies(services: Services, where: StudyFilter) -> list[str]:
    """The same selection as the study queries (one past the cap, so too many is an error, not a cut)."""
    _, found = study_store.search(services.engine, dataclasses.replace(where, limit=MAX_STUDIES + 1))
    return [study.study_instance_uid for study in found]
