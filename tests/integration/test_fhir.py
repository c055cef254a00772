"""FHIR R4 on the real stack (README "Integrating an EHR", FHIR): an order pushed as a ServiceRequest, its study
uploaded, then found as an ImagingStudy by patient, accession, Study Instance UID and order, and read by id; the
roles, patient scope and OperationOutcome errors. Every answer is parsed with the ``fhir.resources`` R4 models."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.bundle import Bundle
from fhir.resources.imagingstudy import ImagingStudy
from fhir.resources.servicerequest import ServiceRequest

from ehr_stack.tokens import mint_dev_token
from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.helpers import FHIR_JSON, accession, mrn, order, outcome, wait_for_ingest
from tests.openapi_validation import fits

pytestmark = pytest.mark.integration

API = "/api/v1/dicom"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def service_request(patient_id: str, patient_mrn: str, acc: str, **overrides: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": acc}],
        "subject": {"reference": f"Patient/{patient_id}", "identifier": {"value": patient_mrn},
                    "display": "Fhirperson^Grace"},
        "code": {"coding": [{"system": DCM, "code": "CT"}], "text": "CT chest"},
        "occurrenceDateTime": "2026-11-20T09:30:00+01:00",
        "requester": {"display": "HOUSE^Gregory"}, "performer": [{"identifier": {"value": "CT_ROOM_1"}}],
    }
    resource.update(overrides)
    return resource


def put(client: Client, order_id: str, resource: Any, role: str = "ehr-service",
        content_type: str = FHIR_JSON) -> Any:
    return client.request("PUT", f"/fhir/ServiceRequest/{order_id}", role, data=json.dumps(resource),
                          headers={"Content-Type": content_type})


def bundle(answer: Any) -> Bundle:
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith(FHIR_JSON)
    parsed = Bundle.parse_obj(answer.json())
    assert parsed.type == "searchset"
    for entry in parsed.entry or []:
        ImagingStudy.parse_obj(entry.resource.dict())
    return parsed


def ids(found: Bundle) -> list[str]:
    return [str(entry.resource.id) for entry in found.entry or []]


@pytest.fixture(scope="module")
def linked(api: Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An order pushed as a ServiceRequest, and a study of two CT instances uploaded against it."""
    patient_id, patient_mrn, acc, order_id = str(uuid.uuid4()), mrn(), accession(), str(uuid.uuid4())
    created = put(api, order_id, service_request(patient_id, patient_mrn, acc))
    assert created.status_code == 201, created.text
    uid, files = make_study(tmp_path_factory.mktemp("fhir"), patient_id=patient_mrn, accession=acc,
                            study_date="20261120", instances=2)
    for path in files:
        answer = api.request("POST", f"{API}/upload", "technician", data={"order_id": order_id},
                             files={"file": (path.name, path.read_bytes(), "application/dicom")})
        assert answer.status_code == 200 and answer.json()["order_id"] == order_id, answer.text
    return {"patient_id": patient_id, "mrn": patient_mrn, "accession": acc, "order_id": order_id, "study_uid": uid}


def test_a_service_request_becomes_the_same_order_as_put_orders(api: Client, linked: dict[str, str]) -> None:
    stored = order(api, linked["order_id"])
    assert {k: stored[k] for k in ("accession_number", "mrn", "patient_id", "patient_family_name",
                                   "patient_given_name", "modality", "description", "referring_physician",
                                   "station_aet")} == {
        "accession_number": linked["accession"], "mrn": linked["mrn"], "patient_id": linked["patient_id"],
        "patient_family_name": "Fhirperson", "patient_given_name": "Grace", "modality": "CT",
        "description": "CT chest", "referring_physician": "HOUSE^Gregory", "station_aet": "CT_ROOM_1"}
    assert stored["scheduled_start"].startswith("2026-11-20T08:30:00")  # stored as UTC


def test_imaging_study_search_by_patient_and_its_content(api: Client, client: Client,
                                                         linked: dict[str, str]) -> None:
    found = bundle(api.get("/fhir/ImagingStudy", "doctor", params={"patient": f"Patient/{linked['patient_id']}"}))
    assert found.total == 1 and ids(found) == [linked["study_uid"]]
    study = found.entry[0].resource
    assert study.status == "available"
    assert study.subject.reference == f"Patient/{linked['patient_id']}"
    assert [b.reference for b in study.basedOn] == [f"ServiceRequest/{linked['order_id']}"]
    assert [(c.system, c.code) for c in study.modality] == [(DCM, "CT")]
    assert study.numberOfSeries == 1 and study.numberOfInstances == 2
    identifiers = {(i.system, i.type.coding[0].code if i.type else None): i.value for i in study.identifier}
    assert identifiers == {("urn:dicom:uid", None): f"urn:oid:{linked['study_uid']}",
                           (None, "ACSN"): linked["accession"]}
    [series] = study.series
    assert series.modality.code == "CT" and series.numberOfInstances == 2
    assert [i.number for i in series.instance] == [1, 2]
    assert {(i.sopClass.system, i.sopClass.code) for i in series.instance} == {
        ("urn:ietf:rfc:3986", f"urn:oid:{CT_IMAGE_STORAGE}")}
    [endpoint] = study.contained
    assert [e.reference for e in study.endpoint] == [f"#{endpoint.id}"]
    assert endpoint.connectionType.code == "dicom-wado-rs"
    assert endpoint.address == f"{client.stack.url}/dicom-web"
    assert str(study.started).startswith("2026-11-20")
    assert found.entry[0].fullUrl == f"{client.stack.url}/fhir/ImagingStudy/{linked['study_uid']}"


def test_search_by_accession_study_uid_and_order(api: Client, linked: dict[str, str]) -> None:
    uid = linked["study_uid"]
    for params in ({"identifier": linked["accession"]}, {"identifier": f"{V2_0203}|{linked['accession']}"},
                   {"identifier": linked["accession"], "_format": FHIR_JSON},
                   {"identifier": f"urn:dicom:uid|urn:oid:{uid}"}, {"identifier": f"urn:oid:{uid}"},
                   {"basedOn": f"ServiceRequest/{linked['order_id']}"},
                   {"patient": linked["patient_id"], "basedOn": f"ServiceRequest/{linked['order_id']}"}):
        found = bundle(api.get("/fhir/ImagingStudy", "nurse", params=params))
        assert ids(found) == [uid] and found.total == 1, params
    for params in ({"identifier": "NO-SUCH-ACC"}, {"identifier": "urn:oid:1.2.826.0.1.3680043.10.999.7"},
                   {"basedOn": "ServiceRequest/no-such-order"},
                   {"patient": str(uuid.uuid4()), "identifier": linked["accession"]}):
        found = bundle(api.get("/fhir/ImagingStudy", "nurse", params=params))
        assert found.total == 0 and ids(found) == [], params


def test_read_by_id_is_the_study_found_and_404_is_an_operation_outcome(api: Client, client: Client,
                                                                       linked: dict[str, str]) -> None:
    for port in (api, client):  # both ports route /fhir
        answer = port.get(f"/fhir/ImagingStudy/{linked['study_uid']}", "radiologist")
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"].startswith(FHIR_JSON)
        study = ImagingStudy.parse_obj(answer.json())
        assert study.id == linked["study_uid"] and study.numberOfInstances == 2
        missing = port.get("/fhir/ImagingStudy/1.2.826.0.1.3680043.10.999.8", "doctor")
        assert missing.status_code == 404
        assert outcome(missing) == ("not-found", "study 1.2.826.0.1.3680043.10.999.8 not found")
        unknown = port.get("/fhir/Patient/x", "doctor")
        assert unknown.status_code == 404 and outcome(unknown) == ("not-found", "no route /fhir/Patient/x")


def test_bad_search_parameters_are_400(api: Client) -> None:
    for params, detail in (({"subject": "Patient/x"}, "subject: unsupported search parameter"),
                           ({"basedOn": "Patient/x"}, "must reference a ServiceRequest"),
                           ({"identifier": "http://example.org|x"}, "identifier: unknown system"),
                           ({"_count": "1000"}, "_count: must be between 1 and 100"),
                           ({"patient": "a,b"}, "Patient: one value only"), ({"_format": "xml"}, "_format: only JSON")):
        answer = api.get("/fhir/ImagingStudy", "doctor", params=params)
        assert answer.status_code == 400, answer.text
        code, diagnostics = outcome(answer)
        assert code == "structure" and diagnostics.startswith(detail), diagnostics


def test_roles_and_credentials_answer_operation_outcomes(api: Client, client: Client,
                                                         linked: dict[str, str]) -> None:
    refused = api.get("/fhir/ImagingStudy", "technician", params={"patient": linked["patient_id"]})
    assert refused.status_code == 403
    assert outcome(refused) == ("forbidden", "role not allowed for GET /fhir/ImagingStudy")
    for port in (api, client):
        anonymous = port.get(f"/fhir/ImagingStudy/{linked['study_uid']}")
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"
        assert outcome(anonymous) == ("login", "authentication required")
    doctor = put(api, linked["order_id"], service_request(linked["patient_id"], linked["mrn"], linked["accession"]),
                 role="doctor")
    assert doctor.status_code == 403
    assert outcome(doctor) == ("forbidden", "role not allowed for PUT /fhir/ServiceRequest/{order_id}")


def test_a_patient_scoped_token_sees_only_its_patients_studies(api: Client, linked: dict[str, str]) -> None:
    def scoped(patient: str) -> dict[str, str]:
        token = mint_dev_token(api.stack, role="doctor", subject="fhir-scoped", ttl_seconds=600, patients=[patient])
        return {"Authorization": f"Bearer {token}"}

    own, other = scoped(linked["patient_id"]), scoped(str(uuid.uuid4()))
    by_order = {"basedOn": f"ServiceRequest/{linked['order_id']}"}
    assert ids(bundle(api.get("/fhir/ImagingStudy", None, params=by_order, headers=own))) == [linked["study_uid"]]
    for params in (by_order, {"identifier": linked["accession"]}, {}):
        found = bundle(api.get("/fhir/ImagingStudy", None, params=params, headers=other))
        assert found.total == 0 and ids(found) == [], params
    read = api.get(f"/fhir/ImagingStudy/{linked['study_uid']}", None, headers=other)
    assert read.status_code == 404 and outcome(read)[0] == "not-found"
    assert linked["patient_id"] not in read.text and linked["mrn"] not in read.text
    assert api.get(f"/fhir/ImagingStudy/{linked['study_uid']}", None, headers=own).status_code == 200


def test_put_service_request_creates_then_updates_and_answers_it_as_stored(api: Client) -> None:
    patient_id, patient_mrn, acc, order_id = str(uuid.uuid4()), mrn(), accession(), str(uuid.uuid4())
    created = put(api, order_id, service_request(patient_id, patient_mrn, acc, id=order_id))
    assert created.status_code == 201, created.text
    answered = ServiceRequest.parse_obj(created.json())
    assert answered.id == order_id and answered.status == "active" and answered.intent == "order"
    assert answered.identifier[0].value == acc and answered.subject.reference == f"Patient/{patient_id}"
    assert answered.code.coding[0].code == "CT"
    changed = service_request(patient_id, patient_mrn, acc, status="revoked",
                              code={"coding": [{"system": DCM, "code": "MR"}], "text": "MR knee"})
    del changed["subject"]["display"]  # not carried: the stored names are kept
    updated = put(api, order_id, changed, content_type="application/json")
    assert updated.status_code == 200, updated.text
    answered = ServiceRequest.parse_obj(updated.json())
    assert answered.status == "revoked" and answered.code.coding[0].code == "MR"
    stored = order(api, order_id)
    assert (stored["status"], stored["modality"], stored["description"], stored["patient_family_name"]) == (
        "cancelled", "MR", "MR knee", "Fhirperson")


def test_put_service_request_validation_errors(api: Client) -> None:
    patient_id, patient_mrn, acc, order_id = str(uuid.uuid4()), mrn(), accession(), str(uuid.uuid4())
    good = service_request(patient_id, patient_mrn, acc)
    cases = (
        ({**good, "resourceType": "Patient"}, "resourceType: must be ServiceRequest", "resourceType"),
        ({**good, "code": {"coding": [{"system": "http://loinc.org", "code": "x"}]}},
         f"ServiceRequest.code: needs a coding of system {DCM} (the modality, e.g. CT)", "ServiceRequest.code"),
        ({**good, "code": {"coding": [{"system": DCM, "code": "XX"}]}},
         "ServiceRequest.code (modality: unknown DICOM modality 'XX')", "ServiceRequest.code"),
        ({**good, "subject": {"reference": f"Patient/{patient_id}"}},
         "ServiceRequest.subject.identifier (mrn: is required)", "ServiceRequest.subject.identifier"),
        ({**good, "identifier": []}, f"ServiceRequest.identifier: needs the accession number (type ACSN of {V2_0203})",
         "ServiceRequest.identifier"),
        ({**good, "occurrenceDateTime": "tomorrow"},
         "ServiceRequest.occurrenceDateTime (scheduled_start: is not an ISO 8601 date-time)",
         "ServiceRequest.occurrenceDateTime"),
        ({**good, "id": "another"}, "ServiceRequest.id: differs from the id in the path", "ServiceRequest.id"),
    )
    for resource, detail, expression in cases:
        answer = put(api, order_id, resource)
        assert answer.status_code == 422, (detail, answer.text)
        assert outcome(answer) == ("invalid", detail)
        assert answer.json()["issue"][0]["expression"] == [expression]
    not_json = api.request("PUT", f"/fhir/ServiceRequest/{order_id}", "ehr-service", data=b"{",
                           headers={"Content-Type": FHIR_JSON})
    assert not_json.status_code == 400 and outcome(not_json)[0] == "structure"
    as_text = put(api, order_id, good, content_type="text/plain")
    assert as_text.status_code == 415 and outcome(as_text)[0] == "not-supported"
    assert api.get(f"{API}/orders/{order_id}", "ehr-service").status_code == 404  # nothing was stored


def test_answers_fit_the_openapi_document(client: Client, linked: dict[str, str]) -> None:
    doc = client.get(f"{API}/openapi.json", "ehr-service").json()
    uid, search, read = linked["study_uid"], "/fhir/ImagingStudy", "/fhir/ImagingStudy/{study_uid}"
    fits(doc, "GET", search, client.get(search, "doctor", params={"identifier": f"urn:oid:{uid}"}))
    fits(doc, "GET", search, client.get(search, "doctor", params={"identifier": "NO-SUCH-ACC"}))
    fits(doc, "GET", read, client.get(f"/fhir/ImagingStudy/{uid}", "doctor"))
    fits(doc, "GET", read, client.get("/fhir/ImagingStudy/1.2.826.0.1.3680043.10.999.9", "doctor"), 404)
    fits(doc, "GET", search, client.get(search, "doctor", params={"subject": "x"}), 400)
    order_id, path = str(uuid.uuid4()), "/fhir/ServiceRequest/{order_id}"
    resource = service_request(str(uuid.uuid4()), mrn(), accession())
    fits(doc, "PUT", path, put(client, order_id, resource), 201)  # Orthanc's port takes the body as well
    fits(doc, "PUT", path, put(client, order_id, resource))
    fits(doc, "PUT", path, put(client, order_id, {**resource, "status": "?"}), 422)
    fits(doc, "PUT", path, put(client, order_id, resource, role="nurse"), 403)


def test_pages_of_a_patients_studies(api: Client, linked: dict[str, str], tmp_path: Path) -> None:
    """A second study with the patient's MRN and no order (unmatched: theirs by MRN, as GET /studies/patient)."""
    uid, files = make_study(tmp_path, patient_id=linked["mrn"], accession=None, study_date="20261001", instances=1)
    answer = api.request("POST", f"{API}/upload", "technician",
                         files={"file": (files[0].name, files[0].read_bytes(), "application/dicom")})
    assert answer.status_code == 200 and answer.json()["order_id"] is None, answer.text
    wait_for_ingest(api, uid, 1)
    patient = {"patient": f"Patient/{linked['patient_id']}"}
    first = bundle(api.get("/fhir/ImagingStudy", "doctor", params={**patient, "_count": "1"}))
    second = bundle(api.get("/fhir/ImagingStudy", "doctor", params={**patient, "_count": "1", "_offset": "1"}))
    assert (first.total, second.total) == (2, 2)
    assert ids(first) + ids(second) == [linked["study_uid"], uid]  # newest first
    unlinked = second.entry[0].resource
    assert unlinked.basedOn is None and unlinked.subject.reference is None
    assert unlinked.subject.identifier.value == linked["mrn"]
