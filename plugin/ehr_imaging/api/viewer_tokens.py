"""Viewer tokens and viewer URLs: what the EHR asks for to open OHIF on exactly the studies a user may see.

A token is scoped to StudyInstanceUIDs; an order or a patient is expanded to its studies when the token
is minted (a study stored later needs a new token). Every token issued is recorded (who asked, for what)
and can be revoked before it expires.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from ..app import study_resolution
from ..core.auth import AuthError
from ..core.errors import Forbidden, NotFound
from ..core.ownership import owner_or_admin
from ..core.viewer_tokens import MAX_STUDIES, mint_viewer_token, valid_uid
from ..services import Services
from ..store import studies as study_store
from ..store import viewer_tokens as store
from ..store.studies import StudyFilter
from .context import Api
from .router import ApiError, Request, Response, json_response


def viewer_token(api: Api, request: Request) -> Response:
    """A viewer token for studies, an order's studies or a patient's studies."""
    body = request.json()
    if not isinstance(body, dict):
        raise ApiError(422, "body: expected a JSON object")
    unknown = sorted(set(body) - {"study_uids", "order_id", "patient_id", "ttl_seconds"})
    if unknown:
        raise ApiError(422, f"{unknown[0]}: unknown field")
    studies = _studies_for(api.services, study_uids=body.get("study_uids"), order_id=body.get("order_id"),
                           patient_id=body.get("patient_id"))
    return json_response(_issue(api.services, request, studies, _ttl_of(api.services, body.get("ttl_seconds")),
                                order_id=_text(body.get("order_id")), patient_id=_text(body.get("patient_id"))))


def revoke(api: Api, request: Request) -> Response:
    """Revoke a viewer token before it expires (its owner or an admin)."""
    assert request.principal is not None
    services = api.services
    body = request.json()
    if not isinstance(body, dict) or not (body.get("token") or body.get("token_id")):
        raise ApiError(422, "give the viewer token as token, or its token_id")
    token_id = body.get("token_id")
    if body.get("token"):
        try:
            token_id = services.viewer_tokens.verify(str(body["token"])).token_id
        except AuthError as exc:
            raise ApiError(422, f"token: {exc}") from None
    owner = store.owner(services.engine, str(token_id))
    if owner is None:
        raise NotFound("no such viewer token")
    if not owner_or_admin(owner, request.principal):
        raise Forbidden("only its owner or an admin may revoke this token")
    expires = store.revoke(services.engine, token_id=str(token_id), by=request.principal.subject,
                           reason=_text(body.get("reason")))
    api.revocations.add(str(token_id), expires.timestamp())
    return json_response({"status": "revoked", "token_id": token_id, "expires_at": expires.isoformat()})


def viewer_url_study(api: Api, request: Request) -> Response:
    """The viewer URL (with a fresh token) for one study."""
    return _url_answer(api.services, request, _studies_for(api.services, study_uids=[request.params["study_uid"]]))


def viewer_url_order(api: Api, request: Request) -> Response:
    """The viewer URL for an order's studies."""
    order_id = request.params["order_id"]
    return _url_answer(api.services, request, _studies_for(api.services, order_id=order_id), order_id=order_id)


def viewer_url_patient(api: Api, request: Request) -> Response:
    """The viewer URL for a patient's studies (by the EHR patient id)."""
    patient_id = request.params["patient_id"]
    return _url_answer(api.services, request, _studies_for(api.services, patient_id=patient_id),
                       patient_id=patient_id)


# --- helpers shared by the handlers ----------------------------------------------------------------------------

def _ttl_of(services: Services, value: Any) -> int:
    settings = services.settings
    if value is None or value == "":
        return settings.ViewerTokenMaxTtlSeconds
    try:
        ttl = int(value)
    except (TypeError, ValueError):
        raise ApiError(422, "ttl_seconds: must be an integer number of seconds") from None
    if isinstance(value, bool) or ttl < 1:
        raise ApiError(422, "ttl_seconds: must be at least 1")
    return min(ttl, settings.ViewerTokenMaxTtlSeconds)


def _studies_for(services: Services, *, study_uids: Any = None, order_id: Any = None,
                 patient_id: Any = None) -> dict[str, str]:
    """StudyInstanceUID -> the Orthanc study the token will open (study_resolution: the one recorded for
    that UID's patient, never another patient's study stored under the same UID)."""
    given = [name for name, value in (("study_uids", study_uids), ("order_id", order_id),
                                      ("patient_id", patient_id)) if value not in (None, "", [])]
    if len(given) != 1:
        raise ApiError(422, "give exactly one of study_uids, order_id, patient_id")
    if study_uids is not None:
        if not isinstance(study_uids, list) or not all(isinstance(u, str) for u in study_uids):
            raise ApiError(422, "study_uids: must be a list of StudyInstanceUIDs")
        uids = list(dict.fromkeys(u.strip() for u in study_uids))
        _cap(uids)  # before any lookup: a list of 20,000 UIDs costs nothing but this check
        bad = [u for u in uids if not valid_uid(u)]
        if bad:
            raise ApiError(422, f"study_uids: not a DICOM UID: {bad[0][:80]!r}")
        found = _resolved(services, uids)
        unknown = [u for u in uids if u not in found]
        if unknown:
            raise ApiError(404, f"unknown studies: {', '.join(unknown[:5])}")
        return {uid: found[uid] for uid in uids}
    if order_id is not None:
        if not study_store.order_exists(services.engine, str(order_id)):
            raise ApiError(404, f"unknown order {order_id}")
        uids = _recorded_studies(services, StudyFilter(order_id=str(order_id)))
        if not uids:
            raise ApiError(404, f"order {order_id} has no study yet")
        return _resolved(services, uids)
    uids = _recorded_studies(services, StudyFilter(patient_id=str(patient_id)))
    if not uids:
        raise ApiError(404, f"no studies for patient {patient_id}")
    return _resolved(services, uids)


def _cap(uids: list[str]) -> None:
    if len(uids) > MAX_STUDIES:
        raise ApiError(422, f"at most {MAX_STUDIES} studies per viewer token ({len(uids)} asked)")


def _resolved(services: Services, uids: list[str]) -> dict[str, str]:
    _cap(uids)
    return study_resolution.resolve(services, uids)


def _recorded_studies(services: Services, where: StudyFilter) -> list[str]:
    """The same selection as the study queries (one past the cap, so too many is an error, not a cut)."""
    _, found = study_store.search(services.engine, dataclasses.replace(where, limit=MAX_STUDIES + 1))
    return [study.study_instance_uid for study in found]


def _issue(services: Services, request: Request, studies: dict[str, str], ttl: int, *, order_id: str | None = None,
           patient_id: str | None = None) -> dict[str, Any]:
    assert request.principal is not None
    minted = mint_viewer_token(secret=services.signing_secret, issuer=services.settings.JwtIssuer,
                               subject=request.principal.subject, studies=studies, ttl_seconds=ttl)
    store.record_issued(services.engine, token_id=minted.token_id, subject=request.principal.subject,
                        study_uids=minted.study_uids, expires_at=minted.expires_at, order_id=order_id,
                        patient_id=patient_id)
    return {"token": minted.token, "token_id": minted.token_id, "expires_at": _iso(minted.expires_at),
            "study_uids": list(minted.study_uids)}


def _url_answer(services: Services, request: Request, studies: dict[str, str], **scope: str) -> Response:
    settings = services.settings
    issued = _issue(services, request, studies, _ttl_of(services, request.query.get("ttl_seconds")), **scope)
    uids = list(studies)
    base = settings.PublicBaseUrl.rstrip("/")
    url = (f"{base}{settings.ViewerPath}?StudyInstanceUIDs={quote(','.join(uids), safe=',')}"
           f"&token={quote(issued['token'], safe='')}")
    return json_response({"url": url, "study_count": len(uids), **issued})


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
