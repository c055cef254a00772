"""Signed image URLs and a study's images: parsing and answers.

``study_images`` and ``image_url`` mint (app/image_urls.py) for a viewing role; ``signed_image`` is what such a URL
opens: no header, the token in the URL judged by the same rule as the HTTP filter's (core/image_urls.decide),
then the image rendered by app/images.py. The token is never logged: refusals name the reason, not the URL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..app import image_urls as minting
from ..app import images
from ..core import errors
from ..core.image_urls import TOKEN_PARAM
from .context import Api
from .router import Request, Response, error_response, json_response

_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg"}
_MEDIA = {"png": "image/png", "jpeg": "image/jpeg"}
# The answer of a signed URL: patient data, so never kept by a shared cache or on disk, never sniffed.
_IMAGE_HEADERS = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff",
                  "Referrer-Policy": "no-referrer"}


def study_images(api: Api, request: Request) -> Response:
    """A stored study's series, each with its instances ordered by InstanceNumber: SOP Instance UID, instance
    number, frames, and a signed URL of the rendered image (one grant for the whole answer)."""
    assert request.principal is not None
    image_format, ttl = _format(request), _ttl(api, request)
    found = minting.study_images(api.services, request.principal.subject, request.params["study_uid"].strip(),
                                 image_format, ttl)
    series = [{"series_instance_uid": s.series_instance_uid, "orthanc_series_id": s.orthanc_id,
               "series_number": s.series_number, "modality": s.modality or None,
               "series_description": s.description or None, "number_of_instances": len(s.instances),
               "instances": [{"sop_instance_uid": i.sop_instance_uid, "orthanc_instance_id": i.orthanc_id,
                              "instance_number": i.instance_number, "frames": i.frames,
                              "url": found.urls.get(i.orthanc_id)} for i in s.instances]}
              for s in found.series]
    return json_response({"study_instance_uid": found.study_uid, "orthanc_study_id": found.orthanc_study_id,
                          "format": image_format, "expires_at": _iso(found.grant.expires_at),
                          "token_id": found.grant.token_id, "number_of_series": len(series),
                          "number_of_instances": sum(len(s.instances) for s in found.series), "series": series})


def image_url(api: Api, request: Request) -> Response:
    """A signed URL of one instance's rendered image: it works in an <img src> (no header) until it expires."""
    assert request.principal is not None
    image_format, ttl = _format(request), _ttl(api, request)
    sop = request.params["sop_instance_uid"].strip()
    made = minting.instance_url(api.services, request.principal.subject, sop, image_format, ttl)
    return json_response({"url": made.url, "expires_at": _iso(made.grant.expires_at), "token_id": made.grant.token_id,
                          "sop_instance_uid": sop, "study_instance_uid": made.study_uid, "format": image_format})


def signed_image(api: Api, request: Request) -> Response:
    """The rendered image a signed URL opens: no header, the URL's image_token (that instance and format only)."""
    token = request.query.get(TOKEN_PARAM, "")
    if not token:
        return error_response(401, f"a signed image URL carries its {TOKEN_PARAM}")
    has_body = bool(request.body or request.body_path or request.files or request.form)
    verdict = api.signed_images.judge(token, request.method, request.path, request.query, body=has_body)
    image, decision = verdict.image, verdict.decision
    if image is None:
        return error_response(401, decision.reason)
    if not decision.allowed:
        raise errors.Forbidden(decision.reason)
    asked = images.Rendering(frame=decision.frame, jpeg=image.image_format == "jpeg")
    body = images.render_instance(api.services, image.orthanc_instance_id, image.sop_instance_uid, asked)
    api.signed_images.served(image, len(body))
    return Response(body=body, content_type=_MEDIA[image.image_format], headers=dict(_IMAGE_HEADERS))


def _format(request: Request) -> str:
    value = (request.query.get("format") or "png").strip().lower()
    if value not in _FORMATS:
        raise errors.Invalid("format: must be png or jpeg")
    return _FORMATS[value]


def _ttl(api: Api, request: Request) -> int:
    """``ttl_seconds``: at least 1, capped by ImageUrlMaxTtlSeconds (also the default)."""
    limit = api.services.settings.ImageUrlMaxTtlSeconds
    value: Any = request.query.get("ttl_seconds")
    if value is None or not value.strip():
        return limit
    try:
        ttl = int(value.strip())
    except ValueError:
        raise errors.Invalid("ttl_seconds: must be an integer number of seconds") from None
    if ttl < 1:
        raise errors.Invalid("ttl_seconds: must be at least 1")
    return min(ttl, limit)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
