"""Signed image URLs: the token rules (core/image_urls.py), a study's image listing (core/study_images.py), and the
refusals of the HTTP filter and the router for every shape that is not the one rendered image a token is for."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast
from unittest import mock

import jwt
import pytest

from ehr_imaging.api.router import SIGNED_URL, Request, Router, json_response
from ehr_imaging.app.access_log import AccessLog
from ehr_imaging.app.dicomweb_gate import ViewerGate
from ehr_imaging.app.image_urls import SignedImages
from ehr_imaging.app.study_hierarchy import StudyHierarchy
from ehr_imaging.app.token_revocations import RevocationList
from ehr_imaging.config import Settings
from ehr_imaging.core import image_urls as rules
from ehr_imaging.core.auth import Authenticator as Auth
from ehr_imaging.core.auth import AuthError, BasicAuthenticator, TokenVerifier, user_principal
from ehr_imaging.core.study_images import list_series, ordered_series
from ehr_imaging.core.viewer_tokens import VIEWER_AUDIENCE, mint_viewer_token, viewer_principal
from ehr_imaging.hooks.http_filter import make_filter
from ehr_imaging.services import Services
from ehr_imaging.store.viewer_tokens import AccessCount

SECRET = "image-url-test-secret-0123456789abcdef"
ISSUER = "ehr-imaging-test"
STUDY, SOP, OTHER_SOP = "1.2.3.4", "1.2.3.4.5.6", "1.2.3.4.5.7"
ORTHANC_INSTANCE = "0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"
GRANT = "grant-1"
PATH = f"/api/v1/dicom/images/{SOP}/rendered"


def minted(*, image_format: str = "png", ttl: int = 60, now: float | None = None, secret: str = SECRET,
           issuer: str = ISSUER) -> str:
    issued = time.time() if now is None else now
    return rules.mint(secret=secret, issuer=issuer, grant_id=GRANT, subject="dr-who", study_uid=STUDY,
                      sop_instance_uid=SOP, orthanc_instance_id=ORTHANC_INSTANCE, image_format=image_format,
                      expires_at=int(issued) + ttl, now=issued)


def verified(token: str, now: float | None = None) -> rules.SignedImage:
    return rules.verify(token, secret=SECRET, issuer=ISSUER, leeway_seconds=5, now=now)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


NONE_HEADER = _b64(b'{"alg":"none","typ":"JWT"}')


# --- the token ---------------------------------------------------------------------------------------------------

def test_a_token_opens_the_one_image_it_was_minted_for() -> None:
    image = verified(minted(image_format="jpeg"))
    assert (image.sop_instance_uid, image.orthanc_instance_id, image.study_uid, image.image_format,
            image.token_id, image.subject) == (SOP, ORTHANC_INSTANCE, STUDY, "jpeg", GRANT, "dr-who")


def test_a_token_expires() -> None:
    now = time.time()
    token = minted(ttl=60, now=now)
    assert verified(token, now=now + 60 + 4).sop_instance_uid == SOP  # within the 5 s leeway
    with pytest.raises(AuthError, match="expired"):
        verified(token, now=now + 60 + 5)
    with pytest.raises(AuthError, match="not valid yet"):
        verified(token, now=now - 30)


def _claims(token: str) -> dict[str, Any]:
    found: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return found


@pytest.mark.parametrize("forge", [
    lambda c: jwt.encode(c, "another-secret-of-sufficient-length-1234", algorithm="HS256"),
    lambda c: jwt.encode(c, SECRET, algorithm="HS512"),
    lambda c: jwt.encode({**c, "aud": VIEWER_AUDIENCE}, SECRET, algorithm="HS256"),
    lambda c: jwt.encode({**c, "aud": "ehr-imaging"}, SECRET, algorithm="HS256"),
    lambda c: jwt.encode({**c, "iss": "someone-else"}, SECRET, algorithm="HS256"),
    lambda c: jwt.encode({**c, "typ": "viewer"}, SECRET, algorithm="HS256"),
    lambda c: jwt.encode({k: v for k, v in c.items() if k != "oi"}, SECRET, algorithm="HS256"),
    lambda c: jwt.encode({k: v for k, v in c.items() if k != "fmt"}, SECRET, algorithm="HS256"),
    lambda c: jwt.encode({**c, "fmt": "gif"}, SECRET, algorithm="HS256"),
    lambda c: jwt.encode({**c, "sop": "1.2.x"}, SECRET, algorithm="HS256"),
    lambda c: jwt.encode({**c, "oi": "../../studies"}, SECRET, algorithm="HS256"),
    lambda c: jwt.encode({**c, "exp": str(c["exp"])}, SECRET, algorithm="HS256"),
    lambda c: f"{NONE_HEADER}.{_b64(json.dumps(c).encode())}.",
    lambda c: "not.a.token",
    lambda c: "",
], ids=["other-secret", "hs512", "viewer-audience", "user-audience", "other-issuer", "viewer-type", "no-instance",
        "no-format", "bad-format", "bad-sop", "bad-orthanc-id", "string-exp", "alg-none", "garbage", "empty"])
def test_forged_or_foreign_tokens_are_refused(forge: Callable[[dict[str, Any]], str]) -> None:
    with pytest.raises(AuthError):
        verified(forge(_claims(minted())))


def test_a_tampered_token_is_refused() -> None:
    header, _payload, signature = minted().split(".")
    changed = {**_claims(minted()), "sop": OTHER_SOP}
    with pytest.raises(AuthError, match="invalid"):
        verified(".".join([header, _b64(json.dumps(changed).encode()), signature]))


def test_no_other_verifier_takes_an_image_token_and_it_takes_no_other_token() -> None:
    token = minted()
    viewers = TokenVerifier(issuer=ISSUER, audience=VIEWER_AUDIENCE, secret=SECRET,
                            principal_from_claims=viewer_principal)
    users = TokenVerifier(issuer=ISSUER, audience="ehr-imaging", secret=SECRET, principal_from_claims=user_principal)
    for verifier in (viewers, users):
        with pytest.raises(AuthError):
            verifier.verify(token)
    viewer = mint_viewer_token(secret=SECRET, issuer=ISSUER, subject="x", studies={STUDY: ORTHANC_INSTANCE},
                               ttl_seconds=60).token
    with pytest.raises(AuthError):
        verified(viewer)


@pytest.mark.parametrize("changes", [{"image_format": "gif"}, {"sop_instance_uid": "x"},
                                     {"orthanc_instance_id": "abc"}, {"subject": ""}, {"expires_at": 0}])
def test_minting_refuses_what_could_not_be_verified_back(changes: dict[str, Any]) -> None:
    values: dict[str, Any] = {"grant_id": GRANT, "subject": "dr", "study_uid": STUDY, "sop_instance_uid": SOP,
                              "orthanc_instance_id": ORTHANC_INSTANCE, "image_format": "png",
                              "expires_at": int(time.time()) + 60, **changes}
    with pytest.raises(ValueError):
        rules.mint(secret=SECRET, issuer=ISSUER, **values)


# --- the rule: that one rendered image only ----------------------------------------------------------------------

IMAGE = rules.SignedImage(GRANT, "dr", STUDY, SOP, ORTHANC_INSTANCE, "png", int(time.time()) + 60)
QUERY = {"format": "png", rules.TOKEN_PARAM: "t"}


def test_the_rule_allows_its_image_and_a_frame_of_it() -> None:
    assert rules.decide(IMAGE, "GET", PATH, QUERY, body=False) == rules.Decision(True, "signed image", 1)
    assert rules.decide(IMAGE, "GET", PATH, {**QUERY, "frame": "3"}, body=False).frame == 3


@pytest.mark.parametrize(("method", "path", "query", "body"), [
    ("GET", f"/api/v1/dicom/images/{OTHER_SOP}/rendered", QUERY, False),  # another instance
    ("GET", PATH, {**QUERY, "format": "jpeg"}, False),  # another format
    ("GET", PATH, {rules.TOKEN_PARAM: "t"}, False),  # no format
    ("GET", f"/api/v1/dicom/render/{SOP}", QUERY, False),  # the API's own render route
    ("GET", f"/api/v1/dicom/images/{SOP}/url", QUERY, False),  # minting more URLs
    ("GET", f"/api/v1/dicom/studies/{STUDY}/images", QUERY, False),
    ("GET", f"/api/v1/dicom/download/{STUDY}", QUERY, False),
    ("GET", f"/dicom-web/studies/{STUDY}/series/1.2/instances/{SOP}/rendered", QUERY, False),  # DICOMweb
    ("GET", f"/instances/{ORTHANC_INSTANCE}/file", QUERY, False),  # the DICOM file
    ("GET", "/wado", {**QUERY, "requestType": "WADO", "objectUID": SOP}, False),
    ("GET", f"/api/v1/dicom/images/{SOP}/rendered/", QUERY, False),
    ("GET", f"/api/v1/dicom/images/{SOP}/../{OTHER_SOP}/rendered", QUERY, False),
    ("GET", f"/api/v1/dicom//images/{SOP}/rendered", QUERY, False),
    ("POST", PATH, QUERY, False), ("PUT", PATH, QUERY, False), ("DELETE", PATH, QUERY, False),
    ("GET", PATH, QUERY, True),  # a body
    ("GET", PATH, {**QUERY, "window": "400", "level": "40"}, False),  # any other parameter
    ("GET", PATH, {**QUERY, "Format": "jpeg"}, False),  # case variants
    ("GET", PATH, {**QUERY, "frame": "0"}, False), ("GET", PATH, {**QUERY, "frame": "1e3"}, False),
])
def test_the_rule_refuses_every_other_shape(method: str, path: str, query: dict[str, str], body: bool) -> None:
    decision = rules.decide(IMAGE, method, path, query, body=body)
    assert not decision.allowed and decision.reason


# --- a study's images, ordered -----------------------------------------------------------------------------------

def _instance(orthanc_id: str, sop: str, number: str | None, frames: str | None = None) -> dict[str, Any]:
    tags = {"SOPInstanceUID": sop, **({"InstanceNumber": number} if number is not None else {}),
            **({"NumberOfFrames": frames} if frames is not None else {})}
    return {"ID": orthanc_id, "MainDicomTags": tags}


def test_instances_are_ordered_by_instance_number_and_series_by_series_number() -> None:
    ct = list_series({"ID": "s1", "MainDicomTags": {"SeriesInstanceUID": "1.9", "SeriesNumber": "2", "Modality": "CT"}},
                     [_instance("c", "1.9.3", "10"), _instance("a", "1.9.1", "2"), _instance("x", "1.9.9", None),
                      _instance("b", "1.9.2", "2 "), _instance("d", "1.9.4", "1", frames="12")])
    sr = list_series({"ID": "s0", "MainDicomTags": {"SeriesInstanceUID": "1.8", "SeriesNumber": "1", "Modality": "SR"}},
                     [_instance("r", "1.8.1", "1")])
    assert [i.sop_instance_uid for i in ct.instances] == ["1.9.4", "1.9.1", "1.9.2", "1.9.3", "1.9.9"]
    assert [i.frames for i in ct.instances] == [12, 1, 1, 1, 1] and ct.is_image
    assert [i.instance_number for i in ct.instances] == [1, 2, 2, 10, None]
    assert not sr.is_image and sr.instances[0].frames == 0  # a report has no image to render
    assert [s.series_instance_uid for s in ordered_series([ct, sr])] == ["1.8", "1.9"]


# --- the filter and the router -------------------------------------------------------------------------------------

def services(**settings: Any) -> Services:
    return cast(Services, SimpleNamespace(settings=Settings(JwtIssuer=ISSUER, **settings), signing_secret=SECRET))


class Counted:
    """The viewer access audit's counts, as PostgreSQL would receive them."""

    def __init__(self) -> None:
        self.counts: list[AccessCount] = []
        self.log = AccessLog(self.write)

    def write(self, counts: Any) -> None:
        self.counts.extend(counts)


@pytest.fixture()
def audit() -> Counted:
    return Counted()


@pytest.fixture()
def signed(audit: Counted) -> SignedImages:
    revocations = RevocationList(lambda: {"revoked-grant": time.time() + 60})
    revocations.refresh()
    return SignedImages(services(), revocations, audit.log)


@pytest.fixture()
def logged() -> list[str]:
    return []


@pytest.fixture()
def http_filter(signed: SignedImages, logged: list[str]) -> Callable[..., bool]:
    authenticator = Auth(users=TokenVerifier(issuer=ISSUER, audience="a", secret=SECRET),
                         admins=BasicAuthenticator({"admin": "pw"}), sessions=None)
    gate = ViewerGate(TokenVerifier(issuer=ISSUER, audience=VIEWER_AUDIENCE, secret=SECRET), RevocationList(dict),
                      StudyHierarchy(None), AccessLog(lambda counts: None))  # type: ignore[arg-type]
    made = make_filter(authenticator, gate, logged.append, body_refusal=lambda method, path, caller: None,
                       max_body_bytes=1_000_000, signed_images=signed)

    def call(method: str, uri: str, query: dict[str, str], headers: dict[str, str] | None = None) -> bool:
        return bool(made(uri, method, "192.0.2.9", headers or {}, query))

    return call


def test_the_filter_lets_the_image_through_and_refuses_every_other_use(
        http_filter: Callable[..., bool], logged: list[str], signed: SignedImages, audit: Counted) -> None:
    token = minted()
    query = {"format": "png", rules.TOKEN_PARAM: token}
    assert http_filter("GET", PATH, query)
    assert http_filter("GET", PATH, {"format": "png", "image%5Ftoken": token})  # Orthanc hands keys undecoded
    refused = [("GET", f"/api/v1/dicom/images/{OTHER_SOP}/rendered", query, None),
               ("GET", f"/dicom-web/studies/{STUDY}/series/1.2/instances/{SOP}/rendered", query, None),
               ("GET", f"/instances/{ORTHANC_INSTANCE}/file", query, None),
               ("GET", f"/api/v1/dicom/studies/{STUDY}/images", query, None),
               # admin credentials do not widen a request that carries a signed image token
               ("GET", "/system", query, {"authorization": "Basic " + base64.b64encode(b"admin:pw").decode()}),
               ("POST", PATH, query, None), ("GET", PATH, query, {"content-length": "5"}),
               ("GET", PATH, query, {"transfer-encoding": "chunked"}),
               ("GET", PATH, {**query, "format": "jpeg"}, None), ("GET", PATH, {**query, "quality": "5"}, None),
               ("GET", PATH, {**query, rules.TOKEN_PARAM: minted(now=time.time() - 3600)}, None),  # expired
               ("GET", PATH, {**query, rules.TOKEN_PARAM: "x.y.z"}, None)]
    for method, uri, sent, headers in refused:
        assert not http_filter(method, uri, sent, headers), (method, uri, sent)
    assert len(logged) == len(refused)
    assert all(token not in line for line in logged)  # logged by path and reason, never the token
    audit.log.flush()
    (count,) = audit.counts
    # Refusals of a valid token are counted as denied under its grant (expired and garbage ones cannot be).
    assert (count.token_id, count.study_uid, count.subject, count.requests, count.denied) == (
        GRANT, STUDY, "dr-who", 0, len(refused) - 2)


def test_a_revoked_grant_is_refused(signed: SignedImages) -> None:
    token = rules.mint(secret=SECRET, issuer=ISSUER, grant_id="revoked-grant", subject="dr", study_uid=STUDY,
                       sop_instance_uid=SOP, orthanc_instance_id=ORTHANC_INSTANCE, image_format="png",
                       expires_at=int(time.time()) + 60)
    verdict = signed.judge(token, "GET", PATH, {"format": "png", rules.TOKEN_PARAM: token}, body=False)
    assert verdict.image is None and verdict.decision.reason == "signed image URL revoked"


def test_the_router_refuses_an_image_token_on_every_route_but_the_signed_one() -> None:
    router = Router(mock.MagicMock(), lambda message: None)
    router.add("GET", "/api/v1/dicom/health", lambda r: json_response({"ok": True}), roles=frozenset({"<public>"}))
    router.add("GET", "/api/v1/dicom/images/{sop}/rendered", lambda r: json_response({"signed": True}),
               roles=SIGNED_URL)
    health = router.dispatch("/api/v1/dicom/health", Request("GET", "/api/v1/dicom/health",
                                                             query={rules.TOKEN_PARAM: "t"}))
    assert health.status == 403 and b"does not open GET /api/v1/dicom/health" in health.body
    signed = router.dispatch("/api/v1/dicom/images/{sop}/rendered", Request("GET", PATH,
                                                                            query={rules.TOKEN_PARAM: "t"}), [SOP])
    assert (signed.status, json.loads(signed.body)) == (200, {"signed": True})  # no credentials asked: the handler's
