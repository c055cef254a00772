"""Studies for the EHR: queries (by filters, patient, order, accession), one study, deletion with a reason.

Lists come from ``study_links`` (every recorded study's facts and link: one indexed query, joined to the
orders); one study is read from Orthanc as well, so a study still arriving (not yet stable, not yet
recorded) is found, and one deleted behind our back is not.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import date

from ..app import deletion, observation, study_resolution
from ..core import errors
from ..core.dicom_values import parse_date
from ..core.orders import ORDER_STATUSES, OrderValidationError, validate_order_id
from ..store import studies
from . import deletions, presenters
from .context import Api
from .router import Request, Response, json_response
from .validation import query_int

MAX_PAGE = 500
MAX_TEXT = 128


def parse_study_filter(query: Mapping[str, str], *, default_limit: int = 50) -> studies.StudyFilter:
    """``GET /studies`` parameters -> a filter; a bad value answers 422 naming the parameter."""
    text = {name: _text_param(query, name) for name in ("patient_id", "mrn", "patient_name", "modality", "accession")}
    modality = text["modality"]
    if modality is not None and not (modality.isascii() and modality.isalnum() and len(modality) <= 16):
        raise errors.Invalid("modality: must be a DICOM modality code such as CT or MR")
    status = query.get("order_status") or None
    if status is not None and status not in ORDER_STATUSES:
        raise errors.Invalid(f"order_status: must be one of {', '.join(ORDER_STATUSES)}")
    date_from, date_to = parse_date_param(query, "study_date_from"), parse_date_param(query, "study_date_to")
    if date_from and date_to and date_from > date_to:
        raise errors.Invalid("study_date_from: must not be after study_date_to")
    return studies.StudyFilter(
        patient_id=text["patient_id"], mrn=text["mrn"], patient_name=text["patient_name"], modality=modality,
        accession=text["accession"], study_date_from=date_from, study_date_to=date_to, order_status=status,
        limit=query_int(dict(query), "limit", default_limit, 1, MAX_PAGE),
        offset=query_int(dict(query), "offset", 0, 0, 10**9),
    )


def parse_date_param(query: Mapping[str, str], name: str) -> date | None:
    """``YYYY-MM-DD`` or DICOM ``YYYYMMDD``."""
    value = (query.get(name) or "").strip()
    if not value:
        return None
    parsed = parse_date(value)
    if parsed is None:
        raise errors.Invalid(f"{name}: must be a date YYYY-MM-DD")
    return parsed


def _text_param(query: Mapping[str, str], name: str) -> str | None:
    value = (query.get(name) or "").strip()
    if len(value) > MAX_TEXT:
        raise errors.Invalid(f"{name}: at most {MAX_TEXT} characters")
    return value or None


def deletion_reason(request: Request) -> str:
    """``?reason=`` / form field / ``X-Reason`` header, or a JSON body ``{"reason": ...}``; required."""
    reason = request.option("reason")
    if reason is None and request.body and request.content_type == "application/json":  # JSON only (CSRF)
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise errors.Malformed("request body is not valid JSON") from None
        value = body.get("reason") if isinstance(body, dict) else None
        reason = value.strip() if isinstance(value, str) and value.strip() else None
    if reason is None:
        raise errors.Invalid("reason: is required (query ?reason=, X-Reason header or JSON body {\"reason\"})")
    if len(reason) > 1000:
        raise errors.Invalid("reason: at most 1000 characters")
    return reason


def list_studies(api: Api, request: Request) -> Response:
    """Studies matching filters, newest first."""
    where = dataclasses.replace(parse_study_filter(request.query), patient_scope=request.patients)
    total, items = studies.search(api.services.engine, where)
    return json_response(presenters.page(total, where.limit, where.offset,
                                         [presenters.recorded_study(item) for item in items]))


def patient_studies(api: Api, request: Request) -> Response:
    """A patient's studies (EHR patient id: their orders' studies and studies carrying their MRN)."""
    return _listed(api, _page(request, studies.StudyFilter(patient_id=_path_text(request, "patient_id"))))


def order_studies(api: Api, request: Request) -> Response:
    """The study linked to an order (a list of zero or one)."""
    order_id = _order_id(request.params["order_id"])
    if not studies.order_exists(api.services.engine, order_id):
        raise errors.NotFound(f"order {order_id} not found")
    return _listed(api, _page(request, studies.StudyFilter(order_id=order_id)))


def accession_studies(api: Api, request: Request) -> Response:
    """Studies with an AccessionNumber."""
    return _listed(api, _page(request, studies.StudyFilter(accession=_path_text(request, "accession"))))


def get_study(api: Api, request: Request) -> Response:
    """One study, as Orthanc holds it now, with its link; 404 when absent or deleted."""
    services = api.services
    uid = _path_text(request, "study_uid")
    orthanc_id = study_resolution.resolve_one(services, uid)
    seen = observation.observe_study(services, orthanc_id) if orthanc_id else None
    if seen is None:
        raise errors.NotFound(f"study {uid} not found")
    recorded = studies.get(services.engine, uid)
    match = presenters.study_match(recorded) if recorded else {
        "status": "pending", "rule": None, "reason": "not yet recorded: the study is still arriving"}
    return json_response(presenters.study(
        uid, seen.orthanc_study_id, patient_id=seen.patient_id, patient_name=seen.patient_name,
        study_date=seen.study_date, study_time=seen.study_time, description=seen.study_description,
        accession=seen.accession_number, modalities=list(seen.modalities), series=seen.number_of_series,
        instances=seen.number_of_instances, order_id=recorded.order_id if recorded else None, match=match,
    ))


def delete_study(api: Api, request: Request) -> Response:
    """Delete a study (reason required): Orthanc, order link, audit; upload rows soft-deleted; its files kept
    for restore. With ``DeletionApproval`` 'required': 202, a pending request, nothing deleted yet."""
    assert request.principal is not None
    done = deletion.request_deletion(api.services, _path_text(request, "study_uid"),
                                     actor=request.principal.subject, reason=deletion_reason(request))
    if isinstance(done, deletion.Deletion):
        return json_response(deletions.deleted_json(done))
    return json_response(deletions.pending_json(done), status=202)


def _listed(api: Api, where: studies.StudyFilter) -> Response:
    # The seed's EHR expects a bare JSON list here; the total travels in a header.
    total, items = studies.search(api.services.engine, where)
    response = json_response([presenters.recorded_study(item) for item in items])
    response.headers["X-Total-Count"] = str(total)
    return response


def _page(request: Request, where: studies.StudyFilter) -> studies.StudyFilter:
    return dataclasses.replace(where, limit=query_int(request.query, "limit", MAX_PAGE, 1, MAX_PAGE),
                               offset=query_int(request.query, "offset", 0, 0, 10**9),
                               patient_scope=request.patients)  # a scoped caller's list: their patients only


def _path_text(request: Request, name: str) -> str:
    value = request.params[name].strip()
    if not value or len(value) > MAX_TEXT:
        raise errors.Invalid(f"{name}: must be 1 to {MAX_TEXT} characters")
    return value


def _order_id(value: str) -> str:
    try:
        return validate_order_id(value)
    except OrderValidationError as exc:
        raise errors.Invalid(str(exc)) from None
