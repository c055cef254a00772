"""FHIR use cases (``app.fhir``) on an in-memory Orthanc: an ImagingStudy is the recorded patient's study (never
another patient's copy under the same StudyInstanceUID), a study still arriving is read too, and a ServiceRequest
becomes the same order as PUT /orders/{id}; every resource parsed with the ``fhir.resources`` R4 models."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pydicom
import pytest
from fhir.resources.imagingstudy import ImagingStudy
from fhir.resources.servicerequest import ServiceRequest

from ehr_imaging.app import fhir, ingest
from ehr_imaging.core import errors
from ehr_imaging.services import Services
from ehr_imaging.store import orders
from ehr_imaging.store import studies as study_store
from tests.app.records import accession, mrn, put_order
from tests.dicom_factory import make_study
from tests.fakes.orthanc import FakeOrthanc

CT = "1.2.840.10008.5.1.4.1.1.2"
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def _as_patient(path: Path, patient_id: str) -> bytes:
    ds = pydicom.dcmread(path)
    ds.PatientID = patient_id
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_a_linked_study_is_its_patients_and_its_orders(services: Services, orthanc: FakeOrthanc,
                                                       tmp_path: Path) -> None:
    patient, acc, patient_id = mrn(), accession(), str(uuid.uuid4())
    order_id = put_order(services, mrn=patient, accession_number=acc, patient_id=patient_id)
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20261120", instances=3)
    recorded = {str(orthanc.receive(path.read_bytes())["ParentStudy"]) for path in files}.pop()
    orthanc.make_stable(recorded)
    ingest.process_stable_study(services, recorded)
    # Later, another patient's files under the same UIDs: a copy of its own, never shown as this study.
    intruder = mrn()
    for path in files[:2]:
        orthanc.receive(_as_patient(path, intruder))
    assert len(orthanc.find_study_ids(uid)) == 2

    resource = fhir.read_study(services, uid)

    study = ImagingStudy.parse_obj(resource)
    assert study.id == uid and study.subject.reference == f"Patient/{patient_id}"
    assert study.subject.identifier.value == patient
    assert [b.reference for b in study.basedOn] == [f"ServiceRequest/{order_id}"]
    assert study.numberOfInstances == 3 and [i.number for i in study.series[0].instance] == [1, 2, 3]
    assert {i.sopClass.code for i in study.series[0].instance} == {f"urn:oid:{CT}"}
    assert resource["contained"][0]["address"] == "/dicom-web"  # no PublicBaseUrl here: the same origin
    found = fhir.search_studies(services, study_store.StudyFilter(order_id=order_id))
    assert found.total == 1 and found.resources == [resource]
    assert fhir.search_studies(services, study_store.StudyFilter(order_id=order_id, patient_scope=frozenset(
        {str(uuid.uuid4())}))).total == 0


def test_a_study_still_arriving_is_read_unlinked(services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    patient = mrn()
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261120", instances=1)
    orthanc.receive(files[0].read_bytes())

    resource = fhir.read_study(services, uid)

    ImagingStudy.parse_obj(resource)
    assert "basedOn" not in resource and "reference" not in resource["subject"]
    assert resource["subject"]["identifier"]["value"] == patient
    assert [i["system"] for i in resource["identifier"]] == ["urn:dicom:uid"]  # no accession number
    assert resource["started"].startswith("2026-11-20")  # from Orthanc's tags until it is recorded
    assert fhir.search_studies(services, study_store.StudyFilter(study_uid=uid)).total == 0  # not recorded yet
    with pytest.raises(errors.NotFound):
        fhir.read_study(services, "1.2.826.0.1.3680043.10.999.31")


def test_a_service_request_is_stored_as_an_order(services: Services) -> None:
    order_id, patient, acc = str(uuid.uuid4()), mrn(), accession()
    request = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
               "identifier": [{"value": acc}],
               "subject": {"reference": "Patient/p-9", "identifier": {"value": patient}},
               "code": {"coding": [{"system": DCM, "code": "MR"}]}}
    answered, created = fhir.put_service_request(services, order_id, request)
    assert created and ServiceRequest.parse_obj(answered).status == "active"
    stored = orders.get(services.engine, order_id)
    assert stored is not None
    assert (stored.accession_number, stored.mrn, stored.patient_id, stored.modality, stored.status) == (
        acc, patient, "p-9", "MR", "scheduled")
    with pytest.raises(fhir.InvalidElement) as refused:
        fhir.put_service_request(services, order_id, {**request, "subject": {"reference": "Patient/p-9"}})
    assert refused.value.expression == "ServiceRequest.subject.identifier"
    assert orders.get(services.engine, order_id) == stored  # unchanged
