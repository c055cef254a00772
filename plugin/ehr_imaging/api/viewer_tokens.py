"""Viewer tokens and viewer URLs: what the EHR asks for to open OHIF on exactly the studies a user may see.

Parsing and answers; which studies a token opens, minting and recording are app/viewer_tokens.py. A token
can be revoked before it expires by its owner or an admin.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..app import viewer_tokens as issuing
from ..core import errors
from ..core.auth import AuthError
from ..core.ownership import owner_or_admin
from ..services import Services
from ..store import viewer_tokens as store
from .context import Api
from .router import Request, Response, json_response


def viewer_token(api: Api, request: Request) -> Response:
    """A viewer token for studies, an order's studies or a patient's studies."""
    body = request.json()
    if not isinstance(body, dict):
        raise errors.Invalid("body: expected a JSON object")
    unknown = sorted(set(body) - {"study_uids", "order_id", "patient_id", "ttl_seconds"})
    if unknown:
        raise errors.Invalid(f"{unknown[0]}: unknown field")
    study_uids = body.get("study_uids")
    if study_uids is not None and (not isinstance(study_uids, list) or not all(isinstance(u, str) for u in study_uids)):
        raise errors.Invalid("study_uids: must be a list of StudyInstanceUIDs")
    order_id, patient_id = _id(body.get("order_id")), _id(body.get("patient_id"))
    studies = issuing.studies_for(api.services, study_uids=study_uids, order_id=order_id, patient_id=patient_id,
                                  patients=request.patients)
    return json_response(_issue(api.services, request, studies, _ttl_of(api.services, body.get("ttl_seconds")),
                                order_id=_text(body.get("order_id")), patient_id=_text(body.get("patient_id"))))


def revoke(api: Api, request: Request) -> Response:
    """Revoke a viewer token before it expires (its owner or an admin)."""
    assert request.principal is not None
    services = api.services
    body = request.json()
    if not isinstance(body, dict) or not (body.get("token") or body.get("token_id")):
        raise errors.Invalid("give the viewer token as token, or its token_id")
    token_id = body.get("token_id")
    if body.get("token"):
        try:
            token_id = services.viewer_tokens.verify(str(body["token"])).token_id
        except AuthError as exc:
            raise errors.Invalid(f"token: {exc}") from None
    owner = store.owner(services.engine, str(token_id))
    if owner is None:
        raise errors.NotFound("no such viewer token")
    if not owner_or_admin(owner, request.principal):
        raise errors.Forbidden("only its owner or an admin may revoke this token")
    expires = store.revoke(services.engine, token_id=str(token_id), by=request.principal.subject,
                           reason=_text(body.get("reason")))
    api.revocations.add(str(token_id), expires.timestamp())
    return json_response({"status": "revoked", "token_id": token_id, "expires_at": expires.isoformat()})


def viewer_url_study(api: Api, request: Request) -> Response:
    """The viewer URL (with a fresh token) for one study."""
    studies = issuing.studies_for(api.services, study_uids=[request.params["study_uid"]],
                                  patients=request.patients)
    return _url_answer(api.services, request, studies)


def viewer_url_order(api: Api, request: Request) -> Response:
    """The viewer URL for an order's studies."""
    order_id = request.params["order_id"]
    studies = issuing.studies_for(api.services, order_id=order_id, patients=request.patients)
    return _url_answer(api.services, request, studies, order_id=order_id)


def viewer_url_patient(api: Api, request: Request) -> Response:
    """The viewer URL for a patient's studies (by the EHR patient id)."""
    patient_id = request.params["patient_id"]
    studies = issuing.studies_for(api.services, patient_id=patient_id, patients=request.patients)
    return _url_answer(api.services, request, studies, patient_id=patient_id)


# --- helpers shared by the handlers ----------------------------------------------------------------------------

def _ttl_of(services: Services, value: Any) -> int:
    settings = services.settings
    if value is None or value == "":
        return settings.ViewerTokenMaxTtlSeconds
    try:
        ttl = int(value)
    except (TypeError, ValueError):
        raise errors.Invalid("ttl_seconds: must be an integer number of seconds") from None
    if isinstance(value, bool) or ttl < 1:
        raise errors.Invalid("ttl_seconds: must be at least 1")
    return min(ttl, settings.ViewerTokenMaxTtlSeconds)


def _issue(services: Services, request: Request, studies: dict[str, str], ttl: int, *, order_id: str | None = None,
           patient_id: str | None = None) -> dict[str, Any]:
    assert request.principal is not None
    issued = issuing.issue(services, request.principal.subject, studies, ttl, order_id=order_id,
                           patient_id=patient_id)
    return {"token": issued.token, "token_id": issued.token_id, "expires_at": _iso(issued.expires_at),
            "study_uids": list(issued.study_uids)}


def _url_answer(services: Services, request: Request, studies: dict[str, str], **scope: str) -> Response:
    settings = services.settings
    issued = _issue(services, request, studies, _ttl_of(services, request.query.get("ttl_seconds")), **scope)
    uids = list(studies)
    url = issuing.viewer_url(settings, uids, issued["token"])
    return json_response({"url": url, "study_count": len(uids), **issued})


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _id(value: Any) -> str | None:
    """An order or patient id as given (any JSON scalar, as before); None when absent or empty."""
    return None if value in (None, "", []) else str(value)
