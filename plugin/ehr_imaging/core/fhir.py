"""FHIR R4 for the EHR (pure): study facts -> ImagingStudy, searchset Bundles, errors -> OperationOutcome, and the
search parameters' token and reference forms. The ServiceRequest <-> order mapping is core/fhir_orders.py.

The ImagingStudy id is the Study Instance UID: stable (it never changes when a study is moved or re-linked, unlike
Orthanc's study id, which hashes the PatientID), URL-safe, and a valid FHIR id (digits and dots, at most 64).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo
from typing import Any

MEDIA_TYPE = "application/fhir+json"
FHIR_ROOT = "/fhir"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DICOM_UID = "urn:dicom:uid"
RFC3986 = "urn:ietf:rfc:3986"
CONNECTION_TYPES = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
ENDPOINT_ID = "dicomweb"

# The plugin's error statuses -> OperationOutcome.issue.code (http://hl7.org/fhir/issue-type).
ISSUE_CODES = {400: "structure", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               409: "conflict", 413: "too-long", 415: "not-supported", 422: "invalid", 429: "throttled",
               503: "transient"}


class SearchError(ValueError):
    """A search parameter the server cannot use (answered 400 with an OperationOutcome)."""


@dataclass(frozen=True)
class InstanceFacts:
    sop_instance_uid: str
    sop_class_uid: str
    number: int | None


@dataclass(frozen=True)
class SeriesFacts:
    series_instance_uid: str
    number: int | None
    modality: str
    description: str
    instances: tuple[InstanceFacts, ...]


@dataclass(frozen=True)
class StudyFacts:
    """What an ImagingStudy says of one stored study (its Orthanc series and instances, its link)."""

    study_instance_uid: str
    patient_id: str | None  # DICOM PatientID (the MRN)
    patient_name: str | None
    ehr_patient_id: str | None  # the linked order's EHR patient id
    order_id: str | None
    accession_number: str | None
    description: str | None
    study_date: date | None
    study_time: time | None
    series: tuple[SeriesFacts, ...]


def started(study_date: date | None, study_time: time | None, zone: tzinfo) -> str | None:
    """StudyDate (+ StudyTime, local to the site's ``Timezone``) as a FHIR dateTime (a time carries its offset)."""
    if study_date is None:
        return None
    if study_time is None:
        return study_date.isoformat()
    return datetime.combine(study_date, study_time.replace(microsecond=0), zone).isoformat()


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


def _subject(facts: StudyFacts) -> dict[str, Any]:
    """``Patient/<EHR patient id>`` when linked to an order that names one; else the DICOM PatientID."""
    if facts.ehr_patient_id:
        reference: dict[str, Any] = {"reference": f"Patient/{facts.ehr_patient_id}", "type": "Patient"}
    else:
        reference = {"type": "Patient"}
    if facts.patient_id:
        reference["identifier"] = {"type": {"coding": [_coding(V2_0203, "MR")]}, "value": facts.patient_id}
    if facts.patient_name:
        reference["display"] = facts.patient_name
    return reference


def study_identifiers(facts: StudyFacts) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [{"use": "official", "system": DICOM_UID,
                                    "value": f"urn:oid:{facts.study_instance_uid}"}]
    if facts.accession_number:
        found.append({"use": "usual", "type": {"coding": [_coding(V2_0203, "ACSN")]},
                      "value": facts.accession_number})
    return found


def endpoint(dicomweb_root: str) -> dict[str, Any]:
    """The DICOMweb (WADO-RS) root the images are read from (contained in each ImagingStudy)."""
    return {"resourceType": "Endpoint", "id": ENDPOINT_ID, "status": "active",
            "connectionType": _coding(CONNECTION_TYPES, "dicom-wado-rs"),
            "payloadType": [{"text": "DICOM"}], "payloadMimeType": ["application/dicom"],
            "address": dicomweb_root}


def _series(series: SeriesFacts) -> dict[str, Any]:
    found: dict[str, Any] = {"uid": series.series_instance_uid, "modality": _coding(DCM, series.modality or "OT"),
                             "numberOfInstances": len(series.instances)}
    if series.number is not None:
        found["number"] = series.number
    if series.description:
        found["description"] = series.description
    found["instance"] = [  # a series Orthanc lists has at least one instance
        {"uid": instance.sop_instance_uid, "sopClass": _coding(RFC3986, f"urn:oid:{instance.sop_class_uid}"),
         **({"number": instance.number} if instance.number is not None else {})}
        for instance in series.instances]
    return found


def imaging_study(facts: StudyFacts, dicomweb_root: str, zone: tzinfo) -> dict[str, Any]:
    """One stored study as an R4 ImagingStudy (status ``available``: its images can be read)."""
    modalities = sorted({s.modality for s in facts.series if s.modality})
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy", "id": facts.study_instance_uid,
        "contained": [endpoint(dicomweb_root)],
        "identifier": study_identifiers(facts), "status": "available",
        "subject": _subject(facts),
    }
    if modalities:
        resource["modality"] = [_coding(DCM, code) for code in modalities]
    when = started(facts.study_date, facts.study_time, zone)
    if when is not None:
        resource["started"] = when
    if facts.order_id:
        resource["basedOn"] = [{"reference": f"ServiceRequest/{facts.order_id}", "type": "ServiceRequest"}]
    resource["endpoint"] = [{"reference": f"#{ENDPOINT_ID}"}]
    resource["numberOfSeries"] = len(facts.series)
    resource["numberOfInstances"] = sum(len(s.instances) for s in facts.series)
    if facts.description:
        resource["description"] = facts.description
    if facts.series:
        resource["series"] = [_series(series) for series in facts.series]
    return resource


def searchset(resources: Sequence[Mapping[str, Any]], total: int, base_url: str, self_url: str) -> dict[str, Any]:
    """A searchset Bundle of the resources found (``total``: all matches, ``resources``: this page)."""
    found: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total,
                             "link": [{"relation": "self", "url": self_url}]}
    if resources:  # FHIR JSON has no empty arrays: no match, no ``entry``
        found["entry"] = [{"fullUrl": f"{base_url}{FHIR_ROOT}/{r['resourceType']}/{r['id']}", "resource": r,
                           "search": {"mode": "match"}} for r in resources]
    return found


def operation_outcome(status: int, detail: str, expression: str | None = None) -> dict[str, Any]:
    """An error answer: one issue, its code from the status, the plugin's detail as its diagnostics."""
    issue: dict[str, Any] = {"severity": "fatal" if status >= 500 and status != 503 else "error",
                             "code": ISSUE_CODES.get(status, "exception"), "diagnostics": detail}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def _one_value(value: str, name: str) -> str:
    if "," in value:  # FHIR's "or" list: refused rather than read as one odd value that matches nothing
        raise SearchError(f"{name}: one value only (no comma-separated list)")
    return value.strip()


def reference_id(value: str, resource_type: str) -> str:
    """``<Type>/<id>`` (or a bare id) -> the id; a reference to another type, or an absolute URL, is refused."""
    text = _one_value(value, resource_type)
    if "/" in text:
        kind, _, ident = text.rpartition("/")
        if kind != resource_type:
            raise SearchError(f"must reference a {resource_type} ({resource_type}/<id>)")
        text = ident
    if not text or len(text) > 64:
        raise SearchError(f"must be {resource_type}/<id> with an id of 1 to 64 characters")
    return text


def identifier_search(value: str) -> tuple[str, str]:
    """An ImagingStudy ``identifier`` token -> ("study_uid", uid) or ("accession", number).

    ``urn:dicom:uid|urn:oid:<uid>`` (or ``urn:oid:<uid>``) is the Study Instance UID; ``<v2-0203>|<value>``,
    ``|<value>`` or a bare value is the accession number."""
    system, sep, code = _one_value(value, "identifier").partition("|")
    if not sep:
        system, code = "", system
    code = code.strip()
    if not code or len(code) > 72:
        raise SearchError("identifier: needs a value of at most 72 characters")
    if code.startswith("urn:oid:") and system in ("", DICOM_UID):
        return "study_uid", code.removeprefix("urn:oid:")
    if system == DICOM_UID:
        raise SearchError("identifier: a urn:dicom:uid value is urn:oid:<Study Instance UID>")
    if system not in ("", V2_0203):
        raise SearchError(f"identifier: unknown system {system!r} (use urn:dicom:uid or {V2_0203} for accessions)")
    return "accession", code
