"""A photo (JPEG, PNG) or a document (PDF) made DICOM by Orthanc and stored like any upload.

The bytes are checked first (core/captured_media.py: what they claim by their magic bytes, image size and
dimensions, a PDF's structure). The patient and study come from the order (``order_id``: its MRN, name,
birth date, sex, accession; the study it is linked to, when Orthanc still has it, else a new study) or from
the request's patient fields (a new study). Orthanc's ``/tools/create-dicom`` builds and stores the instance
in process, inside a ``Batch``: the study is held, recorded, matched (the order as the explicit rule) and
audited once, exactly as for a DICOM file. Anything refused stores nothing and leaves a failed audit row
(the caller's ``Batch.fail`` or the handler's refusal).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydicom import Dataset
from pydicom.uid import generate_uid

from ...core import captured_media as media
from ...core import errors
from ...core.dicom_values import parse_da
from ...core.orders import OrderValidationError, person_name
from ...services import Services
from ...store import orders
from .batch import Batch, FileResult, UploadRejected

TITLES = {True: "Clinical photograph", False: "Scanned document"}
CAPTURE_FIELDS = ("mrn", "patient_family_name", "patient_given_name", "birth_date", "sex", "accession_number",
          "description")


@dataclass(frozen=True)
class Capture:
    """One photo or document to store: its bytes, what the sender says it is, and for whom."""

    file_name: str
    data: bytes
    claimed: str  # a media type of core.captured_media.MEDIA_TYPES
    order_id: str | None = None
    fields: Mapping[str, str | None] = field(default_factory=dict)  # patient fields, description (no order)
    uids: tuple[str, str, str] | None = None  # study, series, SOP: what an offline declaration fixed


def check_capture(services: Services, capture: Capture) -> media.Media:
    """The bytes are what they claim (400 otherwise)."""
    settings = services.settings
    try:
        return media.check(capture.data, capture.claimed, max_image_bytes=settings.MaxImageSizeMb * 1024 * 1024,
                           max_pixels=settings.MaxImagePixels)
    except media.MediaError as exc:
        raise UploadRejected(errors.Malformed, f"{capture.file_name}: {exc}") from None


def store_capture(services: Services, batch: Batch, capture: Capture) -> FileResult:
    """Check, build and store one capture in ``batch``; a refusal before Orthanc is an ``UploadRejected``,
    Orthanc's own refusal a failed result (as for a file)."""
    found = check_capture(services, capture)
    patient, study = _subject(services, capture)
    study_uid, series_uid, sop_uid = capture.uids or (study.study_instance_uid, generate_uid(None),
                                                      generate_uid(None))
    if study_uid != study.study_instance_uid:  # offline: the declared study is the one it goes to
        study = media.StudyModule(study_uid, study.accession_number, study.description, study.referring_physician)
    title = _text(capture.fields, "description", 64) or TITLES[found.is_image]
    now = datetime.now(ZoneInfo(services.settings.Timezone))
    tags = media.creation_tags(found, patient, study, series_uid=series_uid, sop_uid=sop_uid, now=now, title=title)
    body = media.request_body(tags, media.data_uri(found.media_type, base64.b64encode(capture.data).decode()))
    header = Dataset()
    header.PatientID, header.StudyInstanceUID = patient.patient_id, study_uid
    header.SeriesInstanceUID, header.SOPInstanceUID = series_uid, sop_uid

    def create() -> Any:
        return services.pacs.post_json("/tools/create-dicom", body)

    return batch.add_created(capture.file_name, len(capture.data), header, create)


def _subject(services: Services, capture: Capture) -> tuple[media.Patient, media.StudyModule]:
    """Whose it is and which study it joins: the order's (and its linked study's), or the request's fields."""
    if capture.order_id is None:
        try:
            patient = media.parse_patient(dict(capture.fields))
            accession = media.parse_text(dict(capture.fields), "accession_number", 16, identifier=True)
        except OrderValidationError as exc:
            raise UploadRejected(errors.Invalid, str(exc)) from None
        return patient, media.StudyModule(generate_uid(None), accession, _text(capture.fields, "description", 64))
    order = orders.get(services.engine, capture.order_id)
    if order is None:
        raise UploadRejected(errors.NotFound, f"order {capture.order_id} not found")
    if order.status == "cancelled":  # a completed order's study takes more photos and documents
        raise UploadRejected(errors.Conflict, f"order {capture.order_id} is {order.status}")
    patient = media.Patient(order.mrn or "", person_name(order.fields()), order.birth_date, order.sex)
    if not patient.patient_id:
        raise UploadRejected(errors.Conflict, f"order {capture.order_id} has no MRN")
    linked = _linked_study(services, order.orthanc_study_id)
    if linked is not None:
        return linked
    return patient, media.StudyModule(generate_uid(None), order.accession_number or "", order.description or "",
                                      order.referring_physician or "")


def _linked_study(services: Services, orthanc_study_id: str | None) -> tuple[media.Patient, media.StudyModule] | None:
    """The patient and study modules of the study the order is linked to, as Orthanc holds them (so the new
    instance joins it unchanged), or None when there is none any more."""
    if not orthanc_study_id:
        return None
    try:
        study = services.pacs.get_json(f"/studies/{orthanc_study_id}")
    except errors.NotFound:
        return None
    tags: dict[str, str] = {**study.get("PatientMainDicomTags", {}), **study.get("MainDicomTags", {})}
    uid = tags.get("StudyInstanceUID", "")
    if not uid:
        return None
    birth = tags.get("PatientBirthDate") or None
    patient = media.Patient(tags.get("PatientID", ""), tags.get("PatientName", ""), parse_da(birth),
                            tags.get("PatientSex") or None)
    return patient, media.StudyModule(uid, tags.get("AccessionNumber", ""), tags.get("StudyDescription", ""),
                                      tags.get("ReferringPhysicianName", ""), tags.get("StudyDate", ""),
                                      tags.get("StudyTime", ""), tags.get("StudyID", ""))


def _text(fields: Mapping[str, str | None], name: str, max_length: int) -> str:
    try:
        return media.parse_text(dict(fields), name, max_length)
    except OrderValidationError as exc:
        raise UploadRejected(errors.Invalid, str(exc)) from None
