"""The FHIR R4 mapping (core/fhir.py, core/fhir_orders.py): study facts -> ImagingStudy and Bundle, errors ->
OperationOutcome, ServiceRequest <-> order payload, search tokens; each resource produced is parsed with the
``fhir.resources`` R4 models."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.bundle import Bundle
from fhir.resources.imagingstudy import ImagingStudy
from fhir.resources.operationoutcome import OperationOutcome
from fhir.resources.servicerequest import ServiceRequest

from ehr_imaging.core import fhir
from ehr_imaging.core.fhir_orders import FhirFieldError, order_payload, service_request
from ehr_imaging.core.orders import parse_order

CT = "1.2.840.10008.5.1.4.1.1.2"
SR = "1.2.840.10008.5.1.4.1.1.88.11"
CHICAGO = ZoneInfo("America/Chicago")


def facts(**overrides: Any) -> fhir.StudyFacts:
    values: dict[str, Any] = {
        "study_instance_uid": "1.2.3.4", "patient_id": "MRN1", "patient_name": "DOE^JANE", "ehr_patient_id": "p-1",
        "order_id": "o-1", "accession_number": "ACC1", "description": "CT head", "study_date": date(2026, 11, 20),
        "study_time": time(9, 30, 5, 120000),
        "series": (fhir.SeriesFacts("1.2.3.4.1", 1, "CT", "axial", (fhir.InstanceFacts("1.2.3.4.1.1", CT, 1),
                                                                      fhir.InstanceFacts("1.2.3.4.1.2", CT, 2))),
                   fhir.SeriesFacts("1.2.3.4.2", None, "SR", "", (fhir.InstanceFacts("1.2.3.4.2.1", SR, None),))),
    }
    values.update(overrides)
    return fhir.StudyFacts(**values)


def test_an_imaging_study_has_every_element_the_ehr_reads() -> None:
    resource = fhir.imaging_study(facts(), "https://pacs.example/dicom-web", CHICAGO)
    study = ImagingStudy.parse_obj(resource)
    assert study.id == "1.2.3.4" and study.status == "available"
    assert study.subject.reference == "Patient/p-1" and study.subject.identifier.value == "MRN1"
    assert [b.reference for b in study.basedOn] == ["ServiceRequest/o-1"]
    assert resource["started"] == "2026-11-20T09:30:05-06:00"  # StudyTime is local to the site's Timezone
    assert [(c.system, c.code) for c in study.modality] == [(fhir.DCM, "CT"), (fhir.DCM, "SR")]
    assert (study.numberOfSeries, study.numberOfInstances) == (2, 3)
    assert resource["identifier"] == [
        {"use": "official", "system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4"},
        {"use": "usual", "type": {"coding": [{"system": fhir.V2_0203, "code": "ACSN"}]}, "value": "ACC1"}]
    first, second = resource["series"]
    assert first["number"] == 1 and first["modality"] == {"system": fhir.DCM, "code": "CT"}
    assert first["instance"][1] == {"uid": "1.2.3.4.1.2", "number": 2,
                                    "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{CT}"}}
    assert "number" not in second and "description" not in second and "number" not in second["instance"][0]
    assert resource["contained"] == [{
        "resourceType": "Endpoint", "id": "dicomweb", "status": "active",
        "connectionType": {"system": fhir.CONNECTION_TYPES, "code": "dicom-wado-rs"},
        "payloadType": [{"text": "DICOM"}], "payloadMimeType": ["application/dicom"],
        "address": "https://pacs.example/dicom-web"}]
    assert resource["endpoint"] == [{"reference": "#dicomweb"}]


def test_an_unlinked_study_names_its_patient_by_the_dicom_patient_id() -> None:
    resource = fhir.imaging_study(facts(ehr_patient_id=None, order_id=None, accession_number=None, study_time=None),
                                  "/dicom-web", CHICAGO)
    ImagingStudy.parse_obj(resource)
    assert resource["subject"] == {"type": "Patient", "display": "DOE^JANE", "identifier": {
        "type": {"coding": [{"system": fhir.V2_0203, "code": "MR"}]}, "value": "MRN1"}}
    assert "basedOn" not in resource and resource["started"] == "2026-11-20"
    assert [i["system"] for i in resource["identifier"]] == ["urn:dicom:uid"]
    assert "started" not in fhir.imaging_study(facts(study_date=None), "/dicom-web", UTC)


def test_a_searchset_bundle() -> None:
    study = fhir.imaging_study(facts(), "https://pacs.example/dicom-web", UTC)
    resource = fhir.searchset([study], 7, "https://pacs.example", "https://pacs.example/fhir/ImagingStudy?patient=p-1")
    parsed = Bundle.parse_obj(resource)
    assert parsed.type == "searchset" and parsed.total == 7 and len(parsed.entry) == 1
    assert parsed.entry[0].fullUrl == "https://pacs.example/fhir/ImagingStudy/1.2.3.4"
    assert parsed.entry[0].search.mode == "match"
    empty = fhir.searchset([], 0, "", "/fhir/ImagingStudy")
    assert "entry" not in empty and Bundle.parse_obj(empty).total == 0  # FHIR JSON has no empty arrays


@pytest.mark.parametrize(("status", "code"), [(400, "structure"), (401, "login"), (403, "forbidden"),
                                              (404, "not-found"), (409, "conflict"), (422, "invalid"),
                                              (503, "transient"), (500, "exception")])
def test_errors_become_operation_outcomes(status: int, code: str) -> None:
    resource = fhir.operation_outcome(status, "the detail")
    outcome = OperationOutcome.parse_obj(resource)
    [issue] = outcome.issue
    assert (issue.code, issue.diagnostics) == (code, "the detail")
    assert issue.severity == ("fatal" if status == 500 else "error")
    assert fhir.operation_outcome(422, "x", "ServiceRequest.code")["issue"][0]["expression"] == ["ServiceRequest.code"]


@pytest.mark.parametrize(("value", "expected"), [
    ("ACC1", ("accession", "ACC1")), ("|ACC1", ("accession", "ACC1")),
    (f"{fhir.V2_0203}|ACC1", ("accession", "ACC1")), ("urn:oid:1.2.3", ("study_uid", "1.2.3")),
    ("urn:dicom:uid|urn:oid:1.2.3", ("study_uid", "1.2.3")),
])
def test_identifier_tokens(value: str, expected: tuple[str, str]) -> None:
    assert fhir.identifier_search(value) == expected


@pytest.mark.parametrize("value", ["", "urn:dicom:uid|1.2.3", "http://example.org|x", "x" * 73, "ACC1,ACC2"])
def test_identifier_tokens_refused(value: str) -> None:
    with pytest.raises(fhir.SearchError):
        fhir.identifier_search(value)


def test_references() -> None:
    assert fhir.reference_id("Patient/p-1", "Patient") == "p-1"
    assert fhir.reference_id(" p-1 ", "Patient") == "p-1"
    for bad in ("ServiceRequest/x", "Patient/", "https://ehr.example/Patient/1/x", "x" * 65, "Patient/a,Patient/b"):
        with pytest.raises(fhir.SearchError):
            fhir.reference_id(bad, "Patient")


def request(checked: bool = True, **overrides: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [{"system": "urn:ehr", "value": "OTHER"},
                       {"type": {"coding": [{"system": fhir.V2_0203, "code": "ACSN"}]}, "value": "ACC1"}],
        "subject": {"reference": "Patient/p-1", "identifier": {"value": "MRN1"}, "display": "Doe^Jane"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2"}, {"system": fhir.DCM, "code": "ct"}],
                 "text": "CT chest"},
        "occurrenceDateTime": "2026-11-20T09:30:00+01:00", "requester": {"display": "HOUSE^Gregory"},
        "performer": [{"identifier": {"value": "CT_ROOM_1"}}],
    }
    resource.update(overrides)
    if checked:
        ServiceRequest.parse_obj(resource)  # what the tests send is R4 itself
    return resource


def test_a_service_request_maps_onto_an_order_and_back() -> None:
    order = parse_order("o-1", order_payload("o-1", request(), None))
    assert (order.accession_number, order.mrn, order.patient_id, order.modality, order.description) == (
        "ACC1", "MRN1", "p-1", "CT", "CT chest")
    assert (order.patient_family_name, order.patient_given_name, order.referring_physician, order.station_aet) == (
        "Doe", "Jane", "HOUSE^Gregory", "CT_ROOM_1")
    assert order.scheduled_start == datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
    assert order.status == "scheduled"
    back = service_request({**order.as_row(), "scheduled_start": order.scheduled_start})
    parsed = ServiceRequest.parse_obj(back)
    assert parsed.id == "o-1" and parsed.status == "active" and parsed.intent == "order"
    assert back["subject"] == {"type": "Patient", "reference": "Patient/p-1", "display": "Doe^Jane", "identifier": {
        "type": {"coding": [{"system": fhir.V2_0203, "code": "MR"}]}, "value": "MRN1"}}
    assert back["code"] == {"coding": [{"system": fhir.DCM, "code": "CT"}], "text": "CT chest"}
    assert back["identifier"][0]["value"] == "ACC1" and back["performer"][0]["identifier"]["value"] == "CT_ROOM_1"


def test_what_fhir_does_not_carry_keeps_the_stored_order() -> None:
    stored = {"patient_family_name": "Doe", "patient_given_name": "Jane", "birth_date": date(1970, 5, 17),
              "sex": "F", "station_aet": "MR1", "status": "in-progress"}
    subject = {"reference": "Patient/p-1", "identifier": {"value": "MRN1"}}
    order = parse_order("o-1", order_payload("o-1", request(subject=subject, performer=None), stored))
    assert (order.patient_family_name, order.patient_given_name, order.birth_date, order.sex, order.station_aet) == (
        "Doe", "Jane", date(1970, 5, 17), "F", "MR1")
    assert order.status == "in-progress"  # "active" does not turn an order in progress back to scheduled
    revoked = parse_order("o-1", order_payload("o-1", request(status="revoked"), stored))
    assert revoked.status == "cancelled"


@pytest.mark.parametrize(("resource", "element"), [
    ({"resourceType": "Patient"}, "resourceType"),
    (request(id="o-2"), "ServiceRequest.id"),
    (request(False, subject=None), "ServiceRequest.subject"),
    (request(subject={"reference": "Group/g", "identifier": {"value": "M"}}), "ServiceRequest.subject.reference"),
    (request(status="unknown"), "ServiceRequest.status"),
    (request(identifier=[{"value": "A"}, {"value": "B"}]), "ServiceRequest.identifier"),
    (request(code={"text": "CT"}), "ServiceRequest.code"),
    (request(False, performer="CT1"), "ServiceRequest.performer"),
])
def test_elements_that_cannot_become_an_order(resource: Any, element: str) -> None:
    with pytest.raises(FhirFieldError) as raised:
        order_payload("o-1", resource, None)
    assert raised.value.field == element
