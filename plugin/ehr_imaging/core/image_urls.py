"""Signed image URLs: a short-lived JWT in the URL that opens exactly one rendered image, with no header.

An ``<img src>`` sends no ``Authorization`` header, so the credential travels in the URL (``image_token``). It
is the plugin's own HS256 JWT (the signing secret), with an audience and ``typ`` of its own, so no other verifier
accepts it (user routes, viewer tokens) and it accepts no other token. It is bound to one SOP instance (its
SOPInstanceUID and the Orthanc instance of the recorded study, fixed at minting: never another patient's copy),
one format and an expiry; ``jti`` is the grant (one per call that minted it: the access audit and revocation
key), ``study`` the StudyInstanceUID the access audit counts it under.

``decide`` is the one rule both the HTTP filter and the route apply: GET, no body, the signed path of that
instance, the token's format, and nothing else in the query but an optional frame.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from .access import API_PREFIX, is_canonical
from .auth import AuthError, valid_subject
from .dicom_values import is_uid

IMAGE_AUDIENCE = "ehr-imaging-image"
IMAGE_TYPE = "image"
TOKEN_PARAM = "image_token"  # the query parameter that carries the token (never a header: <img> sends none)
FORMATS = ("png", "jpeg")
PARAMETERS = frozenset({TOKEN_PARAM, "format", "frame"})
_ORTHANC_ID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}")
_FRAME = re.compile(r"[1-9][0-9]{0,5}")
_PATH = re.compile(re.escape(API_PREFIX) + r"images/([^/]+)/rendered")
_REQUIRED = ("exp", "iss", "aud", "sub", "jti", "nbf", "sop", "oi", "study", "fmt", "typ")


@dataclass(frozen=True)
class SignedImage:
    """What a verified signed image URL opens."""

    token_id: str  # the grant (jti): one per call that minted URLs
    subject: str  # who asked for it
    study_uid: str
    sop_instance_uid: str
    orthanc_instance_id: str  # the instance rendered: the recorded study's, fixed at minting
    image_format: str  # png or jpeg
    expires_at: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    frame: int = 1


def new_grant_id() -> str:
    return secrets.token_urlsafe(16)


def signed_path(sop_instance_uid: str) -> str:
    """The path a signed URL opens (the route ``GET …/images/{sop_instance_uid}/rendered``)."""
    return f"{API_PREFIX}images/{sop_instance_uid}/rendered"


def is_signed_path(path: str) -> bool:
    return _PATH.fullmatch(path) is not None


def mint(*, secret: str, issuer: str, grant_id: str, subject: str, study_uid: str, sop_instance_uid: str,
         orthanc_instance_id: str, image_format: str, expires_at: int, now: float | None = None) -> str:
    """The token of one image's URL. ValueError for anything that could not be verified back."""
    if image_format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    if not (is_uid(study_uid) and is_uid(sop_instance_uid)):
        raise ValueError("not a DICOM UID")
    if not _ORTHANC_ID.fullmatch(orthanc_instance_id):
        raise ValueError("not an Orthanc instance ID")
    if not valid_subject(subject) or not grant_id:
        raise ValueError("a signed image URL needs a subject and a grant id")
    issued = int(time.time() if now is None else now)
    if expires_at <= issued:
        raise ValueError("a signed image URL must expire after it is issued")
    claims = {"iss": issuer, "aud": IMAGE_AUDIENCE, "typ": IMAGE_TYPE, "sub": subject, "jti": grant_id,
              "iat": issued, "nbf": issued, "exp": expires_at, "study": study_uid, "sop": sop_instance_uid,
              "oi": orthanc_instance_id, "fmt": image_format}
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(token: str, *, secret: str, issuer: str, leeway_seconds: int = 5, now: float | None = None) -> SignedImage:
    """The image a token opens; AuthError when it is not a valid, unexpired signed image token of ours.
    HS256 only (the header's algorithm is never trusted); times are compared to ``now`` (the clock)."""
    if not token or len(token) > 4096:
        raise AuthError("malformed signed image token")
    try:
        if jwt.get_unverified_header(token).get("alg") != "HS256":
            raise AuthError("token algorithm not accepted")
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=["HS256"], audience=IMAGE_AUDIENCE, issuer=issuer,
            options={"require": list(_REQUIRED), "verify_exp": False, "verify_nbf": False, "verify_iat": False})
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid signed image token: {exc}") from None
    at = time.time() if now is None else now
    expires, not_before = claims.get("exp"), claims.get("nbf")
    if not isinstance(expires, int) or not isinstance(not_before, int) or isinstance(expires, bool):
        raise AuthError("signed image token without valid times")
    if expires + leeway_seconds <= at:
        raise AuthError("signed image URL expired: ask for a new one")
    if not_before - leeway_seconds > at:
        raise AuthError("signed image token not valid yet")
    return _image_of(claims)


def _image_of(claims: Mapping[str, Any]) -> SignedImage:
    fields = (claims.get("sub"), claims.get("jti"), claims.get("study"), claims.get("sop"), claims.get("oi"),
              claims.get("fmt"))
    subject, grant, study, sop, orthanc_id, image_format = fields
    if claims.get("typ") != IMAGE_TYPE:
        raise AuthError("not a signed image token")
    if not (isinstance(subject, str) and valid_subject(subject) and isinstance(grant, str) and grant
            and isinstance(study, str) and is_uid(study) and isinstance(sop, str) and is_uid(sop)
            and isinstance(orthanc_id, str) and _ORTHANC_ID.fullmatch(orthanc_id) and image_format in FORMATS):
        raise AuthError("signed image token without a valid image")
    return SignedImage(grant, subject, study, sop, orthanc_id, str(image_format), int(claims["exp"]))


def decide(image: SignedImage, method: str, path: str, query: Mapping[str, str], *, body: bool) -> Decision:
    """May this request use ``image``'s signed URL? Only ``GET <its signed path>?format=<its format>
    &image_token=…[&frame=N]`` without a body: another instance, another format, another path or method, a
    body, or any other parameter is refused."""
    if method != "GET":
        return Decision(False, f"{method}: a signed image URL only reads")
    if body:
        return Decision(False, "a signed image URL takes no body")
    if not is_canonical(path) or not is_signed_path(path):
        return Decision(False, "a signed image URL opens its rendered image only")
    if path != signed_path(image.sop_instance_uid):
        return Decision(False, "the signed image URL is for another instance")
    keys = [key.lower() for key in query]
    if len(set(keys)) != len(keys):
        return Decision(False, "query parameters that differ only in case")
    unexpected = set(query) - PARAMETERS
    if unexpected:
        return Decision(False, f"query parameter not allowed with a signed image URL: {sorted(unexpected)[0][:40]}")
    if query.get("format") != image.image_format:
        return Decision(False, f"the signed image URL is for format={image.image_format}")
    frame = query.get("frame")
    if frame is not None and not _FRAME.fullmatch(frame):
        return Decision(False, "frame: a positive whole number")
    return Decision(True, "signed image", int(frame) if frame else 1)
