"""Tags: validate a file, read its tags, change a few of them (audited), de-identify files, and the main tags of
a stored study. The DICOM work is pydicom's, in core/ (dicom_file, file_validation, tag_reading, tag_changes,
deidentify); files sent here are never stored.

Files come as the multipart field ``file`` (``files``, repeated, for deidentify) on the plugin's API port, or as
the raw body (``Content-Type: application/dicom``) on either port; options as form fields, query parameters
or ``X-<Name>`` headers (see ``Request.option``). A file that is not DICOM, or cannot be read whole, is a
``Malformed`` request (400); a readable file whose values are refused is ``Invalid`` (422).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..app import images
from ..core import deid_table, dicom_file, errors, file_validation, tag_changes, tag_reading
from ..core import deidentify as deidentification
from ..core.dicom_values import is_uid
from ..services import Services
from ..store import tag_edits
from .context import Api
from .router import Request, Response, UploadedFile, json_response
from .validation import query_bool

DICOM = "application/dicom"
# Form fields of modify-tags that are not tag changes.
MODIFY_OPTIONS = frozenset({"changes", "tags", "remove_private_tags"})
# BurnedInAnnotation of the files de-identified: YES if any file says YES, else UNKNOWN if any lacks it, else NO.
BURNED_IN_HEADER = "X-Burned-In-Annotation"


def validate(api: Api, request: Request) -> Response:
    """Validate a DICOM file (not stored): errors, warnings, transfer syntax, SOP class, modality."""
    upload = _one_file(api.services, request)
    with upload.open() as stream:
        report = file_validation.validate(stream)
    return json_response({**report, "file_size_bytes": upload.size})


def read_tags(api: Api, request: Request) -> Response:
    """Read a DICOM file's main tags, or all of them with all=true (the file is not stored)."""
    upload = _one_file(api.services, request)
    everything = _flag(request, "all")
    parsed = _read(upload)
    found = tag_reading.all_tags(parsed.dataset) if everything else tag_reading.main_tags(parsed.dataset)
    return json_response({"tags": found})


def modify_tags(api: Api, request: Request) -> Response:
    """Change patient/study tags of a DICOM file (UIDs never) and return it; every change is audited."""
    upload = _one_file(api.services, request)
    principal = request.principal
    assert principal is not None
    changes = _changes(request)
    try:
        with upload.open() as stream:
            modified = tag_changes.modify_tags(stream, changes,
                                               remove_private_tags=_flag(request, "remove_private_tags"))
    except tag_changes.TagChangeError as exc:
        raise errors.Invalid(str(exc)) from None
    except dicom_file.DicomFileError as exc:
        raise errors.Malformed(f"{upload.filename}: {exc}") from None
    # Audited before the file leaves: no unaudited change is ever handed out.
    audit_id = tag_edits.record(
        api.services.engine, edited_by=principal.subject, sop_instance_uid=modified.sop_instance_uid,
        study_instance_uid=modified.study_instance_uid, file_name=upload.filename, original=modified.original,
        new=modified.new, removed_private_tags=_flag(request, "remove_private_tags"),
        private_tags_removed=modified.private_tags_removed)
    return Response(body=modified.data, content_type=DICOM, headers={
        "Content-Disposition": f'attachment; filename="modified_{_safe_name(upload.filename)}"',
        "X-Tag-Edit-Audit-Id": str(audit_id),
    })


def deidentify(api: Api, request: Request) -> Response:
    """De-identify DICOM files (PS3.15 basic profile, UIDs replaced consistently); one file, or a ZIP.
    Files whose pixels may show identifying text (BurnedInAnnotation YES, or absent on ultrasound and
    captures) are refused unless ``accept_burned_in_annotation`` is true; the answer's headers tell the
    verdict, the profile and the action table used."""
    uploads = _files_of(api.services, request, "files", "file")
    accept = _flag(request, "accept_burned_in_annotation")
    mapper = deidentification.UidMapper()
    results: list[tuple[str, bytes]] = []
    verdicts: list[str] = []
    for index, upload in enumerate(uploads):
        try:
            with upload.open() as stream:
                done = deidentification.deidentify(stream, mapper, patient_id=request.option("patient_id"),
                                                   patient_name=request.option("patient_name"),
                                                   accept_burned_in_annotation=accept)
        except tag_changes.TagChangeError as exc:
            raise errors.Invalid(str(exc)) from None
        except dicom_file.DicomFileError as exc:
            raise errors.Malformed(f"file {index + 1} ({upload.filename}): {exc}") from None
        except deidentification.BurnedInAnnotationError as exc:
            raise errors.Invalid(f"file {index + 1} ({upload.filename}): {exc}",
                                 {BURNED_IN_HEADER: exc.burned_in_annotation}) from None
        results.append((_unique(f"{done.sop_instance_uid or index}.dcm", results), done.data))
        verdicts.append(done.burned_in_annotation)
    headers = {BURNED_IN_HEADER: _worst(verdicts), "X-Deidentification-Profile": deid_table.PROFILE,
               "X-Deidentification-Table": deid_table.TABLE_SOURCE}
    if len(results) == 1:
        name, data = results[0]
        return Response(body=data, content_type=DICOM,
                        headers={**headers, "Content-Disposition": f'attachment; filename="{name}"'})
    return Response(body=deidentification.zip_files(results), content_type="application/zip",
                    headers={**headers, "Content-Disposition": 'attachment; filename="deidentified.zip"'})


def study_tags(api: Api, request: Request) -> Response:
    """The main tags of a stored study: patient, study, and its series with modality and counts."""
    study_uid = request.params["study_uid"]
    if not is_uid(study_uid):
        raise errors.Malformed("study_uid: not a DICOM UID")
    return json_response(images.study_tags(api.services, study_uid))


def _files_of(services: Services, request: Request, *fields: str) -> list[UploadedFile]:
    max_bytes = services.settings.MaxFileSizeMb * 1024 * 1024
    found = [f for name in fields for f in request.uploaded_files(name)]
    if not request.files:
        found = found[:1]  # a raw body is the one file, whichever field is asked for
    if not found:
        raise errors.Malformed(f"send the DICOM file as the multipart field '{fields[0]}', or as the body with"
                               f" Content-Type: {DICOM}")
    if len(found) > services.settings.MaxFilesPerUpload:
        raise errors.TooLarge(f"{len(found)} files; at most {services.settings.MaxFilesPerUpload} per request")
    for upload in found:
        if upload.size > max_bytes:
            raise errors.TooLarge(f"{upload.filename}: file larger than {services.settings.MaxFileSizeMb} MB")
    return found


def _one_file(services: Services, request: Request) -> UploadedFile:
    found = _files_of(services, request, "file")
    if len(found) != 1:
        raise errors.Malformed("send exactly one file in the field 'file'")
    return found[0]


def _read(upload: UploadedFile) -> dicom_file.ParsedFile:
    try:
        with upload.open() as stream:
            return dicom_file.read_complete(stream)
    except dicom_file.DicomFileError as exc:
        raise errors.Malformed(f"{upload.filename}: {exc}") from None


def _flag(request: Request, name: str) -> bool:
    return bool(query_bool({name: request.option(name) or ""}, name))


def _changes(request: Request) -> dict[str, Any]:
    """Tag changes: a JSON object in the field ``changes`` (or ``tags``; header ``X-Changes`` on Orthanc's
    port), plus any other form field named after a tag."""
    changes: dict[str, Any] = {}
    raw = request.option("changes") or request.option("tags")
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise errors.Invalid("changes: must be a JSON object") from None
        if not isinstance(parsed, dict):
            raise errors.Invalid("changes: must be a JSON object")
        changes.update(parsed)
    changes.update({name: value for name, value in request.form.items() if name not in MODIFY_OPTIONS})
    return changes


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:128] or "file.dcm"


def _worst(verdicts: list[str]) -> str:
    for verdict in (deidentification.YES, deidentification.UNKNOWN):
        if verdict in verdicts:
            return verdict
    return deidentification.NO


def _unique(name: str, taken: list[tuple[str, bytes]]) -> str:
    names = {existing for existing, _ in taken}
    candidate, n = name, 1
    while candidate in names:
        n += 1
        candidate = f"{name.removesuffix('.dcm')}-{n}.dcm"
    return candidate
