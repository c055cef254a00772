"""A battery of crafted requests against the real filter: each is refused, or answered exactly as an admin's.

Requests go out byte for byte as written (http.client: no client-side normalisation of dot segments,
double slashes or encodings). ``A`` is the token's study, ``B`` another patient's; ``SA``/``IA`` and
``SB``/``IB`` their series and instances; ``OA`` is A's Orthanc ID; ``PA``/``PB`` the PatientIDs.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest

from ehr_imaging.core.study_identity import orthanc_study_id
from ehr_imaging.core.viewer_tokens import mint_viewer_token
from tests.conftest import Client
from tests.integration.viewer_helpers import FRAME_ACCEPT, StoredStudy, viewer_token

pytestmark = pytest.mark.integration

ALLOW, DENY = "allow", "deny"
DICOM_JSON_ACCEPT = "application/dicom+json"


@dataclass(frozen=True)
class Case:
    path: str
    expect: str
    token: str = "viewer"
    method: str = "GET"
    accept: str | None = None
    status: int = 403  # the refusal expected (401 where a route of ours answers)


def cases() -> list[Case]:
    allowed = [
        "/dicom-web/studies/{A}/metadata",
        "/dicom-web/studies/{A}/series/{SA}/metadata",
        "/dicom-web/studies/{A}/series/{SA}/instances/{IA}/metadata",
        "/dicom-web/studies/{A}/series",
        "/dicom-web/studies/{A}/instances",
        "/dicom-web/studies/{A}/series/{SA}/instances",
        "/dicom-web/studies/{A}/series?includefield=all&limit=5",
        "/dicom-web/studies/{A}/series?PatientID={PB}",  # narrows inside A: harmless, answered (empty)
        # Orthanc's HTTP server normalises these before the filter sees them: they are A's own reads.
        "/dicom-web//studies/{A}/metadata", "/dicom-web/studies//{A}/metadata", "/dicom-web/./studies/{A}/metadata",
        "/dicom-web/studies/{A}/metadata%00/../../{B}",  # decoded, cut at the NUL: A's metadata
        "/ehr-imaging/dicom-web/studies",
        "/ehr-imaging/dicom-web/studies?StudyInstanceUID={A}",
        "/ehr-imaging/dicom-web/studies?PatientID={PA}",
        "/ehr-imaging/dicom-web/studies?PatientID={PB}",
        "/ehr-imaging/dicom-web/studies?StudyInstanceUID={B}",
        "/ehr-imaging/dicom-web/studies?StudyInstanceUID={A},{B}",
        "/ehr-imaging/dicom-web/studies?StudyInstanceUID={B}%5C{A}",
        "/ehr-imaging/dicom-web/studies?0020000D={B}",
        "/ehr-imaging/dicom-web/studies?limit=1&offset=0",
        "/ehr-imaging/dicom-web/studies/{A}/series",
        "/ehr-imaging/dicom-web/studies/{A}/series/{SA}/instances",
        "/ehr-imaging/dicom-web/studies/{A}/instances",
    ]
    binary_allowed = [
        ("/dicom-web/studies/{A}/series/{SA}/instances/{IA}/frames/1", FRAME_ACCEPT),
        ("/dicom-web/studies/{A}/series/{SA}/instances/{IA}/bulk/7fe00010", FRAME_ACCEPT),
        ("/dicom-web/studies/{A}/series/{SA}/instances/{IA}", "multipart/related; type=\"application/dicom\""),
        ("/dicom-web/studies/{A}/series/{SA}", "multipart/related; type=\"application/dicom\""),
        ("/dicom-web/studies/{A}", "multipart/related; type=\"application/dicom\""),
        ("/dicom-web/studies/{A}/series/{SA}/instances/{IA}/rendered", "image/png"),
        ("/dicom-web/studies/{A}/series/{SA}/instances/{IA}/frames/1/rendered", "image/jpeg"),
        ("/dicom-web/studies/{A}/series/{SA}/instances/{IA}/rendered?viewport=128,128&quality=80", "image/jpeg"),
        ("/wado?requestType=WADO&studyUID={A}&seriesUID={SA}&objectUID={IA}&contentType=application/dicom", None),
        ("/wado?requestType=WADO&studyUID={A}&seriesUID={SA}&objectUID={IA}&contentType=image/jpeg", None),
    ]
    denied = [
        # Another patient's study, in every shape.
        "/dicom-web/studies/{B}/metadata", "/dicom-web/studies/{B}", "/dicom-web/studies/{B}/series",
        "/dicom-web/studies/{B}/instances", "/dicom-web/studies/{B}/series/{SB}/metadata",
        "/dicom-web/studies/{B}/series/{SB}/instances/{IB}/frames/1",
        "/dicom-web/studies/{B}/series/{SB}/instances/{IB}/bulk/7fe00010",
        "/dicom-web/studies/{B}/rendered", "/dicom-web/studies/{B}/thumbnail",
        # Cross-study UIDs: the path's study is not trusted alone.
        "/dicom-web/studies/{A}/series/{SB}/metadata", "/dicom-web/studies/{A}/series/{SB}",
        "/dicom-web/studies/{A}/series/{SB}/instances", "/dicom-web/studies/{A}/series/{SA}/instances/{IB}",
        "/dicom-web/studies/{A}/series/{SA}/instances/{IB}/frames/1",
        "/dicom-web/studies/{A}/series/{SB}/instances/{IB}/metadata",
        "/dicom-web/studies/{B}/series/{SA}/metadata", "/dicom-web/studies/{B}/series/{SA}/instances/{IA}/frames/1",
        "/ehr-imaging/dicom-web/studies/{A}/series/{SB}/instances",
        # UIDs in the query of WADO/QIDO paths.
        "/dicom-web/studies/{A}/series?StudyInstanceUID={B}", "/dicom-web/studies/{A}/series?0020000D={B}",
        "/dicom-web/studies/{A}/series?0020000d={B}", "/dicom-web/studies/{A}/instances?SeriesInstanceUID={SB}",
        "/dicom-web/studies/{A}/metadata?StudyInstanceUID={B}", "/dicom-web/studies/{A}/series?00080018={IB}",
        # Queries Orthanc's QIDO would answer beyond the scope.
        "/dicom-web/studies", "/dicom-web/studies?StudyInstanceUID={A}", "/dicom-web/studies?PatientID={PA}",
        "/dicom-web/studies?StudyInstanceUID={A},{B}", "/dicom-web/studies?StudyInstanceUID={A}%5C{B}",
        "/dicom-web/series", "/dicom-web/series?StudyInstanceUID={A}", "/dicom-web/instances",
        "/dicom-web/instances?SOPInstanceUID={IA}",
        # Orthanc IDs instead of UIDs; look-alike and non-canonical paths.
        "/dicom-web/studies/{OA}/metadata", "/dicom-web/studies/{OA}",
        "/dicom-web/studies/{A}/../{B}/metadata", "/dicom-web/studies/{A}/%2e%2e/{B}/metadata",
        "/dicom-web/studies/{A}/metadata/", "/DICOM-WEB/studies/{A}/metadata",
        "/dicom-web/studies/{A}%2F..%2F{B}/metadata", "/dicom-web/studies/{A}/series/{SA}/instances/{IA}/frames/0",
        "/dicom-web/studies/{A}/series/{SA}/instances/{IA}/frames/x",
        "/dicom-web/studies/{A}/series/{SA}/instances/{IA}/bulk/../../../../{B}",
        "/dicom-web/studies/{A}/series/{SA}/instances/{IA}/frames/1/extra",
        "/dicom-web/studies/{A}/unknown", "/dicom-web/servers", "/dicom-web/info",
        # WADO-URI beyond the scope or incomplete.
        "/wado?requestType=WADO&studyUID={B}&seriesUID={SB}&objectUID={IB}",
        "/wado?requestType=WADO&studyUID={A}&seriesUID={SA}&objectUID={IB}",
        "/wado?requestType=WADO&studyUID={A}&seriesUID={SB}&objectUID={IA}",
        "/wado?requestType=WADO&objectUID={IA}", "/wado?studyUID={A}&seriesUID={SA}&objectUID={IA}",
        # Case variants of WADO-URI names (found in review: the server reads only the exact spelling).
        "/wado?requestType=WADO&objectUID={IB}&StudyUID={A}&SeriesUID={SA}&ObjectUID={IA}&contentType=application/dicom",
        "/wado?requestType=WADO&objectUID={IB}&StudyUID={A}&SeriesUID={SA}&ObjectUID={IA}&contentType=image/png",
        "/wado?RequestType=WADO&requestType=WADO&studyUID={B}&seriesUID={SB}&objectUID={IB}",
        "/wado?requesttype=WADO&studyuid={A}&seriesuid={SA}&objectuid={IA}",
        "/dicom-web/studies/{A}/series?limit=1&LIMIT=2",
        "/wado?requestType=WADO&studyUID={A}&seriesUID={SA}&objectUID={IA}&presentationUID={IB}",
        # Orthanc's own API and Explorer.
        "/system", "/studies", "/studies/{OA}", "/studies/{OA}/archive", "/instances", "/patients", "/tools/find",
        "/app/explorer.html", "/changes", "/", "/plugins", "/jobs",
    ]
    battery = [Case(path, ALLOW, accept=DICOM_JSON_ACCEPT) for path in allowed]
    battery += [Case(path, ALLOW, accept=accept) for path, accept in binary_allowed]
    battery += [Case(path, DENY) for path in denied]
    # Writes are refused, in scope or not.
    battery += [Case("/dicom-web/studies", DENY, method="POST"), Case("/dicom-web/studies/{A}", DENY, method="POST"),
                Case("/dicom-web/studies/{A}", DENY, method="DELETE"), Case("/studies/{OA}", DENY, method="DELETE"),
                Case("/dicom-web/studies/{A}/metadata", DENY, method="PUT"),
                # The filter refuses anything but GET on the scoped root before Orthanc reads a body (was 405).
                Case("/ehr-imaging/dicom-web/studies", DENY, method="POST"),
                Case("/ehr-imaging/dicom-web/studies/{A}/series", DENY, method="PUT"),
                Case("/ehr-imaging/dicom-web/studies", DENY, method="DELETE"),
                # Sizes and qualities a viewer token may ask Orthanc to render are bounded.
                Case("/dicom-web/studies/{A}/series/{SA}/instances/{IA}/rendered?viewport=60000,60000", DENY),
                Case("/dicom-web/studies/{A}/series/{SA}/instances/{IA}/frames/1/rendered?viewport=5000,64", DENY),
                Case("/dicom-web/studies/{A}/rendered?quality=101", DENY),
                Case("/dicom-web/studies/{A}/thumbnail?viewport=99999,99999", DENY),
                Case("/wado?requestType=WADO&studyUID={A}&seriesUID={SA}&objectUID={IA}&contentType=image/jpeg"
                     "&rows=60000&columns=60000", DENY),
                Case("/wado?requestType=WADO&studyUID={A}&seriesUID={SA}&objectUID={IA}&contentType=image/jpeg"
                     "&imageQuality=0", DENY),
                Case("/ehr-imaging/dicom-web/studies?limit=99999999", DENY, status=400)]
    # Viewer tokens on the plugin's API routes: refused there (own audience).
    battery += [Case(path, DENY, status=401) for path in (
        "/api/v1/dicom/stats", "/api/v1/dicom/orders", "/api/v1/dicom/studies/{A}/match", "/api/v1/dicom/unmatched")]
    battery += [Case("/api/v1/dicom/viewer-token", DENY, method="POST", status=401)]
    # Bad tokens, on an in-scope read and on the scoped QIDO root.
    for token in ("none", "expired", "not_yet_valid", "wrong_audience", "wrong_issuer", "alg_none", "tampered",
                  "alg_hs512", "alg_rs256_confused", "user_doctor", "query_token", "revoked", "garbage",
                  "basic_wrong", "other_secret", "signed_image"):
        battery.append(Case("/dicom-web/studies/{A}/metadata", DENY, token=token))
        battery.append(Case("/ehr-imaging/dicom-web/studies", DENY, token=token, status=401))
    # A signed image URL's token (of IA, A's own instance) in the URL opens its rendered image only: refused by the
    # filter on every viewer read and on our routes (as a bearer header above: no verifier takes it).
    battery += [Case(path, DENY, token="signed_image_query") for path in (
        "/dicom-web/studies/{A}/metadata", "/dicom-web/studies/{A}/series/{SA}/instances/{IA}/rendered",
        "/dicom-web/studies/{A}/series/{SA}/instances/{IA}/frames/1",
        "/wado?requestType=WADO&studyUID={A}&seriesUID={SA}&objectUID={IA}&contentType=image/jpeg",
        "/ehr-imaging/dicom-web/studies", "/api/v1/dicom/render/{IA}", "/api/v1/dicom/studies/{A}/images",
        "/instances", "/ohif/viewer")]
    # An administrator keeps everything (JWT or basic).
    battery += [Case("/dicom-web/studies/{B}/metadata", ALLOW, token="admin_jwt", accept=DICOM_JSON_ACCEPT),
                Case("/dicom-web/studies", ALLOW, token="admin_basic", accept=DICOM_JSON_ACCEPT)]
    return battery


CASES = cases()


def test_the_battery_is_large_enough() -> None:
    assert len(CASES) >= 100
    assert {c.expect for c in CASES} == {ALLOW, DENY}


class Battery:
    def __init__(self, client: Client, studies: tuple[StoredStudy, StoredStudy]) -> None:
        a, b = studies
        self.client = client
        self.url = urlsplit(client.base)
        orthanc_id = client.request("POST", "/tools/lookup", data=a.uid, auth=client.stack.admin_auth).json()
        self.values = {"A": a.uid, "B": b.uid, "SA": a.series, "SB": b.series, "IA": a.instances[0],
                       "IB": b.instances[0], "PA": a.patient_id, "PB": b.patient_id,
                       "OA": next(m["ID"] for m in orthanc_id if m["Type"] == "Study")}
        issued = viewer_token(client, subject="battery", study_uids=[a.uid])
        self.token = issued["token"]
        revoked = viewer_token(client, subject="battery", study_uids=[a.uid])
        answer = client.request("POST", "/api/v1/dicom/viewer-token/revoke", json={"token": revoked["token"]},
                                headers={"Authorization": f"Bearer {client.token('doctor', 'battery')}"})
        assert answer.status_code == 200
        self.tokens = self._tokens(a.uid, revoked["token"])
        signed = client.request("GET", f"/api/v1/dicom/images/{a.instances[0]}/url",
                                headers={"Authorization": f"Bearer {client.token('doctor', 'battery')}"})
        assert signed.status_code == 200, signed.text
        self.tokens["signed_image"] = signed.json()["url"].split("image_token=", 1)[1]

    def _tokens(self, study: str, revoked: str) -> dict[str, str]:
        secret, issuer, now = self.client.stack.secrets.jwt_secret, "ehr-imaging-dev", time.time()
        claims = jwt.decode(self.token, options={"verify_signature": False})

        def signed(**changes: Any) -> str:
            return jwt.encode({**claims, **changes}, secret, algorithm="HS256")

        header, _payload, signature = self.token.split(".")
        tampered_claims = {**claims, "studies": [self.values["B"]]}
        tampered = ".".join([header, _b64(json.dumps(tampered_claims).encode()), signature])
        return {
            "viewer": self.token,
            "expired": mint_viewer_token(secret=secret, issuer=issuer, subject="x",
                                         studies={study: orthanc_study_id("x", study)},
                                         ttl_seconds=60, now=now - 3600).token,
            "not_yet_valid": signed(nbf=int(now) + 3600, iat=int(now) + 3600),
            "wrong_audience": signed(aud="ehr-imaging"),
            "wrong_issuer": signed(iss="someone-else"),
            "alg_none": _alg_none(claims),
            "tampered": tampered,
            "alg_hs512": jwt.encode(claims, secret, algorithm="HS512"),
            "alg_rs256_confused": _rs256_header_hmac(claims, secret),
            "user_doctor": self.client.token("doctor"),
            "revoked": revoked,
            "garbage": "not.a.token",
            "other_secret": jwt.encode(claims, "another-secret-of-sufficient-length-1234", algorithm="HS256"),
            "admin_jwt": self.client.token("admin"),
        }

    def send(self, case: Case) -> tuple[int, bytes, str]:
        path = case.path.format(**self.values)
        headers = {"Accept": case.accept} if case.accept else {}
        if case.token == "query_token":
            path += ("&" if "?" in path else "?") + "token=" + self.token
        elif case.token == "signed_image_query":
            path += ("&" if "?" in path else "?") + "format=png&image_token=" + self.tokens["signed_image"]
        elif case.token in ("admin_basic", "basic_wrong"):
            user, password = self.client.stack.admin_auth
            password = password if case.token == "admin_basic" else password + "x"
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        elif case.token != "none":
            headers["Authorization"] = f"Bearer {self.tokens[case.token]}"
        return self.raw(case.method, path, headers)

    def as_admin(self, case: Case) -> tuple[int, bytes, str]:
        user, password = self.client.stack.admin_auth
        headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        if case.accept:
            headers["Accept"] = case.accept
        return self.raw(case.method, case.path.format(**self.values), headers)

    def raw(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        connection = http.client.HTTPConnection(self.url.hostname or "127.0.0.1", self.url.port, timeout=30)
        try:
            body = b"x" if method in ("POST", "PUT") else None
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            return answer.status, answer.read(), answer.getheader("Content-Type", "")
        finally:
            connection.close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


NONE_HEADER = _b64(b'{"alg":"none","typ":"JWT"}')
RS256_HEADER = _b64(b'{"alg":"RS256","typ":"JWT"}')


def _alg_none(claims: dict[str, Any]) -> str:
    return f"{NONE_HEADER}.{_b64(json.dumps(claims).encode())}."


def _rs256_header_hmac(claims: dict[str, Any], secret: str) -> str:
    """A token whose header says RS256 but that is HMAC-signed with the secret (algorithm confusion)."""
    import hashlib
    import hmac

    signing_input = f"{RS256_HEADER}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.fixture(scope="module")
def battery(client: Client, two_studies: tuple[StoredStudy, StoredStudy]) -> Battery:
    return Battery(client, two_studies)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.expect}-{c.token}-{c.method}-{c.path}" for c in CASES])
def test_crafted_request(battery: Battery, case: Case) -> None:
    status, body, content_type = battery.send(case)
    if case.expect == DENY:
        assert status == case.status, (status, body[:200])
        return
    assert status == 200, (status, body[:300])
    admin_status, admin_body, admin_type = battery.as_admin(case)
    assert (status, content_type.split(";")[0]) == (admin_status, admin_type.split(";")[0])
    if case.path.startswith("/ehr-imaging/dicom-web/studies/"):
        # Inside a study the scoped root answers what Orthanc's DICOMweb answers an administrator.
        direct = Case(case.path.replace("/ehr-imaging/dicom-web/", "/dicom-web/"), ALLOW, accept=case.accept)
        assert _without_urls(json.loads(body)) == _without_urls(json.loads(battery.as_admin(direct)[1]))
    elif case.path.startswith("/ehr-imaging/"):
        assert {item["0020000D"]["Value"][0] for item in json.loads(body)} == _scoped_expectation(battery, case)
    elif content_type.startswith("application/dicom+json"):
        assert json.loads(body) == json.loads(admin_body)  # the exact answer an administrator gets
    else:
        assert len(body) == len(admin_body)  # multipart boundaries differ per answer, never their length


def _without_urls(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """RetrieveURL (0008,1190) names the host the request came through: in-process it differs."""
    return [{tag: value for tag, value in item.items() if tag != "00081190"} for item in items]


def _scoped_expectation(battery: Battery, case: Case) -> set[str]:
    """What the scoped root must answer: only A, and only when the query admits A."""
    path = case.path
    if "PatientID={PB}" in path or path.endswith("StudyInstanceUID={B}") or "0020000D={B}" in path:
        return set()
    return {battery.values["A"]}
