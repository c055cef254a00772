"""The contracts (api/schemas.Contract) of the FHIR routes (api/fhir.py): ``application/fhir+json`` resources.

The schemas name only what the plugin always answers; the resources themselves are FHIR R4 (ImagingStudy, Bundle,
ServiceRequest, OperationOutcome), which tests/integration/test_fhir.py checks with the ``fhir.resources`` models.
"""

from __future__ import annotations

from ..core.fhir import MEDIA_TYPE
from .schemas import JSON, Contract, Schema, array, obj, string


def resource(kind: str, properties: dict[str, Schema] | None = None, optional: tuple[str, ...] = ()) -> Schema:
    """A FHIR resource of ``kind``: its resourceType and ``properties`` always there (but the ``optional`` ones),
    anything else allowed (FHIR R4 says what)."""
    props = {"resourceType": string(enum=[kind]), **(properties or {})}
    return obj(props, [name for name in props if name not in optional], additionalProperties=True)


OPERATION_OUTCOME = resource("OperationOutcome", {"issue": array(obj(
    {"severity": string(enum=["fatal", "error"]), "code": string(), "diagnostics": string()},
    additionalProperties=True))})
IMAGING_STUDY_RESOURCE = resource("ImagingStudy", {"id": string(), "status": string(), "subject": {"type": "object"},
                                                   "numberOfSeries": {"type": "integer"},
                                                   "numberOfInstances": {"type": "integer"}})
SERVICE_REQUEST_RESOURCE = resource("ServiceRequest", {"id": string(), "status": string(), "intent": string()})
_SERVICE_REQUEST_INPUT = obj({"resourceType": string(enum=["ServiceRequest"])}, additionalProperties=True)

_ENTRY = obj({"fullUrl": string(), "resource": IMAGING_STUDY_RESOURCE, "search": {"type": "object"}})
IMAGING_STUDY_SEARCH = Contract(
    {"200": {MEDIA_TYPE: resource("Bundle", {"total": {"type": "integer"}, "entry": array(_ENTRY)},
                                  optional=("entry",))}},  # no match: no entry (FHIR JSON has no empty arrays)
    errors={"400": "an unsupported search parameter, or a value that cannot be used"})
IMAGING_STUDY = Contract({"200": {MEDIA_TYPE: IMAGING_STUDY_RESOURCE}})
PUT_SERVICE_REQUEST = Contract(
    {"200": {MEDIA_TYPE: SERVICE_REQUEST_RESOURCE}, "201": {MEDIA_TYPE: SERVICE_REQUEST_RESOURCE}},
    {MEDIA_TYPE: _SERVICE_REQUEST_INPUT, JSON: _SERVICE_REQUEST_INPUT}, body_required=True,
    errors={"422": "an element that does not map onto a valid order (OperationOutcome.issue.expression names it)"})
