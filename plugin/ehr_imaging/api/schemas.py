"""JSON Schemas (OpenAPI 3.0) of the API's answers and request bodies: shared components and one named
contract per kind of route, which the route's row in api/routes.py references (the table is the only list of
routes; nothing here is keyed by path).

``api/openapi.py`` puts them into the document; tests/integration/test_openapi_contract.py checks real answers
against them, so a field added to or dropped from a handler's answer must be changed here too. ``required``
lists the fields an answer always carries; ``nullable`` marks those that can be null.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.dicom_values import SEXES

Schema = dict[str, Any]

JSON = "application/json"
DICOM = "application/dicom"
ZIP = "application/zip"
PNG = "image/png"
JPEG = "image/jpeg"
MULTIPART = "multipart/form-data"
CSV = "text/csv"
BINARY: Schema = {"type": "string", "format": "binary"}
P = "/api/v1/dicom"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable_ref(name: str) -> Schema:
    """A reference that may be null (OpenAPI 3.0 ignores siblings of ``$ref``, hence ``allOf``)."""
    return {"nullable": True, "allOf": [ref(name)]}


def obj(properties: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    """An object; every property is required unless ``required`` names the ones that are."""
    return {"type": "object", "required": list(properties) if required is None else required,
            "properties": properties, **extra}


def string(fmt: str | None = None, *, nullable: bool = False, enum: list[str] | None = None) -> Schema:
    schema: Schema = {"type": "string"}
    if fmt:
        schema["format"] = fmt
    if enum:
        schema["enum"] = enum
    if nullable:
        schema["nullable"] = True
    return schema


def integer(*, nullable: bool = False) -> Schema:
    return {"type": "integer", "nullable": True} if nullable else {"type": "integer"}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def page(item: str) -> Schema:
    """``{"total","limit","offset","items"}`` of one kind of item."""
    return obj({"total": integer(), "limit": integer(), "offset": integer(), "items": array(ref(item))})


NSTR = string(nullable=True)
STRINGS = array(string())
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}
ORDER_STATUS = ["scheduled", "in-progress", "completed", "cancelled"]

_DELETION_REQUEST_STATUSES = ("pending", "approved", "rejected", "expired")  # store.deletions.REQUEST_STATUSES
_VIEWER_TOKEN = {"token": string(), "token_id": string(), "expires_at": string("date-time"),
                 "study_uids": STRINGS}

COMPONENTS: dict[str, Schema] = {
    "Health": obj({"status": string(enum=["healthy", "unhealthy"]), "plugin_version": NSTR,
                   "orthanc_version": NSTR, "database": string(), "schema_version": integer(nullable=True)},
                  ["status", "plugin_version", "orthanc_version", "database"]),
    "Stats": obj({name: integer() for name in ("total_patients", "total_studies", "total_series", "total_instances",
                                                "total_orders", "matched_orders", "total_uploads")}
                 | {"disk_size_mb": {"type": "number"}}),
    "OrderInput": obj({
        "order_id": string(), "accession_number": string(), "mrn": string(), "patient_id": NSTR,
        "patient_family_name": NSTR, "patient_given_name": NSTR, "birth_date": string("date", nullable=True),
        "sex": string(nullable=True, enum=list(SEXES)), "modality": string(),
        "scheduled_start": string("date-time", nullable=True), "description": NSTR, "referring_physician": NSTR,
        "status": string(nullable=True, enum=ORDER_STATUS), "station_aet": NSTR,
    }, ["accession_number", "mrn", "modality"], additionalProperties=False),
    "Order": obj({
        "order_id": string(), "accession_number": NSTR, "patient_id": NSTR, "mrn": NSTR,
        "patient_family_name": NSTR, "patient_given_name": NSTR, "birth_date": string("date", nullable=True),
        "sex": NSTR, "modality": NSTR, "scheduled_start": string("date-time", nullable=True), "description": NSTR,
        "referring_physician": NSTR, "status": string(enum=ORDER_STATUS), "station_aet": NSTR,
        "study_instance_uid": NSTR, "orthanc_study_id": NSTR, "number_of_series": integer(nullable=True),
        "number_of_images": integer(nullable=True), "study_date": string("date", nullable=True),
        "study_time": NSTR, "uploaded_at": string("date-time", nullable=True), "uploaded_by": NSTR,
        "upload_source": NSTR, "match_rule": NSTR, "created_at": string("date-time"),
        "updated_at": string("date-time"),
    }),
    "StudyMatch": obj({"status": string(enum=["linked", "unmatched", "pending"]), "rule": NSTR, "reason": NSTR}),
    "Study": obj({
        "StudyInstanceUID": string(), "OrthancStudyID": NSTR, "PatientID": NSTR, "PatientName": NSTR,
        "StudyDate": NSTR, "StudyTime": NSTR, "StudyDescription": NSTR, "AccessionNumber": NSTR,
        "ModalitiesInStudy": STRINGS, "NumberOfSeries": integer(), "NumberOfInstances": integer(),
        "order_id": NSTR, "match": ref("StudyMatch"),
    }),
    "UnmatchedStudy": obj({
        "study_instance_uid": string(), "orthanc_study_id": string(), "patient_id": NSTR, "patient_name": NSTR,
        "accession_number": NSTR, "study_date": string("date", nullable=True), "modalities": STRINGS,
        "number_of_series": integer(), "number_of_instances": integer(), "reason": NSTR,
        "candidate_order_ids": STRINGS, "upload_source": NSTR, "uploaded_by": NSTR,
        "first_seen_at": string("date-time"), "collides_with_orthanc_study_id": NSTR,
        "original_study_instance_uid": NSTR,
    }),
    "Match": obj({
        "study_instance_uid": string(), "status": string(enum=["linked", "unmatched", "unknown"]),
        "order_id": NSTR, "match_rule": NSTR, "reason": NSTR, "candidate_order_ids": STRINGS,
        "order": nullable_ref("Order"), "quarantined_orthanc_study_ids": STRINGS,
    }),
    "UploadMatch": obj({"status": string(enum=["linked", "unmatched"]), "reason": NSTR}),
    "FileResult": obj({
        "file_name": string(), "status": string(enum=["stored", "failed"]), "study_instance_uid": NSTR,
        "series_instance_uid": NSTR, "sop_instance_uid": NSTR, "orthanc_instance_id": NSTR,
        "already_stored": {"type": "boolean"}, "error": NSTR,
    }),
    "UploadedStudy": obj({
        "study_instance_uid": string(), "orthanc_study_id": NSTR, "order_id": NSTR, "match": ref("UploadMatch"),
        "upload_status": string(enum=["success", "failed", "partial"]), "number_of_files": integer(),
        "upload_id": NSTR,
    }),
    "UploadSummary": obj({"total_files": integer(), "successful": integer(), "failed": integer(),
                          "results": array(ref("FileResult")), "studies": array(ref("UploadedStudy"))}),
    "Upload": obj({
        "status": string(enum=["uploaded"]), "already_stored": {"type": "boolean"}, "study_instance_uid": string(),
        "orthanc_study_id": NSTR, "series_instance_uid": NSTR, "sop_instance_uid": NSTR,
        "orthanc_instance_id": NSTR, "order_id": NSTR, "match": ref("UploadMatch"), "upload_id": NSTR,
    }),
    "ImageUpload": obj({
        "status": string(enum=["uploaded"]), "already_stored": {"type": "boolean"},
        "content_type": string(enum=["image/jpeg", "image/png", "application/pdf"]), "sop_class_uid": string(),
        "study_instance_uid": string(), "orthanc_study_id": NSTR, "series_instance_uid": NSTR,
        "sop_instance_uid": NSTR, "orthanc_instance_id": NSTR, "order_id": NSTR, "match": ref("UploadMatch"),
        "upload_id": NSTR,
    }),
    "UploadJobQueued": obj({"job_id": string("uuid"), "status": string(enum=["queued"]), "total_files": integer(),
                            "status_url": string()}),
    "UploadJob": obj({
        "job_id": string("uuid"), "status": string(enum=["queued", "running", "completed", "failed"]),
        "total_files": integer(), "processed_files": integer(), "successful": integer(), "failed": integer(),
        "error": NSTR, "created_at": string("date-time"), "finished_at": string("date-time", nullable=True),
        "results": array(ref("FileResult")),
    }, ["job_id", "status", "total_files", "processed_files", "successful", "failed", "error", "created_at",
        "finished_at"]),
    "UploadRow": obj({
        "id": string("uuid"), "patient_id": NSTR, "order_id": NSTR, "uploaded_by": NSTR,
        "study_instance_uid": string(), "orthanc_study_id": NSTR, "number_of_files": integer(),
        "total_size_bytes": integer(), "file_names": STRINGS,
        **{f"original_{name}": NSTR for name in ("patient_id", "patient_name", "accession_number", "study_date",
                                                 "modality")},
        **{f"modified_{name}": NSTR for name in ("patient_id", "patient_name", "accession_number")},
        "tags_modified": {"type": "boolean"}, "upload_status": string(enum=["success", "failed", "partial"]),
        "error_message": NSTR, "uploaded_at": string("date-time"), "upload_source": string(),
        "upload_duration_seconds": {"type": "number", "nullable": True}, "is_deleted": {"type": "boolean"},
    }),
    "OfflineStatus": obj({
        "upload_id": string("uuid"),
        "status": string(enum=["METADATA_UPLOADED", "STORED", "ACK_RECEIVED"]),
        "study_instance_uid": string(), "orthanc_instance_id": NSTR,
    }, ["upload_id", "status"]),
    "ValidationReport": obj({
        "is_valid": {"type": "boolean"}, "errors": STRINGS, "warnings": STRINGS, "transfer_syntax": NSTR,
        "sop_class_uid": NSTR, "modality": NSTR, "has_pixel_data": {"type": "boolean"},
        "file_size_bytes": integer(),
    }),
    "StudyTags": obj({
        "study_instance_uid": NSTR, "orthanc_study_id": NSTR,
        "patient": {"type": "object", "additionalProperties": NSTR},
        "study": {"type": "object", "additionalProperties": NSTR},
        "modalities": STRINGS, "number_of_series": integer(), "number_of_instances": integer(),
        "series": array(obj({"orthanc_series_id": NSTR, "number_of_instances": integer(), "SeriesInstanceUID": NSTR,
                             "SeriesNumber": NSTR, "SeriesDescription": NSTR, "Modality": NSTR},
                            additionalProperties=NSTR)),
    }),
    "AuditEvent": obj({
        "at": string("date-time"), "started_at": string("date-time"), "action": string(), "actor": NSTR,
        "patient_id": NSTR, "mrn": NSTR, "study_uid": NSTR, "order_id": NSTR, "details": ANY_OBJECT,
    }),
    "Deletion": obj({
        "deletion_id": string("uuid"), "study_instance_uid": string(), "orthanc_study_id": NSTR, "order_id": NSTR,
        "patient_id": NSTR, "patient_name": NSTR, "accession_number": NSTR,
        "number_of_series": integer(nullable=True), "number_of_instances": integer(nullable=True),
        "deleted_by": string(), "reason": string(), "deleted_at": string("date-time"),
        "deletion_request_id": string("uuid", nullable=True), "approved_by": NSTR,
        "restorable": {"type": "boolean"}, "kept_files": integer(),
        **{name: string("date-time", nullable=True) for name in ("files_kept_until", "purged_at", "restored_at")},
        "restored_by": NSTR,
    }),
    "DeletionRequest": obj({
        "deletion_request_id": string("uuid"), "status": string(enum=list(_DELETION_REQUEST_STATUSES)),
        "study_instance_uid": string(), "orthanc_study_id": NSTR, "patient_id": NSTR, "patient_name": NSTR,
        "accession_number": NSTR, "order_id": NSTR, "number_of_instances": integer(), "reason": string(),
        "requested_by": string(), "requested_at": string("date-time"), "expires_at": string("date-time"),
        "decided_by": NSTR, "decided_at": string("date-time", nullable=True), "decision_reason": NSTR,
        "deletion_id": string("uuid", nullable=True),
    }),
    "ViewerToken": obj(dict(_VIEWER_TOKEN)),
    "ViewerUrl": obj({"url": string(), "study_count": integer(), **_VIEWER_TOKEN}),
    # Signed image URLs: ``url`` opens one rendered image with no header until ``expires_at``; ``token_id`` is the
    # grant (revocable with viewer-token/revoke, counted in the viewer access audit).
    "ImageUrl": obj({"url": string(), "expires_at": string("date-time"), "token_id": string(),
                     "sop_instance_uid": string(), "study_instance_uid": string(),
                     "format": string(enum=["png", "jpeg"])}),
    "StudyImage": obj({"sop_instance_uid": string(), "orthanc_instance_id": string(),
                       "instance_number": integer(nullable=True), "frames": integer(), "url": NSTR}),
    "StudyImageSeries": obj({"series_instance_uid": string(), "orthanc_series_id": string(),
                             "series_number": integer(nullable=True), "modality": NSTR, "series_description": NSTR,
                             "number_of_instances": integer(), "instances": array(ref("StudyImage"))}),
    "StudyImages": obj({"study_instance_uid": string(), "orthanc_study_id": string(),
                        "format": string(enum=["png", "jpeg"]), "expires_at": string("date-time"),
                        "token_id": string(), "number_of_series": integer(), "number_of_instances": integer(),
                        "series": array(ref("StudyImageSeries"))}),
}

def _file_body(field_name: str, raw: list[str], extra: dict[str, Schema] | None = None, *,
               repeated: bool = False) -> dict[str, Schema]:
    """A file as a multipart field (the API port) or as the raw body (either port)."""
    part = array(BINARY) if repeated else BINARY
    form = obj({field_name: part, **(extra or {})}, [field_name])
    return {MULTIPART: form, **{media_type: BINARY for media_type in raw}}


@dataclass(frozen=True)
class Contract:
    """What one route answers on success (status -> media type -> schema) and the body it reads."""

    answers: dict[str, dict[str, Schema]]
    body: dict[str, Schema] = field(default_factory=dict)
    body_required: bool = False
    errors: dict[str, str] = field(default_factory=dict)  # what an error status means here (OpenAPI description)


def ok(schema: Schema, status: str = "200") -> dict[str, dict[str, Schema]]:
    return {status: {JSON: schema}}


def binary(*media_types: str) -> dict[str, dict[str, Schema]]:
    return {"200": {media_type: BINARY for media_type in media_types}}


_UPLOAD_OPTIONS = {"order_id": string(), "patient_id": string()}
_DICOM_RAW = [DICOM, "application/octet-stream"]
# Issue 11: a file that is not DICOM or cannot be read whole is a 400 ("invalid DICOM file", as the EHR's client
# expects); a readable DICOM file whose values are refused stays a 422.
_INVALID_DICOM = "an invalid DICOM file: not DICOM, or not readable whole (truncated, no Part 10 header)"
_STORAGE_FULL = "the database is unavailable, or the archive's storage is full and nothing was stored (Retry-After)"
_DICOM_FILE_ERRORS = {"400": f"{_INVALID_DICOM}; no file; a form that cannot be read",
                      "422": "a readable DICOM file whose values are refused (a UID missing, a bad option or value)",
                      "503": _STORAGE_FULL}
_PER_FILE_ERRORS = {"400": "no file, a form that cannot be read (an invalid DICOM file is reported per file in"
                           " `results`, as a 400 would be for it alone)",
                    "422": "a bad option; for upload-zip, a body that is not a ZIP archive", "503": _STORAGE_FULL}

# What each route answers and reads, referenced by its row in api/routes.py (the one list of routes).
HEALTH = Contract({**ok(ref("Health")), **ok(ref("Health"), "503")})
OPENAPI = Contract(ok(obj({"openapi": string(), "info": ANY_OBJECT, "paths": ANY_OBJECT,
                           "components": ANY_OBJECT})))
STATS = Contract(ok(ref("Stats")))
PUT_ORDER = Contract({**ok(ref("Order")), **ok(ref("Order"), "201")},
                     {JSON: ref("OrderInput")}, body_required=True)
ORDER = Contract(ok(ref("Order")))
LIST_ORDERS = Contract(ok(page("Order")))
LIST_UNMATCHED = Contract(ok(page("UnmatchedStudy")))
MATCH = Contract(ok(ref("Match")))
LINK = Contract(
    ok(obj({"status": string(enum=["linked"]), "study_instance_uid": string(), "order": nullable_ref("Order")})),
    {JSON: obj({"order_id": string(), "force": {"type": "boolean"}}, ["order_id"])}, body_required=True)
UNLINK = Contract(
    ok(obj({"status": string(enum=["unlinked"]), "study_instance_uid": string(), "order_id": string()})),
    {JSON: obj({"reason": NSTR}, [])})
UPLOAD = Contract(ok(ref("Upload")), _file_body("file", _DICOM_RAW, _UPLOAD_OPTIONS),
                  body_required=True, errors=_DICOM_FILE_ERRORS)
_IMAGE_FIELDS = {"order_id": string(), "patient_id": string(), "mrn": string(), "patient_family_name": string(),
                 "patient_given_name": string(), "birth_date": string("date"), "sex": string(enum=list(SEXES)),
                 "accession_number": string(), "description": string()}
UPLOAD_IMAGE = Contract(ok(ref("ImageUpload")),
                        _file_body("file", [JPEG, PNG, "application/pdf", "application/octet-stream"], _IMAGE_FIELDS),
                        body_required=True, errors={
                            "400": "not what it claims (by its first bytes), an image over MaxImageSizeMb or"
                                   " MaxImagePixels, a PDF that does not parse, or one Orthanc refuses; no file",
                            "404": "the order is unknown", "409": "the order is cancelled or has no MRN",
                            "413": "a file over MaxFileSizeMb", "415": "not a JPEG, PNG or PDF",
                            "422": "a bad patient field (mrn is required without order_id)"})
UPLOAD_MULTIPLE = Contract(ok(ref("UploadSummary")),
                           _file_body("files", _DICOM_RAW, _UPLOAD_OPTIONS, repeated=True),
                           body_required=True, errors=_PER_FILE_ERRORS)
UPLOAD_ZIP = Contract({**ok(ref("UploadSummary")), **ok(ref("UploadJobQueued"), "202")},
                      _file_body("file", [ZIP, "application/x-zip-compressed",
                                          "application/octet-stream"], _UPLOAD_OPTIONS),
                      body_required=True, errors=_PER_FILE_ERRORS)
UPLOAD_JOB = Contract(ok(ref("UploadJob")))
OFFLINE_METADATA = Contract(
    ok(ref("OfflineStatus")),
    {JSON: obj({"sop_instance_uid": string(), "series_instance_uid": string(), "study_instance_uid": string(),
                "size": integer(), "sha256": string(), "patient_id": NSTR, "order_id": NSTR, "file_name": NSTR},
               ["sop_instance_uid", "series_instance_uid", "study_instance_uid", "size", "sha256"])},
    body_required=True)
OFFLINE_BINARY = Contract(ok(ref("OfflineStatus")),
                          _file_body("file", [*_DICOM_RAW, JPEG, PNG, "application/pdf"],
                                     {"upload_id": string("uuid")}),
                          body_required=True, errors={
                              "400": f"{_INVALID_DICOM}; no file",
                              "422": "the bytes are not the declared file (size, sha256, UIDs), a UID missing"})
OFFLINE_ACK = Contract(ok(ref("OfflineStatus")),
                       {JSON: obj({"upload_id": string("uuid")})})
VALIDATE = Contract(ok(ref("ValidationReport")), _file_body("file", _DICOM_RAW),
                    body_required=True)
READ_TAGS = Contract(ok(obj({"tags": ANY_OBJECT})),
                     _file_body("file", _DICOM_RAW, {"all": {"type": "boolean"}}),
                     body_required=True, errors=_DICOM_FILE_ERRORS)
MODIFY_TAGS = Contract(binary(DICOM),
                       _file_body("file", _DICOM_RAW, {"changes": string(),
                                                       "remove_private_tags": {"type": "boolean"}}),
                       body_required=True, errors={"400": _DICOM_FILE_ERRORS["400"],
                                                   "422": "a tag that may not be changed, a bad value, nothing"
                                                          " to change"})
DEIDENTIFY = Contract(binary(DICOM, ZIP),
                      _file_body("files", _DICOM_RAW, {"patient_id": string(),
                                                       "patient_name": string(),
                                                       "accept_burned_in_annotation":
                                                           {"type": "boolean"}}, repeated=True),
                      body_required=True, errors={"400": f"{_INVALID_DICOM} (the detail names the file); no file",
                                                  "422": "pixels that may show identifying text, a bad option"})
STUDY_TAGS = Contract(ok(ref("StudyTags")))
LIST_STUDIES = Contract(ok(page("Study")))
STUDIES = Contract(ok(array(ref("Study"))))
GET_STUDY = Contract(ok(ref("Study")))
_DELETED = obj({"status": string(enum=["deleted"]), "study_instance_uid": string(), "orthanc_study_id": NSTR,
                "order_id": NSTR, "deleted_series": integer(), "deleted_instances": integer(), "reason": string(),
                "deleted_by": string(), "deletion_id": string("uuid"),
                "deletion_request_id": string("uuid", nullable=True), "approved_by": NSTR,
                "restorable": {"type": "boolean"}, "files_kept_until": string("date-time", nullable=True)})
# 202 with DeletionApproval 'required': the request (its "status" is "pending_approval" in this answer).
_PENDING = {**COMPONENTS["DeletionRequest"], "properties": {
    **COMPONENTS["DeletionRequest"]["properties"], "status": string(enum=["pending_approval"])}}
DELETE_STUDY = Contract({**ok(_DELETED), **ok(_PENDING, "202")}, {JSON: obj({"reason": string()})})
DELETION_REQUESTS = Contract(ok(page("DeletionRequest")))
APPROVE_DELETION = Contract(ok(_DELETED))
REJECT_DELETION = Contract(ok(ref("DeletionRequest")), {JSON: obj({"reason": string()})}, body_required=True)
DELETIONS = Contract(ok(page("Deletion")))
RESTORE_DELETION = Contract(ok(obj({
    "status": string(enum=["restored"]), "deletion_id": string("uuid"), "study_instance_uid": string(),
    "orthanc_study_id": NSTR, "restored_instances": integer(), "order_id": NSTR, "match": ref("UploadMatch"),
    "restored_by": NSTR, "restored_at": string("date-time", nullable=True)})))
PURGE_DELETIONS = Contract(ok(obj({"purged": integer(), "deletion_ids": array(string("uuid"))})))
DOWNLOAD = Contract(binary(ZIP))
THUMBNAIL = Contract(binary(PNG))
RENDER = Contract(binary(PNG, JPEG))
SUMMARY = Contract(
    ok(obj({"study_instance_uid": string(), "summary": string(),
            "structured_data": obj({"patient": ANY_OBJECT, "study": ANY_OBJECT, "technical": ANY_OBJECT}, [])})),
    {JSON: obj({name: {"type": "boolean"} for name in ("include_patient_info", "include_study_info",
            "include_technical_params")},
               [], additionalProperties=False)})
UPLOAD_PAGE = Contract(ok(page("UploadRow")))
# The audit timeline: a page of JSON, or (format=csv) the same rows as a CSV file.
AUDIT = Contract({"200": {JSON: page("AuditEvent"), CSV: {"type": "string"}}})
GET_UPLOAD = Contract(ok(ref("UploadRow")))
VIEWER_TOKEN = Contract(
    ok(ref("ViewerToken")),
    {JSON: obj({"study_uids": STRINGS, "order_id": string(), "patient_id": string(), "ttl_seconds": integer()},
               [], additionalProperties=False)}, body_required=True)
REVOKE = Contract(
    ok(obj({"status": string(enum=["revoked"]), "token_id": string(), "expires_at": string("date-time")})),
    {JSON: obj({"token": string(), "token_id": string(), "reason": NSTR}, [])}, body_required=True)
VIEWER_URL = Contract(ok(ref("ViewerUrl")))
STUDY_IMAGES = Contract(ok(ref("StudyImages")))
IMAGE_URL = Contract(ok(ref("ImageUrl")))
SIGNED_IMAGE = Contract(binary(PNG, JPEG))
# The admin session's browser routes: a redirect with a session cookie, and an empty answer.
LOGIN = Contract({"302": {}})
LOGOUT = Contract({"204": {}})
# IHE Invoke Image Display: a browser opens it; success is a redirect to OHIF, errors are readable pages.
INVOKE_IMAGE_DISPLAY = Contract({"302": {}}, errors={
    "400": "an IID request that breaks the profile's rules (an HTML page says which)",
    "404": "no stored study the caller may see matches the request (an HTML page)"})
