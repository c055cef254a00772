"""Signed image URLs and a study's images on the real stack, on Orthanc's port and the API port.

A signed URL is what an EHR page puts in ``<img src>``: it must answer a plain GET with no header, that one
rendered image only, until it expires; every other use of its token is refused (a battery of crafted requests,
each status exact), each use is counted in the viewer access audit, and the token never reaches the log.
Requests go out byte for byte as written (http.client), without the test client's session or headers.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pydicom
import pytest

from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.helpers import accession, mrn, put_order, query
from tests.integration.viewer_helpers import StoredStudy, viewer_token
from tests.openapi_validation import problems
from tests.waiting import eventually

pytestmark = pytest.mark.integration

P = "/api/v1/dicom"
PNG_MAGIC, JPEG_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"
TOKEN = "image_token"


@dataclass(frozen=True)
class TwoSeriesStudy:
    uid: str
    order_id: str
    series: tuple[str, str]  # by SeriesNumber: (series 1, series 2)
    sops: tuple[tuple[str, ...], tuple[str, ...]]  # each series' SOPInstanceUIDs by InstanceNumber


@pytest.fixture(scope="module")
def study(client: Client, tmp_path_factory: pytest.TempPathFactory) -> TwoSeriesStudy:
    """One patient's study of two series, uploaded out of order: series 2 first, instances 3, 1, 2."""
    directory = tmp_path_factory.mktemp("image-urls")
    patient = mrn()
    order_id = put_order(client, mrn=patient, accession_number=accession())
    uid, first = make_study(directory / "s2", patient_id=patient, accession=None, study_date="20261120", instances=3)
    _, second = make_study(directory / "s1", patient_id=patient, accession=None, study_date="20261120",
                           instances=2, study_uid=uid)
    by_series: list[tuple[str, list[str]]] = []
    for number, files, instance_numbers in ((2, first, (3, 1, 2)), (1, second, (1, 2))):
        sops: dict[int, str] = {}
        for path, instance_number in zip(files, instance_numbers, strict=True):
            ds = pydicom.dcmread(path)
            ds.SeriesNumber, ds.InstanceNumber = number, instance_number
            ds.save_as(path)
            sops[instance_number] = str(ds.SOPInstanceUID)
            _upload(client, path, order_id)
        by_series.append((str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID),
                          [sops[n] for n in sorted(sops)]))
    (series_2, sops_2), (series_1, sops_1) = by_series
    return TwoSeriesStudy(uid, order_id, (series_1, series_2), (tuple(sops_1), tuple(sops_2)))


def _upload(client: Client, path: Path, order_id: str) -> None:
    answer = client.request("POST", f"{P}/upload", "technician", data=path.read_bytes(),
                            headers={"Content-Type": "application/dicom", "X-Order-Id": order_id})
    assert answer.status_code == 200, answer.text


def plain_get(base: str, target: str, headers: dict[str, str] | None = None, method: str = "GET",
              body: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
    """A request as an <img> makes it: no Authorization, no cookie; ``target`` is the path and query as given."""
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, answer.read(), {k.lower(): v for k, v in answer.getheaders()}
    finally:
        connection.close()


def target_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def image_url(client: Client, sop: str, role: str = "doctor", subject: str = "dr-images", **params: Any) -> Any:
    answer = client.request("GET", f"{P}/images/{sop}/url", params=params,
                            headers={"Authorization": f"Bearer {client.token(role, subject)}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_studys_images_come_by_series_and_instance_number_each_with_a_signed_url(
        client: Client, api: Client, study: TwoSeriesStudy) -> None:
    for port in (client, api):
        before = time.time()
        answer = port.get(f"{P}/studies/{study.uid}/images", "nurse")
        assert answer.status_code == 200, answer.text
        listed = answer.json()
        assert [s["series_instance_uid"] for s in listed["series"]] == list(study.series)
        assert [[i["sop_instance_uid"] for i in s["instances"]] for s in listed["series"]] == [
            list(sops) for sops in study.sops]
        assert [[i["instance_number"] for i in s["instances"]] for s in listed["series"]] == [[1, 2], [1, 2, 3]]
        assert {i["frames"] for s in listed["series"] for i in s["instances"]} == {1}
        assert (listed["format"], listed["number_of_series"], listed["number_of_instances"]) == ("png", 2, 5)
        expires = jwt.decode(target_of(listed["series"][0]["instances"][0]["url"]).split(f"{TOKEN}=")[1],
                             options={"verify_signature": False})["exp"]
        assert before + 600 - 2 <= expires <= time.time() + 600  # ImageUrlMaxTtlSeconds by default
        for series in listed["series"]:
            for instance in series["instances"]:
                url = instance["url"]
                assert url.startswith(f"{client.stack.url}{P}/images/{instance['sop_instance_uid']}/rendered?")
                status, body, headers = plain_get(client.stack.url, target_of(url))
                assert (status, headers["content-type"], body[:8]) == (200, "image/png", PNG_MAGIC)
        rows = query(client, "SELECT kind, subject, study_uids FROM ehr_imaging.viewer_tokens WHERE token_id = :t",
                     t=listed["token_id"])
        assert rows == [("image-url", "tester", [study.uid])]  # one grant for the whole answer, who asked


def test_a_signed_url_is_an_img_src_on_both_ports(client: Client, api: Client, study: TwoSeriesStudy) -> None:
    sop = study.sops[1][0]
    made = image_url(client, sop, format="jpeg", ttl_seconds="120")
    assert made["sop_instance_uid"] == sop and made["study_instance_uid"] == study.uid and made["format"] == "jpeg"
    browser = {"Accept": "image/avif,image/webp,*/*;q=0.8", "Sec-Fetch-Dest": "image", "Sec-Fetch-Mode": "no-cors",
               "Sec-Fetch-Site": "cross-site", "Referer": "https://ehr.example/patients/42"}
    for base in (client.stack.url, client.stack.api_url):
        for headers in (None, browser):
            status, body, answered = plain_get(base, target_of(made["url"]), headers)
            assert (status, answered["content-type"], body[:3]) == (200, "image/jpeg", JPEG_MAGIC)
            assert answered["cache-control"] == "private, no-store"
    # The image is the instance's own rendering: what the render route answers a viewing role.
    rendered = client.get(f"{P}/render/{sop}", "doctor", params={"format": "jpeg"})
    assert plain_get(client.stack.url, target_of(made["url"]))[1] == rendered.content


def test_the_answers_fit_the_openapi_document(client: Client, study: TwoSeriesStudy) -> None:
    doc = client.get(f"{P}/openapi.json", "ehr-service").json()
    components = doc["components"]["schemas"]
    for template, path in ((f"{P}/studies/{{study_uid}}/images", f"{P}/studies/{study.uid}/images"),
                           (f"{P}/images/{{sop_instance_uid}}/url", f"{P}/images/{study.sops[0][0]}/url")):
        schema = doc["paths"][template]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert problems(schema, client.get(path, "radiologist").json(), components) == []
    signed = doc["paths"][f"{P}/images/{{sop_instance_uid}}/rendered"]["get"]
    assert signed["security"] == [] and signed["x-roles"] == ["signed URL"]


def test_a_signed_url_expires(client: Client, api: Client, study: TwoSeriesStudy) -> None:
    made = image_url(client, study.sops[0][1], ttl_seconds="1")
    target = target_of(made["url"])
    assert plain_get(client.stack.url, target)[0] == 200

    def refused_on_both_ports() -> bool:
        orthanc, on_api = plain_get(client.stack.url, target), plain_get(client.stack.api_url, target)
        return (orthanc[0], on_api[0]) == (403, 401)

    # The plugin allows its own tokens 5 s of clock skew between nodes: expired about 6 s after minting.
    eventually(refused_on_both_ports, timeout=20, what="the expired signed URL refused on both ports")
    status, body, _ = plain_get(client.stack.api_url, target)
    assert status == 401 and b"expired" in body


def test_bad_requests_for_a_url_are_refused(client: Client, study: TwoSeriesStudy) -> None:
    sop = study.sops[0][0]
    assert client.get(f"{P}/images/{sop}/url", "doctor", params={"format": "gif"}).status_code == 422
    assert client.get(f"{P}/images/{sop}/url", "doctor", params={"ttl_seconds": "0"}).status_code == 422
    assert client.get(f"{P}/images/1.2.826.0.1.3680043.10.999.77/url", "doctor").status_code == 404
    assert client.get(f"{P}/images/not-a-uid/url", "doctor").status_code == 400
    assert client.get(f"{P}/studies/1.2.826.0.1.3680043.10.999.78/images", "doctor").status_code == 404
    assert client.get(f"{P}/images/{sop}/url", "technician").status_code == 403
    capped = image_url(client, sop, ttl_seconds="86400")  # capped by ImageUrlMaxTtlSeconds
    expires = jwt.decode(target_of(capped["url"]).split(f"{TOKEN}=")[1], options={"verify_signature": False})["exp"]
    assert expires <= time.time() + 600


# --- the battery: every other use of a signed URL's token is refused, each status exact -----------------------------

@dataclass(frozen=True)
class Shape:
    name: str
    target: str  # {sop} {other} {b_sop} {study} {series} {oid} {t} (the token) {viewer} {user}
    orthanc: int  # the status on Orthanc's port
    api: int  # ... on the API port (which serves /api/v1/dicom only: 404 elsewhere)
    method: str = "GET"
    body: bytes | None = None
    bearer: str | None = None  # the token sent as a bearer header instead


SIGNED = "/api/v1/dicom/images/{sop}/rendered?format=png&image_token={t}"
SHAPES = [
    Shape("the image itself", SIGNED, 200, 200),
    Shape("a frame of it", SIGNED + "&frame=1", 200, 200),
    Shape("another instance of the study", "/api/v1/dicom/images/{other}/rendered?format=png&image_token={t}",
          403, 403),
    Shape("another patient's instance", "/api/v1/dicom/images/{b_sop}/rendered?format=png&image_token={t}", 403, 403),
    Shape("another format", "/api/v1/dicom/images/{sop}/rendered?format=jpeg&image_token={t}", 403, 403),
    Shape("no format", "/api/v1/dicom/images/{sop}/rendered?image_token={t}", 403, 403),
    Shape("window and level", SIGNED + "&window=400&level=40", 403, 403),
    Shape("a case variant", SIGNED + "&FORMAT=jpeg", 403, 403),
    Shape("a frame that is no number", SIGNED + "&frame=0", 403, 403),
    Shape("a frame past the last", SIGNED + "&frame=2", 404, 404),
    Shape("a trailing slash", "/api/v1/dicom/images/{sop}/rendered/?format=png&image_token={t}", 403, 404),
    Shape("the render route", "/api/v1/dicom/render/{sop}?format=png&image_token={t}", 403, 403),
    Shape("minting more URLs", "/api/v1/dicom/images/{sop}/url?image_token={t}", 403, 403),
    Shape("the study's images", "/api/v1/dicom/studies/{study}/images?image_token={t}", 403, 403),
    Shape("the study's DICOM files", "/api/v1/dicom/download/{study}?image_token={t}", 403, 403),
    Shape("the study's tags", "/api/v1/dicom/tags/{study}?image_token={t}", 403, 403),
    Shape("a viewer token", "/api/v1/dicom/viewer-url/{study}?image_token={t}", 403, 403),
    Shape("an unknown route", "/api/v1/dicom/nothing?image_token={t}", 403, 404),
    Shape("DICOMweb", "/dicom-web/studies/{study}/series/{series}/instances/{sop}/rendered?image_token={t}", 403, 404),
    Shape("DICOMweb frames", "/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/1?image_token={t}",
          403, 404),
    Shape("WADO-URI", "/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}&image_token={t}",
          403, 404),
    Shape("the DICOM file", "/instances/{oid}/file?image_token={t}", 403, 404),
    Shape("Orthanc's rendering", "/instances/{oid}/rendered?image_token={t}", 403, 404),
    Shape("the scoped QIDO root", "/ehr-imaging/dicom-web/studies?image_token={t}", 403, 404),
    Shape("the viewer app", "/ohif/viewer?image_token={t}", 403, 404),
    # As a bearer header: no verifier takes it (its audience is its own).
    Shape("bearer on DICOMweb", "/dicom-web/studies/{study}/series/{series}/instances/{sop}/rendered", 403, 404,
          bearer="t"),
    Shape("bearer on the render route", "/api/v1/dicom/render/{sop}", 401, 401, bearer="t"),
    Shape("bearer on the scoped QIDO root", "/ehr-imaging/dicom-web/studies", 401, 404, bearer="t"),
    # Other methods and bodies. Orthanc drops the query string of anything but GET: the route's own answers.
    Shape("POST", SIGNED, 405, 405, method="POST"),
    Shape("PUT", SIGNED, 405, 405, method="PUT"),
    Shape("DELETE", SIGNED, 405, 405, method="DELETE"),
    Shape("POST with a body", SIGNED, 403, 405, method="POST", body=b'{"x":1}'),
    Shape("GET with a body", SIGNED, 403, 403, body=b"hello"),
    # Not the token: another one, or a forged one.
    Shape("no token", "/api/v1/dicom/images/{sop}/rendered?format=png", 401, 401),
    Shape("an empty token", "/api/v1/dicom/images/{sop}/rendered?format=png&image_token=", 403, 401),
    Shape("a viewer token", "/api/v1/dicom/images/{sop}/rendered?format=png&image_token={viewer}", 403, 401),
    Shape("a user token", "/api/v1/dicom/images/{sop}/rendered?format=png&image_token={user}", 403, 401),
    Shape("a tampered token", "/api/v1/dicom/images/{sop}/rendered?format=png&image_token={tampered}", 403, 401),
    Shape("a revoked grant", "/api/v1/dicom/images/{sop}/rendered?format=png&image_token={revoked}", 403, 401),
]


class Battery:
    def __init__(self, client: Client, study: TwoSeriesStudy, other: StoredStudy) -> None:
        self.client = client
        sop = study.sops[0][0]
        made = image_url(client, sop, subject="dr-battery")
        self.token = target_of(made["url"]).split(f"{TOKEN}=")[1]
        self.token_id = made["token_id"]
        revoked = image_url(client, sop, subject="dr-battery")
        answer = client.request("POST", f"{P}/viewer-token/revoke", json={"token_id": revoked["token_id"]},
                                headers={"Authorization": f"Bearer {client.token('doctor', 'dr-battery')}"})
        assert answer.status_code == 200, answer.text
        header, _payload, signature = self.token.split(".")
        forged = jwt.decode(self.token, options={"verify_signature": False}) | {"sop": study.sops[0][1]}
        tampered = ".".join([header, base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode(),
                             signature])
        lookup = client.request("POST", "/tools/lookup", data=sop, auth=client.stack.admin_auth).json()
        self.values = {"sop": sop, "other": study.sops[0][1], "b_sop": other.instances[0], "study": study.uid,
                       "series": study.series[0], "oid": next(m["ID"] for m in lookup if m["Type"] == "Instance"),
                       "t": self.token, "tampered": tampered,
                       "revoked": target_of(revoked["url"]).split(f"{TOKEN}=")[1],
                       "viewer": viewer_token(client, study_uids=[study.uid])["token"],
                       "user": client.token("admin")}

    def send(self, base: str, shape: Shape) -> tuple[int, bytes, dict[str, str]]:
        headers = {"Authorization": f"Bearer {self.token}"} if shape.bearer else {}
        if shape.body is not None:
            headers["Content-Type"] = "application/json"
        return plain_get(base, shape.target.format(**self.values), headers, shape.method, shape.body)


@pytest.fixture(scope="module")
def battery(client: Client, study: TwoSeriesStudy, two_studies: tuple[StoredStudy, StoredStudy]) -> Battery:
    return Battery(client, study, two_studies[1])


@pytest.mark.parametrize("port", ["orthanc", "api"])
@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_a_signed_urls_token_opens_its_image_only(client: Client, battery: Battery, shape: Shape, port: str) -> None:
    base = client.stack.url if port == "orthanc" else client.stack.api_url
    status, body, headers = battery.send(base, shape)
    expected = shape.orthanc if port == "orthanc" else shape.api
    assert status == expected, (status, body[:200])
    if status == 200:
        assert headers["content-type"] == "image/png" and body[:8] == PNG_MAGIC


def test_every_use_is_in_the_access_audit_and_no_token_in_the_log(client: Client, study: TwoSeriesStudy) -> None:
    made = image_url(client, study.sops[1][2], subject="dr-audited")
    token = target_of(made["url"]).split(f"{TOKEN}=")[1]
    sizes = [len(plain_get(base, target_of(made["url"]))[1]) for base in (client.stack.url, client.stack.api_url)]
    other = f"{P}/images/{study.sops[1][0]}/rendered?format=png&{TOKEN}={token}"
    assert [plain_get(base, other)[0] for base in (client.stack.url, client.stack.api_url)] == [403, 403]

    def counted() -> tuple[Any, ...] | None:
        rows = query(client, "SELECT study_instance_uid, subject, request_count, denied_count, bytes"
                     " FROM ehr_imaging.viewer_access_log WHERE token_id = :t", t=made["token_id"])
        return rows[0] if rows and rows[0][2:4] == (2, 2) else None

    row = eventually(counted, timeout=20, what="the signed URL's uses in the viewer access audit", interval=0.5)
    assert row == (study.uid, "dr-audited", 2, 2, sum(sizes))
    log = client.stack.log_file.read_text(errors="replace")
    assert f"refused {P}/images/{study.sops[1][0]}/rendered from" in log  # the refusal is logged, by path
    assert token not in log and token.split(".")[2] not in log
