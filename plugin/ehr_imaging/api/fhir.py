"""FHIR R4 routes for the EHR: ImagingStudy search and read, ServiceRequest (an imaging order) create or replace.

Answers are ``application/fhir+json``; errors are OperationOutcome resources (api/router.py answers them for every
path under ``/fhir``). The same roles as the study queries (viewing) and the order writes (order-writing).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any
from urllib.parse import urlencode

from ..app import fhir
from ..core import errors
from ..core import fhir as rules
from ..store import studies
from .context import Api
from .router import Request, Response
from .validation import query_int

SEARCH_PARAMS = ("patient", "identifier", "basedOn", "_count", "_offset", "_format")
FORMATS = ("json", "application/json", rules.MEDIA_TYPE)  # _format: JSON is all this server answers
MAX_COUNT = 100
BODY_TYPES = (rules.MEDIA_TYPE, "application/json")


def fhir_response(resource: Any, status: int = 200) -> Response:
    return Response(status=status, body=json.dumps(resource, default=str).encode(), content_type=rules.MEDIA_TYPE)


def search_imaging_studies(api: Api, request: Request) -> Response:
    """ImagingStudy search: patient, identifier (accession or Study Instance UID), basedOn; a searchset Bundle."""
    query = request.query
    unknown = sorted(set(query) - set(SEARCH_PARAMS))
    if unknown:
        raise errors.Malformed(f"{unknown[0]}: unsupported search parameter (supported: {', '.join(SEARCH_PARAMS)})")
    if query.get("_format", "json").strip().lower() not in FORMATS:
        raise errors.Malformed(f"_format: only JSON ({', '.join(FORMATS)})")
    try:  # a search parameter that cannot be used is a 400 in FHIR (the JSON API's 422)
        where = studies.StudyFilter(limit=query_int(query, "_count", 20, 1, MAX_COUNT),
                                    offset=query_int(query, "_offset", 0, 0, 10**9), patient_scope=request.patients)
    except errors.Invalid as exc:
        raise errors.Malformed(exc.detail) from None
    try:
        if query.get("patient", "").strip():
            where = dataclasses.replace(where, patient_id=rules.reference_id(query["patient"], "Patient"))
        if query.get("basedOn", "").strip():
            where = dataclasses.replace(where, order_id=rules.reference_id(query["basedOn"], "ServiceRequest"))
        if query.get("identifier", "").strip():
            kind, value = rules.identifier_search(query["identifier"])
            where = (dataclasses.replace(where, study_uid=value) if kind == "study_uid"
                     else dataclasses.replace(where, accession=value))
    except rules.SearchError as exc:
        raise errors.Malformed(str(exc)) from None
    found = fhir.search_studies(api.services, where)
    base = api.services.settings.PublicBaseUrl.rstrip("/")
    self_url = f"{base}{request.path}" + (f"?{urlencode(sorted(query.items()))}" if query else "")
    return fhir_response(rules.searchset(found.resources, found.total, base, self_url))


def read_imaging_study(api: Api, request: Request) -> Response:
    """One ImagingStudy; its id is the Study Instance UID."""
    uid = request.params["study_uid"].strip()
    if not uid or len(uid) > 64:
        raise errors.NotFound(f"ImagingStudy {uid[:64]} not found")
    return fhir_response(fhir.read_study(api.services, uid))


def put_service_request(api: Api, request: Request) -> Response:
    """Create or replace an imaging order given as a ServiceRequest (the same orders as PUT /orders/{id})."""
    resource, created = fhir.put_service_request(api.services, request.params["order_id"], _resource(request))
    return fhir_response(resource, 201 if created else 200)


def _resource(request: Request) -> Any:
    if request.content_type not in BODY_TYPES:
        raise errors.UnsupportedMedia(f"the body must be a FHIR resource sent as Content-Type: {rules.MEDIA_TYPE}")
    try:
        return json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.Malformed(f"request body is not valid JSON: {exc}") from None
