"""Viewer tokens: short-lived JWTs the plugin signs, scoped to StudyInstanceUIDs.

They are told apart from user tokens by their own audience (so a viewer token is refused by every
``/api/v1`` route, whose verifier expects the user audience) and by ``typ: viewer``. They carry their
studies (an order or a patient is expanded at minting time), so the HTTP filter decides locally,
without a database or network call; ``jti`` lets them be revoked before they expire.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from .auth import AuthError, Principal
from .dicom_values import is_uid

VIEWER_AUDIENCE = "ehr-imaging-viewer"
VIEWER_TYPE = "viewer"
MAX_STUDIES = 200  # a URL carries the token: keep it well under common URL limits
_ORTHANC_ID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}")
# The Orthanc study of each StudyInstanceUID in ``studies``, in the same order (short: the token is in a URL).
ORTHANC_STUDIES_CLAIM = "orthanc_studies"


@dataclass(frozen=True)
class ViewerToken:
    token: str
    token_id: str
    expires_at: int
    study_uids: tuple[str, ...]


def mint_viewer_token(*, secret: str, issuer: str, subject: str, studies: Mapping[str, str], ttl_seconds: int,
                      now: float | None = None) -> ViewerToken:
    """``studies``: StudyInstanceUID -> the Orthanc study recorded for it (the token opens that one only)."""
    if not studies:
        raise ValueError("a viewer token needs at least one study")
    if len(studies) > MAX_STUDIES:
        raise ValueError(f"a viewer token holds at most {MAX_STUDIES} studies")
    bad = [uid for uid in studies if not is_uid(uid)]
    if bad:
        raise ValueError(f"not a DICOM UID: {bad[0]!r}")
    if not all(_ORTHANC_ID.fullmatch(orthanc_id) for orthanc_id in studies.values()):
        raise ValueError("not an Orthanc study ID")
    issued = int(time.time() if now is None else now)
    token_id = secrets.token_urlsafe(16)
    uids = tuple(studies)
    claims = {"iss": issuer, "aud": VIEWER_AUDIENCE, "sub": subject, "typ": VIEWER_TYPE, "jti": token_id,
              "iat": issued, "nbf": issued, "exp": issued + ttl_seconds, "studies": list(uids),
              ORTHANC_STUDIES_CLAIM: [studies[uid] for uid in uids]}
    return ViewerToken(jwt.encode(claims, secret, algorithm="HS256"), token_id, issued + ttl_seconds, uids)


def viewer_principal(claims: Mapping[str, Any]) -> Principal:
    """The principal of a verified viewer token; refuses anything that is not one of ours, complete."""
    studies = claims.get("studies")
    orthanc_ids = claims.get(ORTHANC_STUDIES_CLAIM)
    if claims.get("typ") != VIEWER_TYPE or not isinstance(claims.get("jti"), str):
        raise AuthError("not a viewer token")
    if not isinstance(studies, list) or not studies or not all(is_uid(u) for u in studies):
        raise AuthError("viewer token without valid studies")
    if (not isinstance(orthanc_ids, list) or len(orthanc_ids) != len(studies)
            or not all(isinstance(i, str) and _ORTHANC_ID.fullmatch(i) for i in orthanc_ids)):
        # Tokens minted before the Orthanc study was fixed at minting (a collision could widen them): refused.
        raise AuthError("viewer token without its Orthanc studies: mint a new one")
    return Principal(subject=str(claims["sub"]), roles=frozenset(), via="viewer", expires_at=float(claims["exp"]),
                     scope=frozenset(studies), token_id=str(claims["jti"]),
                     scope_studies=dict(zip(studies, orthanc_ids, strict=True)))

