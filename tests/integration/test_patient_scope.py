"""Patient-scoped tokens on the real stack (README "Patient-scoped tokens"): a patient portal's token and a
care team's token see their patients' records and nothing of another patient's.

The battery is driven by the route table itself (api/routes.py: each row says what its request names), so a
route added tomorrow is tried the day it is added: with a token scoped to patient A, every route is called on
patient B's records and must refuse as its row says (404 as for an unknown record, 403 for another patient
named outright or a route scoped tokens may not use), and lists must hold only A's records.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ehr_imaging.api import patient_scope as scope
from ehr_imaging.api.routes import ROUTES, RouteSpec
from ehr_stack.tokens import mint_dev_token
from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.helpers import accession, error_detail, mrn, put_order, query

pytestmark = pytest.mark.integration

API = "/api/v1/dicom"


@dataclass(frozen=True)
class Patient:
    patient_id: str
    mrn: str
    order_id: str
    study_uid: str
    sop_instance_uid: str
    upload_id: str
    accession: str

    def values(self) -> dict[str, str]:
        return {"study_uid": self.study_uid, "sop_instance_uid": self.sop_instance_uid, "order_id": self.order_id,
                "patient_id": self.patient_id, "accession": self.accession, "upload_id": self.upload_id,
                "job_id": str(uuid.uuid4()), "request_id": str(uuid.uuid4()), "deletion_id": str(uuid.uuid4()),
                "event_id": str(uuid.uuid4())}


def _patient(api: Client, tmp: Any, name: str) -> Patient:
    patient_id, patient_mrn, acc = str(uuid.uuid4()), mrn(), accession()
    order_id = put_order(api, mrn=patient_mrn, accession_number=acc, patient_id=patient_id, modality="CT")
    uid, files = make_study(tmp.mktemp(name), patient_id=patient_mrn, accession=acc, study_date="20261120",
                            instances=1)
    answer = api.request("POST", f"{API}/upload", "technician", data={"order_id": order_id},
                         files={"file": (files[0].name, files[0].read_bytes(), "application/dicom")})
    assert answer.status_code == 200, answer.text
    stored = answer.json()
    assert stored["order_id"] == order_id
    return Patient(patient_id, patient_mrn, order_id, uid, stored["sop_instance_uid"], str(stored["upload_id"]), acc)


@pytest.fixture(scope="module")
def patients(api: Client, tmp_path_factory: pytest.TempPathFactory) -> tuple[Patient, Patient]:
    return _patient(api, tmp_path_factory, "a"), _patient(api, tmp_path_factory, "b")


def bearer(api: Client, role: str, **scoped: Any) -> dict[str, str]:
    token = mint_dev_token(api.stack, role=role, subject=f"scoped-{role}", ttl_seconds=600, **scoped)
    return {"Authorization": f"Bearer {token}"}


def call(api: Client, spec: RouteSpec, headers: dict[str, str], values: dict[str, str]) -> Any:
    path = re.sub(r"{(\w+)}", lambda m: values[m.group(1)], spec.path)
    body = b"{}" if spec.method in ("POST", "PUT") else None
    return api.request(spec.method, path, None, data=body,
                       headers={**headers, **({"Content-Type": "application/json"} if body else {})})


NAMED_BY_ID = (scope.STUDY, scope.ORDER, scope.INSTANCE, scope.UPLOAD)


@pytest.mark.parametrize("spec", [s for s in ROUTES if s.scope in (*NAMED_BY_ID, scope.PATIENT, scope.REFUSED)],
                         ids=lambda s: f"{s.method} {s.path.removeprefix(API)}")
def test_another_patients_record_is_refused_as_the_route_table_says(
        api: Client, patients: tuple[Patient, Patient], spec: RouteSpec) -> None:
    a, b = patients
    answer = call(api, spec, bearer(api, "admin", patients=[a.patient_id]), b.values())  # admin: every group
    if spec.scope in NAMED_BY_ID:
        # As for a record that does not exist: a different answer would confirm that B's record exists.
        assert answer.status_code == 404, (spec.path, answer.status_code, answer.text[:200])
        assert b.patient_id not in answer.text and b.mrn not in answer.text
    else:
        assert answer.status_code == 403, (spec.path, answer.status_code, answer.text[:200])
        assert error_detail(answer) in (f"patient {b.patient_id}: outside this token's patient scope",
                                           "not available to a token scoped to patients")


def test_a_study_of_another_patient_is_not_deleted(api: Client, patients: tuple[Patient, Patient]) -> None:
    a, b = patients
    refused = api.request("DELETE", f"{API}/studies/{b.study_uid}?reason=test", None,
                          headers=bearer(api, "radiologist", patients=[a.patient_id]))
    assert refused.status_code == 404
    assert api.get(f"{API}/studies/{b.study_uid}", "doctor").status_code == 200  # still there


@pytest.mark.parametrize("role", ["patient", "doctor"])
def test_ones_own_records_are_answered(api: Client, patients: tuple[Patient, Patient], role: str) -> None:
    a, _ = patients
    headers = bearer(api, role, patient_id=a.patient_id) if role == "patient" else bearer(
        api, role, patients=[a.patient_id])
    for path in (f"/studies/{a.study_uid}", f"/studies/patient/{a.patient_id}", f"/studies/order/{a.order_id}",
                 f"/orders/{a.order_id}", f"/thumbnail/{a.study_uid}", f"/render/{a.sop_instance_uid}",
                 f"/tags/{a.study_uid}", f"/studies/{a.study_uid}/match", f"/viewer-url/{a.study_uid}",
                 f"/uploads/{a.upload_id}", f"/uploads/patient/{a.patient_id}", f"/download/{a.study_uid}"):
        answer = api.request("GET", API + path, None, headers=headers)
        assert answer.status_code == 200, (role, path, answer.text[:200])
    summary = api.request("POST", f"{API}/clinical-summary/{a.study_uid}", None, headers=headers)
    assert summary.status_code == 200, summary.text


@pytest.mark.parametrize("path", ["/studies", "/orders", "/uploads", "/studies/accession/{acc}"])
def test_lists_hold_only_the_tokens_patients(api: Client, patients: tuple[Patient, Patient], path: str) -> None:
    a, b = patients
    scoped = bearer(api, "admin", patients=[a.patient_id])
    listed = api.request("GET", API + path.format(acc=a.accession) + "?limit=500", None, headers=scoped)
    assert listed.status_code == 200, listed.text
    text = listed.text
    assert a.study_uid in text or a.order_id in text
    assert b.study_uid not in text and b.order_id not in text and b.mrn not in text
    other = api.request("GET", API + path.format(acc=b.accession) + "?limit=500", None, headers=scoped)
    assert b.study_uid not in other.text and b.order_id not in other.text  # even asked for by B's accession
    unscoped = api.request("GET", API + path.format(acc=b.accession) + "?limit=500", "admin")
    assert b.study_uid in unscoped.text or b.order_id in unscoped.text  # the record is there for others


def test_viewer_tokens_open_only_the_tokens_patients_studies(
        api: Client, client: Client, patients: tuple[Patient, Patient]) -> None:
    a, b = patients
    patient = bearer(api, "patient", patient_id=a.patient_id)
    mint = f"{API}/viewer-token"
    own = api.request("POST", mint, None, json={"study_uids": [a.study_uid]}, headers=patient)
    assert own.status_code == 200 and own.json()["study_uids"] == [a.study_uid], own.text
    for body, status in (({"study_uids": [a.study_uid, b.study_uid]}, 404), ({"order_id": b.order_id}, 404),
                         ({"patient_id": b.patient_id}, 403)):
        refused = api.request("POST", mint, None, json=body, headers=patient)
        assert refused.status_code == status, (body, refused.text)
    by_patient = api.request("POST", mint, None, json={"patient_id": a.patient_id}, headers=patient)
    assert by_patient.status_code == 200 and by_patient.json()["study_uids"] == [a.study_uid]
    # The minted token opens A's study in DICOMweb (Orthanc's port) and nothing of B's.
    viewer = {"Authorization": f"Bearer {own.json()['token']}"}
    assert client.request("GET", f"/dicom-web/studies/{a.study_uid}/series", None, headers=viewer).status_code == 200
    assert client.request("GET", f"/dicom-web/studies/{b.study_uid}/series", None,
                          headers=viewer).status_code == 403


def test_a_patient_token_must_name_its_patient_and_a_scope_claim_must_be_a_list(api: Client) -> None:
    from ehr_imaging.core.auth import mint_token

    stack = api.stack
    def token(extra: dict[str, Any], role: str = "patient") -> dict[str, str]:
        minted = mint_token(secret=stack.secrets.jwt_secret, issuer=stack.settings_value("JwtIssuer"),
                            audience=stack.settings_value("JwtAudience"), subject="p", roles=[role],
                            ttl_seconds=60, extra=extra)
        return {"Authorization": f"Bearer {minted}"}

    for headers, detail in ((token({}), "a patient token must carry its patient_id"),
                            (token({"patients": "p-1"}, "doctor"), "patients: must be a list of EHR patient ids"),
                            (token({"patients": [""]}, "doctor"), "patients: must be a list of EHR patient ids")):
        answer = api.request("GET", f"{API}/studies", None, headers=headers)
        assert answer.status_code == 401 and answer.json()["detail"] == detail, answer.text


def test_a_patient_sees_nothing_of_the_operations_side(api: Client, patients: tuple[Patient, Patient]) -> None:
    a, _ = patients
    patient = bearer(api, "patient", patient_id=a.patient_id)
    for method, path in (("GET", "/unmatched"), ("POST", "/upload"), ("PUT", f"/orders/{a.order_id}"),
                         ("DELETE", f"/studies/{a.study_uid}")):
        answer = api.request(method, API + path, None, headers=patient, data=b"{}" if method != "GET" else None)
        assert answer.status_code == 403, (method, path, answer.text)  # not the patient role's to call
    stats = api.request("GET", f"{API}/stats", None, headers=patient)
    assert stats.status_code == 403 and stats.json()["detail"] == "not available to a token scoped to patients"
    assert query(api, "SELECT count(*) FROM ehr_imaging.study_links WHERE study_instance_uid = :u",
                 u=a.study_uid) == [(1,)]


def test_a_study_linked_to_another_patients_order_is_that_patients_whatever_its_patient_id(
        api: Client, patients: tuple[Patient, Patient], tmp_path: Path) -> None:
    """PatientID = A's MRN, linked by a person (force) to B's order: B's study, never A's."""
    a, b = patients
    b_order = put_order(api, mrn=b.mrn, accession_number=accession(), patient_id=b.patient_id, modality="CT")
    uid, files = make_study(tmp_path, patient_id=a.mrn, accession=None, study_date="20261121", instances=1)
    assert api.request("POST", f"{API}/upload", "technician",
                       files={"file": (files[0].name, files[0].read_bytes(), "application/dicom")}).status_code == 200
    linked = api.request("POST", f"{API}/studies/{uid}/link", "radiologist",
                         json={"order_id": b_order, "force": True})
    assert linked.status_code == 200, linked.text
    as_a = bearer(api, "patient", patient_id=a.patient_id)
    as_b = bearer(api, "patient", patient_id=b.patient_id)
    assert api.request("GET", f"{API}/studies/{uid}", None, headers=as_a).status_code == 404
    assert uid not in api.request("GET", f"{API}/studies?limit=500", None, headers=as_a).text
    assert uid not in api.request("GET", f"{API}/studies/patient/{a.patient_id}", None, headers=as_a).text
    assert api.request("GET", f"{API}/studies/{uid}", None, headers=as_b).status_code == 200
    match = api.request("GET", f"{API}/studies/{uid}/match", None, headers=as_b).json()
    assert match["candidate_order_ids"] == [] and match["quarantined_orthanc_study_ids"] == []  # not scoped callers'
