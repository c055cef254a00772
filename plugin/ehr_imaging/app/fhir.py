"""FHIR R4 for the EHR: ImagingStudy search and read (recorded studies, their series and instances read from
Orthanc), and an order pushed as a ServiceRequest (mapped onto the same orders as ``PUT /orders/{id}``).

A search lists what ``study_links`` records (the same query as ``GET /studies``, narrowed to a scoped caller's
patients); each study's series and instances (SOP class from Orthanc's ``SopClassUid`` metadata) come from Orthanc.
A read resolves the Study Instance UID as every study route does (app/study_resolution).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from ..core import errors
from ..core import fhir as rules
from ..core.dicom_values import parse_da, parse_tm
from ..core.fhir_orders import FhirFieldError, element_of, order_payload, service_request
from ..core.orders import OrderValidationError, parse_order
from ..core.study_images import list_series, ordered_series
from ..services import Services
from ..store import orders as order_store
from ..store import studies as study_store
from . import orders, study_resolution


class InvalidElement(errors.Invalid):
    """A ServiceRequest element refused (422); ``expression`` names it (OperationOutcome.issue.expression)."""

    def __init__(self, detail: str, expression: str) -> None:
        super().__init__(detail)
        self.expression = expression


@dataclass(frozen=True)
class Found:
    total: int
    resources: list[dict[str, Any]]


def dicomweb_root(services: Services) -> str:
    """The DICOMweb root the EHR reads images from: ``PublicBaseUrl`` + ``/dicom-web``."""
    return services.settings.PublicBaseUrl.rstrip("/") + "/dicom-web"


def search_studies(services: Services, where: study_store.StudyFilter) -> Found:
    """The recorded studies matching ``where`` (newest first), as ImagingStudy resources."""
    total, records = study_store.search(services.engine, where)
    resources = []
    for record in records:
        try:
            resources.append(_resource(services, record.orthanc_study_id, record))
        except errors.NotFound:  # deleted from Orthanc since it was recorded: not listed
            total -= 1
    return Found(total, resources)


def read_study(services: Services, study_uid: str) -> dict[str, Any]:
    """One stored study (recorded, or still arriving) as an ImagingStudy; NotFound when none."""
    orthanc_id = study_resolution.stored_study(services, study_uid)
    return _resource(services, orthanc_id, study_store.get(services.engine, study_uid))


def _resource(services: Services, orthanc_id: str, record: study_store.StudyRecord | None) -> dict[str, Any]:
    pacs = services.pacs
    study = pacs.get_json(f"/studies/{orthanc_id}")
    tags = study.get("MainDicomTags", {}) or {}
    patient = study.get("PatientMainDicomTags", {}) or {}
    series = []
    for listed in ordered_series([list_series(s, pacs.get_json(f"/series/{s['ID']}/instances"))
                                  for s in pacs.get_json(f"/studies/{orthanc_id}/series")]):
        instances = tuple(rules.InstanceFacts(i.sop_instance_uid, _sop_class(services, i.orthanc_id), i.instance_number)
                          for i in listed.instances)
        series.append(rules.SeriesFacts(listed.series_instance_uid, listed.series_number, listed.modality,
                                        listed.description, instances))
    order = order_store.get(services.engine, record.order_id) if record and record.order_id else None
    facts = rules.StudyFacts(
        study_instance_uid=str(tags.get("StudyInstanceUID") or (record.study_instance_uid if record else "")),
        patient_id=(record.patient_id if record else None) or patient.get("PatientID") or None,
        patient_name=(record.patient_name if record else None) or patient.get("PatientName") or None,
        ehr_patient_id=order.patient_id if order else None, order_id=record.order_id if record else None,
        accession_number=(record.accession_number if record else None) or tags.get("AccessionNumber") or None,
        description=(record.study_description if record else None) or tags.get("StudyDescription") or None,
        study_date=record.study_date if record else parse_da(tags.get("StudyDate")),
        study_time=record.study_time if record else parse_tm(tags.get("StudyTime")),
        series=tuple(series))
    return rules.imaging_study(facts, dicomweb_root(services), ZoneInfo(services.settings.Timezone))


def _sop_class(services: Services, orthanc_instance_id: str) -> str:
    """The SOP Class UID Orthanc recorded for an instance (its ``SopClassUid`` metadata, no file read)."""
    try:
        return services.pacs.get_bytes(f"/instances/{orthanc_instance_id}/metadata/SopClassUid").decode().strip()
    except errors.NotFound:
        tags = services.pacs.get_json(f"/instances/{orthanc_instance_id}/simplified-tags")
        return str(tags.get("SOPClassUID", ""))


def put_service_request(services: Services, order_id: str, resource: Any) -> tuple[dict[str, Any], bool]:
    """Create or replace the order a ServiceRequest describes; (the ServiceRequest as stored, created)."""
    stored = order_store.get(services.engine, order_id)
    try:
        payload = order_payload(order_id, resource, stored.fields() if stored else None)
        order = parse_order(order_id, payload)
    except FhirFieldError as exc:
        raise InvalidElement(str(exc), exc.field) from None
    except OrderValidationError as exc:
        raise InvalidElement(f"{element_of(exc.field)} ({exc})", element_of(exc.field)) from None
    saved, created = orders.push_order(services, order)
    return service_request(saved.fields()), created
