"""IHE Invoke Image Display on the real stack (README "IHE Invoke Image Display"): the EHR's link answers 302 to
OHIF with a viewer token that opens exactly the selected studies in DICOMweb, and a readable page otherwise.

One patient with three studies (CT in January, MR in March, CT in June) and another patient's CT; every request is
made through both ports where the port matters (the Orthanc port's filter must let the path through; the API port
serves it too).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from ehr_stack.tokens import mint_dev_token
from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.helpers import accession, mrn, put_order

pytestmark = pytest.mark.integration

IID = "/IHEInvokeImageDisplay"


@dataclass(frozen=True)
class Study:
    uid: str
    accession: str


@dataclass(frozen=True)
class World:
    patient_id: str
    mrn: str
    january_ct: Study
    march_mr: Study
    june_ct: Study
    other_patient_id: str
    other: Study


def _study(api: Client, tmp: pytest.TempPathFactory, patient_id: str, patient_mrn: str, study_date: str,
           modality: str) -> Study:
    acc = accession()
    order_id = put_order(api, mrn=patient_mrn, accession_number=acc, patient_id=patient_id, modality=modality)
    uid, files = make_study(tmp.mktemp("iid"), patient_id=patient_mrn, accession=acc, study_date=study_date,
                            modality=modality, instances=1)
    answer = api.request("POST", "/api/v1/dicom/upload", "technician", data={"order_id": order_id},
                         files={"file": (files[0].name, files[0].read_bytes(), "application/dicom")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["order_id"] == order_id
    return Study(uid, acc)


@pytest.fixture(scope="module")
def world(api: Client, tmp_path_factory: pytest.TempPathFactory) -> World:
    pid, patient_mrn, other_pid, other_mrn = str(uuid.uuid4()), mrn(), str(uuid.uuid4()), mrn()
    return World(pid, patient_mrn,
                 _study(api, tmp_path_factory, pid, patient_mrn, "20260110", "CT"),
                 _study(api, tmp_path_factory, pid, patient_mrn, "20260305", "MR"),
                 _study(api, tmp_path_factory, pid, patient_mrn, "20260601", "CT"),
                 other_pid, _study(api, tmp_path_factory, other_pid, other_mrn, "20260601", "CT"))


def invoke(client: Client, params: dict[str, str], role: str | None = "doctor",
           headers: dict[str, str] | None = None) -> requests.Response:
    return client.request("GET", IID, role, params=params, headers=headers or {}, allow_redirects=False)


def opened(client: Client, answer: requests.Response) -> tuple[list[str], str]:
    """The studies and the viewer token of a 302 to OHIF."""
    assert answer.status_code == 302, (answer.status_code, answer.text[:300])
    location = answer.headers["Location"]
    split = urlsplit(location)
    assert f"{split.scheme}://{split.netloc}" == client.stack.url and split.path == "/ohif/viewer", location
    query = parse_qs(split.query)
    assert answer.headers["Referrer-Policy"] == "no-referrer" and answer.headers["Cache-Control"] == "no-store"
    return query["StudyInstanceUIDs"][0].split(","), query["token"][0]


def dicomweb(client: Client, token: str, study_uid: str) -> int:
    return requests.get(f"{client.stack.url}/dicom-web/studies/{study_uid}/series", timeout=30,
                        headers={"Authorization": f"Bearer {token}"}).status_code


def everyone(world: World) -> list[Study]:
    return [world.january_ct, world.march_mr, world.june_ct, world.other]


@pytest.mark.parametrize("port", ["client", "api"])
def test_study_uid_list_opens_exactly_those_studies(request: pytest.FixtureRequest, world: World, port: str) -> None:
    client: Client = request.getfixturevalue(port)
    wanted = [world.june_ct, world.january_ct]
    uids, token = opened(client, invoke(client, {"requestType": "STUDY",
                                                 "studyUID": ",".join(s.uid for s in wanted)}))
    assert uids == [s.uid for s in wanted]
    for study in everyone(world):
        assert dicomweb(client, token, study.uid) == (200 if study in wanted else 403), study


def test_accession_number_list(client: Client, world: World) -> None:
    uids, token = opened(client, invoke(client, {"requestType": "STUDY", "accessionNumber":
                                                 f"{world.march_mr.accession},{world.january_ct.accession}"}))
    assert uids == [world.march_mr.uid, world.january_ct.uid]
    assert dicomweb(client, token, world.march_mr.uid) == 200 and dicomweb(client, token, world.june_ct.uid) == 403


def test_the_location_opens_ohif(client: Client, world: World) -> None:
    answer = invoke(client, {"requestType": "STUDY", "studyUID": world.march_mr.uid})
    viewer = requests.get(answer.headers["Location"], timeout=30)
    assert viewer.status_code == 200 and viewer.headers["Content-Type"].startswith("text/html"), viewer.text[:200]


@pytest.mark.parametrize(("extra", "expected"), [
    ({}, ["june_ct", "march_mr", "january_ct"]),  # newest first
    ({"lowerDateTime": "2026-03-01T00:00:00"}, ["june_ct", "march_mr"]),
    ({"upperDateTime": "20260305235959"}, ["march_mr", "january_ct"]),  # DICOM DT is accepted too
    ({"lowerDateTime": "2026-02-01", "upperDateTime": "2026-05-31T23:59:59Z"}, ["march_mr"]),
    ({"mostRecentResults": "2"}, ["june_ct", "march_mr"]),
    ({"modalitiesInStudy": "MR"}, ["march_mr"]),
    ({"modalitiesInStudy": "CT", "mostRecentResults": "1"}, ["june_ct"]),
])
def test_patient_requests(client: Client, world: World, extra: dict[str, str], expected: list[str]) -> None:
    # The HL7 CX form with an assigning authority, as the profile writes it; the ID component selects the patient.
    uids, token = opened(client, invoke(client, {"requestType": "PATIENT",
                                                 "patientID": f"{world.patient_id}^^^&1.2.3.4&ISO", **extra}))
    assert uids == [getattr(world, name).uid for name in expected]
    assert dicomweb(client, token, world.other.uid) == 403
    assert all(dicomweb(client, token, uid) == 200 for uid in uids)


def test_patient_by_the_mrn_the_studies_carry(client: Client, world: World) -> None:
    uids, _ = opened(client, invoke(client, {"requestType": "PATIENT", "patientID": world.mrn,
                                             "mostRecentResults": "1"}))
    assert uids == [world.june_ct.uid]


def readable(answer: requests.Response, status: int, says: str) -> None:
    assert answer.status_code == status, (answer.status_code, answer.text[:300])
    assert answer.headers["Content-Type"].startswith("text/html"), answer.headers["Content-Type"]
    assert says in answer.text and "<h1>" in answer.text and "Location" not in answer.headers


@pytest.mark.parametrize("port", ["client", "api"])
def test_errors_are_readable_pages(request: pytest.FixtureRequest, world: World, port: str) -> None:
    client: Client = request.getfixturevalue(port)
    readable(invoke(client, {"requestType": "STUDY", "studyUID": "1.2.826.0.1.3680043.8.498.424242"}), 404,
             "No matching images")
    readable(invoke(client, {"requestType": "PATIENT", "patientID": str(uuid.uuid4())}), 404, "no study matches")
    readable(invoke(client, {"requestType": "PATIENT", "patientID": world.patient_id,
                             "lowerDateTime": "2027-01-01"}), 404, "no study matches")
    readable(invoke(client, {"requestType": "STUDY", "studyUID": world.june_ct.uid,
                             "accessionNumber": world.june_ct.accession}), 400, "never both")
    readable(invoke(client, {"requestType": "SERIES", "studyUID": world.june_ct.uid}), 400, "not supported")
    readable(invoke(client, {"requestType": "PATIENT"}), 400, "needs patientID")
    readable(invoke(client, {}), 400, "requestType is required")


@pytest.mark.parametrize("port", ["client", "api"])
def test_credentials(request: pytest.FixtureRequest, world: World, port: str) -> None:
    client: Client = request.getfixturevalue(port)
    params = {"requestType": "STUDY", "studyUID": world.june_ct.uid}
    refused = invoke(client, params, None)
    assert refused.status_code == 401 and "Location" not in refused.headers
    assert invoke(client, params, "technician").status_code == 403  # not a viewing role
    short = mint_dev_token(client.stack, role="nurse", subject="iid-nurse", ttl_seconds=120)
    uids, _ = opened(client, invoke(client, {**params, "token": short}, None))  # a browser, no header
    assert uids == [world.june_ct.uid]
    long = mint_dev_token(client.stack, role="nurse", subject="iid-nurse", ttl_seconds=3600)
    too_long = invoke(client, {**params, "token": long}, None)
    assert too_long.status_code == 401 and "at most 300 s" in too_long.json()["detail"]
    assert invoke(client, {**params, "token": short + "x"}, None).status_code == 401


def test_the_token_in_the_url_stays_out_of_the_log(client: Client, world: World) -> None:
    short = mint_dev_token(client.stack, role="nurse", subject="iid-log", ttl_seconds=120)
    invoke(client, {"requestType": "STUDY", "studyUID": world.june_ct.uid, "token": short}, None)
    invoke(client, {"requestType": "STUDY", "studyUID": world.june_ct.uid, "token": short + "x"}, None)
    log = client.stack.log_file.read_text(errors="replace")
    assert "ehr-imaging" in log  # the plugin's log, where a refusal or an error would be written
    assert short not in log and short.split(".")[2] not in log  # nor the token's signature alone


def test_a_patient_scoped_token_gets_only_its_patients_studies(client: Client, world: World) -> None:
    def scoped(role: str) -> dict[str, str]:
        kwargs: dict[str, Any] = ({"patient_id": world.patient_id} if role == "patient"
                                  else {"patients": [world.patient_id]})
        token = mint_dev_token(client.stack, role=role, subject=f"iid-{role}", ttl_seconds=600, **kwargs)
        return {"Authorization": f"Bearer {token}"}

    for role in ("patient", "doctor"):
        headers = scoped(role)
        both = invoke(client, {"requestType": "STUDY", "studyUID": f"{world.other.uid},{world.march_mr.uid}"},
                      None, headers)
        uids, token = opened(client, both)
        assert uids == [world.march_mr.uid]  # the other patient's study is narrowed away, as if unknown
        assert dicomweb(client, token, world.other.uid) == 403
        readable(invoke(client, {"requestType": "STUDY", "studyUID": world.other.uid}, None, headers), 404,
                 "no study matches")
        readable(invoke(client, {"requestType": "STUDY", "accessionNumber": world.other.accession}, None, headers),
                 404, "no study matches")
        readable(invoke(client, {"requestType": "PATIENT", "patientID": world.other_patient_id}, None, headers),
                 404, "no study matches")
        uids, _ = opened(client, invoke(client, {"requestType": "PATIENT", "patientID": world.patient_id}, None,
                                        headers))
        assert uids == [world.june_ct.uid, world.march_mr.uid, world.january_ct.uid]
