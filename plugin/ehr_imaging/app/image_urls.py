"""Signed image URLs: minting them (one instance, or every image of a study), and judging and counting each use.

Each call that mints URLs is one grant (``jti``): recorded with the viewer tokens (kind ``image-url``: who asked,
for which study, until when), revocable like them by its ``token_id``, and the key its uses are counted under
in the viewer access audit (app/access_log.py: per grant and study, in memory, flushed to PostgreSQL). Every
instance is resolved through the study recorded for its StudyInstanceUID (study_resolution): a URL never opens
another patient's copy. The rule a use must pass is core/image_urls.decide; the HTTP filter (Orthanc's port)
and the route (both ports) ask ``SignedImages.judge``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from ..core import errors
from ..core import image_urls as rules
from ..core.auth import AuthError
from ..core.dicom_values import is_uid
from ..core.study_images import ListedSeries, list_series, ordered_series
from ..services import Services
from ..store import viewer_tokens as token_store
from . import study_resolution
from .access_log import AccessLog
from .token_revocations import RevocationList

KIND = "image-url"  # viewer_tokens.kind of a grant of signed image URLs


@dataclass(frozen=True)
class Grant:
    token_id: str
    expires_at: int  # epoch seconds
    image_format: str
    issued_at: int  # every token of the grant says so (a long listing never mints past its expiry)


@dataclass(frozen=True)
class InstanceUrl:
    url: str
    grant: Grant
    study_uid: str


@dataclass(frozen=True)
class StudyImages:
    study_uid: str
    orthanc_study_id: str
    grant: Grant
    series: tuple[ListedSeries, ...]
    urls: Mapping[str, str]  # Orthanc instance ID -> its signed URL (images only)


def url_of(services: Services, sop_instance_uid: str, image_format: str, token: str) -> str:
    """``PublicBaseUrl`` + the signed path (relative when no base is configured: the same origin)."""
    base = services.settings.PublicBaseUrl.rstrip("/")
    return (f"{base}{rules.signed_path(sop_instance_uid)}?format={image_format}"
            f"&{rules.TOKEN_PARAM}={quote(token, safe='')}")


def instance_url(services: Services, subject: str, sop_instance_uid: str, image_format: str,
                 ttl_seconds: int) -> InstanceUrl:
    """A signed URL of one stored instance's rendered image (the recorded study's copy)."""
    orthanc_instance, study_uid = recorded_instance(services, sop_instance_uid)
    grant = _grant(services, subject, study_uid, image_format, ttl_seconds)
    token = _mint(services, grant, subject, study_uid, sop_instance_uid, orthanc_instance)
    return InstanceUrl(url_of(services, sop_instance_uid, image_format, token), grant, study_uid)


def study_images(services: Services, subject: str, study_uid: str, image_format: str,
                 ttl_seconds: int) -> StudyImages:
    """A stored study's series and instances (ordered), with a signed URL for each image; one grant for all."""
    orthanc_study = study_resolution.stored_study(services, study_uid)
    try:
        found = [list_series(series, services.pacs.get_json(f"/series/{series['ID']}/instances"))
                 for series in services.pacs.get_json(f"/studies/{orthanc_study}/series")]
    except errors.NotFound:  # deleted between the lookup and the read
        raise errors.NotFound(f"study {study_uid} not found") from None
    listed = tuple(ordered_series(found))
    grant = _grant(services, subject, study_uid, image_format, ttl_seconds)
    urls = {instance.orthanc_id: url_of(services, instance.sop_instance_uid, image_format,
                                        _mint(services, grant, subject, study_uid, instance.sop_instance_uid,
                                              instance.orthanc_id))
            for series in listed if series.is_image for instance in series.instances
            if is_uid(instance.sop_instance_uid)}
    return StudyImages(study_uid, orthanc_study, grant, listed, urls)


def recorded_instance(services: Services, sop_instance_uid: str) -> tuple[str, str]:
    """(Orthanc instance ID, StudyInstanceUID) of the instance with this SOPInstanceUID in the study recorded
    for its StudyInstanceUID; NotFound when no such instance is stored (or only in another patient's copy)."""
    if not is_uid(sop_instance_uid):
        raise errors.Malformed("sop_instance_uid: not a DICOM UID")
    matches = json.loads(services.pacs.post_bytes("/tools/lookup", sop_instance_uid))
    for candidate in [str(m["ID"]) for m in matches if m.get("Type") == "Instance"]:
        try:
            study = services.pacs.get_json(f"/instances/{candidate}/study")
        except errors.NotFound:  # deleted meanwhile
            continue
        uid = str(study.get("MainDicomTags", {}).get("StudyInstanceUID", ""))
        if uid and study_resolution.resolve_one(services, uid) == study.get("ID"):
            return candidate, uid
    raise errors.NotFound(f"instance {sop_instance_uid} not found")


def _grant(services: Services, subject: str, study_uid: str, image_format: str, ttl_seconds: int) -> Grant:
    issued = int(time.time())
    grant = Grant(rules.new_grant_id(), issued + ttl_seconds, image_format, issued)
    token_store.record_issued(services.engine, token_id=grant.token_id, subject=subject, study_uids=[study_uid],
                              expires_at=grant.expires_at, kind=KIND)
    return grant


def _mint(services: Services, grant: Grant, subject: str, study_uid: str, sop_instance_uid: str,
          orthanc_instance: str) -> str:
    return rules.mint(secret=services.signing_secret, issuer=services.settings.JwtIssuer, grant_id=grant.token_id,
                      subject=subject, study_uid=study_uid, sop_instance_uid=sop_instance_uid,
                      orthanc_instance_id=orthanc_instance, image_format=grant.image_format,
                      expires_at=grant.expires_at, now=grant.issued_at)


@dataclass(frozen=True)
class Verdict:
    """A request with a signed image token, judged: ``image`` None when the token itself is not valid."""

    image: rules.SignedImage | None
    decision: rules.Decision


class SignedImages:
    """Judges each use of a signed image URL (signature, expiry, revocation, the rule) and counts it in the
    viewer access audit. No database call: the revocation list and the audit counts are in memory."""

    def __init__(self, services: Services, revocations: RevocationList, access_log: AccessLog, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._services = services
        self._revocations = revocations
        self._access_log = access_log
        self._clock = clock

    def judge(self, token: str, method: str, path: str, query: Mapping[str, str], *, body: bool) -> Verdict:
        settings = self._services.settings
        try:
            image = rules.verify(token, secret=self._services.signing_secret, issuer=settings.JwtIssuer,
                                 leeway_seconds=min(settings.JwtLeewaySeconds, 5), now=self._clock())
            if self._revocations.is_revoked(image.token_id):
                raise AuthError("signed image URL revoked" if self._revocations.ready else "revocations not loaded yet")
        except AuthError as exc:
            return Verdict(None, rules.Decision(False, str(exc)))
        decision = rules.decide(image, method, path, query, body=body)
        if not decision.allowed:
            self._access_log.record(image.token_id, image.subject, image.study_uid, allowed=False)
        return Verdict(image, decision)

    def served(self, image: rules.SignedImage, size: int) -> None:
        """An image answered: one request and its bytes, under the grant and its study."""
        self._access_log.record(image.token_id, image.subject, image.study_uid, allowed=True, size=size)
