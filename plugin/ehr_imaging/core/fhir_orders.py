"""An imaging order as a FHIR R4 ServiceRequest (pure): FHIR -> the order payload of ``PUT /orders/{id}`` (then
validated by core/orders.parse_order, the same rules), and a stored order -> the ServiceRequest answered.

The mapping (README "Integrating an EHR", FHIR): identifier (type ACSN) -> accession_number; subject.reference
``Patient/<id>`` -> patient_id; subject.identifier.value -> mrn; subject.display ``Family^Given`` -> the names;
code.coding (DICOM DCM system) -> modality, code.text -> description; occurrenceDateTime -> scheduled_start;
status -> status; requester.display -> referring_physician; performer[0].identifier.value -> station_aet. What the
FHIR form does not carry (birth date, sex; names, station without their element) keeps the stored order's value.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from .errors import FieldError
from .fhir import DCM, V2_0203

IMAGING = {"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging"}
# ServiceRequest.status (request-status) -> the order's status; "active" keeps an order already in progress.
TO_ORDER_STATUS = {"draft": "scheduled", "active": "scheduled", "on-hold": "scheduled", "completed": "completed",
                   "revoked": "cancelled", "entered-in-error": "cancelled"}
TO_FHIR_STATUS = {"scheduled": "active", "in-progress": "active", "completed": "completed", "cancelled": "revoked"}
# Order fields -> the FHIR element a validation error names.
ELEMENTS = {"accession_number": "ServiceRequest.identifier", "mrn": "ServiceRequest.subject.identifier",
            "patient_id": "ServiceRequest.subject.reference", "patient_family_name": "ServiceRequest.subject.display",
            "patient_given_name": "ServiceRequest.subject.display", "modality": "ServiceRequest.code",
            "description": "ServiceRequest.code.text", "scheduled_start": "ServiceRequest.occurrenceDateTime",
            "status": "ServiceRequest.status", "referring_physician": "ServiceRequest.requester.display",
            "station_aet": "ServiceRequest.performer", "order_id": "ServiceRequest.id"}
_KEPT = ("patient_family_name", "patient_given_name", "birth_date", "sex", "station_aet")


class FhirFieldError(FieldError):
    """A ServiceRequest element that cannot become an order field; ``field`` is the FHIR path."""


def element_of(order_field: str) -> str:
    return ELEMENTS.get(order_field, f"ServiceRequest.{order_field}")


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FhirFieldError(where, "must be an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise FhirFieldError(where, "must be an array")
    return value


def _accession(resource: Mapping[str, Any]) -> Any:
    identifiers = [_object(i, "ServiceRequest.identifier") for i in _list(resource.get("identifier"),
                                                                         "ServiceRequest.identifier")]
    typed = [i for i in identifiers
             if any(c.get("code") == "ACSN" and c.get("system") in (None, V2_0203)
                    for c in _list(_object(i.get("type"), "identifier.type").get("coding"), "identifier.type"))]
    chosen = typed or (identifiers if len(identifiers) == 1 else [])
    if not chosen:
        raise FhirFieldError("ServiceRequest.identifier", "needs the accession number (type ACSN of "
                             f"{V2_0203})")
    return chosen[0].get("value")


def _names(display: Any) -> tuple[Any, Any]:
    if not isinstance(display, str):
        return display, None
    family, _, given = display.partition("^")
    return family.strip() or None, given.strip() or None


def _modality(code: Mapping[str, Any]) -> Any:
    codings = [_object(c, "ServiceRequest.code.coding") for c in _list(code.get("coding"), "ServiceRequest.code")]
    dicom = [c.get("code") for c in codings if c.get("system") == DCM]
    if not dicom:
        raise FhirFieldError("ServiceRequest.code", f"needs a coding of system {DCM} (the modality, e.g. CT)")
    return dicom[0]


def order_payload(order_id: str, resource: Any, stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """A ServiceRequest -> the body ``PUT /orders/{order_id}`` takes (then checked by core/orders.parse_order).
    ``stored``: the order as it is (its fields by name), whose values the FHIR form does not carry are kept."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "ServiceRequest":
        raise FhirFieldError("resourceType", "must be ServiceRequest")
    if resource.get("id") not in (None, order_id):
        raise FhirFieldError("ServiceRequest.id", "differs from the id in the path")
    subject = _object(resource.get("subject"), "ServiceRequest.subject")
    if not subject:
        raise FhirFieldError("ServiceRequest.subject", "is required")
    reference = subject.get("reference")
    if reference is not None and (not isinstance(reference, str) or not reference.startswith("Patient/")):
        raise FhirFieldError("ServiceRequest.subject.reference", "must be Patient/<EHR patient id>")
    code = _object(resource.get("code"), "ServiceRequest.code")
    status = resource.get("status")
    if status not in TO_ORDER_STATUS:
        raise FhirFieldError("ServiceRequest.status", f"must be one of {', '.join(TO_ORDER_STATUS)}")
    order_status = TO_ORDER_STATUS[status]
    kept = {name: stored.get(name) for name in _KEPT} if stored else {}
    if stored and status == "active" and stored.get("status") == "in-progress":
        order_status = "in-progress"  # the images have started arriving: "active" does not turn it back
    payload: dict[str, Any] = {
        **{name: _iso(value) for name, value in kept.items()},
        "accession_number": _accession(resource),
        "mrn": _object(subject.get("identifier"), "ServiceRequest.subject.identifier").get("value"),
        "patient_id": reference.removeprefix("Patient/") if isinstance(reference, str) else None,
        "modality": _modality(code), "description": code.get("text"),
        "scheduled_start": resource.get("occurrenceDateTime"), "status": order_status,
        "referring_physician": _object(resource.get("requester"), "ServiceRequest.requester").get("display"),
    }
    if "display" in subject:
        payload["patient_family_name"], payload["patient_given_name"] = _names(subject.get("display"))
    performers = _list(resource.get("performer"), "ServiceRequest.performer")
    if performers:
        station = _object(_object(performers[0], "ServiceRequest.performer").get("identifier"),
                          "ServiceRequest.performer.identifier")
        payload["station_aet"] = station.get("value")
    return payload


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (date, datetime)) else value


def service_request(order: Mapping[str, Any]) -> dict[str, Any]:
    """A stored order (its fields by name) as the ServiceRequest the EHR reads back."""
    subject: dict[str, Any] = {"type": "Patient"}
    if order.get("patient_id"):
        subject["reference"] = f"Patient/{order['patient_id']}"
    if order.get("mrn"):
        subject["identifier"] = {"type": {"coding": [{"system": V2_0203, "code": "MR"}]}, "value": order["mrn"]}
    name = "^".join(n for n in (order.get("patient_family_name") or "", order.get("patient_given_name") or ""))
    if name.strip("^"):
        subject["display"] = name.rstrip("^")
    code: dict[str, Any] = {"coding": [{"system": DCM, "code": order.get("modality") or "OT"}]}
    if order.get("description"):
        code["text"] = order["description"]
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest", "id": order["order_id"],
        "identifier": [{"use": "usual", "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                        "value": order.get("accession_number")}],
        "status": TO_FHIR_STATUS.get(str(order.get("status")), "unknown"), "intent": "order",
        "category": [{"coding": [IMAGING]}], "code": code, "subject": subject,
    }
    start = order.get("scheduled_start")
    if start:
        resource["occurrenceDateTime"] = _iso(start)
    if order.get("referring_physician"):
        resource["requester"] = {"display": order["referring_physician"]}
    if order.get("station_aet"):
        resource["performer"] = [{"identifier": {"value": order["station_aet"]}, "type": "Device"}]
    return resource
