"""Imaging orders as the EHR sends them: validation and normalization (pure).

Field limits follow the DICOM value representations the fields end up in (worklist answers, tag
coercion): AccessionNumber is SH (16 chars), PatientID LO (64), names PN components (64).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from .dicom_values import SEXES
from .errors import FieldError

SCHEDULED, IN_PROGRESS, COMPLETED, CANCELLED = "scheduled", "in-progress", "completed", "cancelled"
ORDER_STATUSES = (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELLED)
# Where the images take an order (OrderStatusUpdates): forward only, and never a cancelled order.
_STATUS_RANK = {SCHEDULED: 0, IN_PROGRESS: 1, COMPLETED: 2}


def status_moves_forward(current: str, to: str) -> bool:
    """Whether the images may move an order from ``current`` to ``to``: scheduled -> in-progress -> completed,
    never back, never a cancelled (or unknown) status."""
    return current in _STATUS_RANK and to in _STATUS_RANK and _STATUS_RANK[to] > _STATUS_RANK[current]
OPEN_STATUSES = ("scheduled", "in-progress")
# DICOM defined terms for (0008,0060) Modality that an order can request.
MODALITIES = frozenset({
    "CR", "CT", "DX", "ECG", "ES", "GM", "IO", "IVUS", "MG", "MR", "NM", "OCT", "OP", "OT", "PT", "PX",
    "RF", "RG", "SM", "US", "XA", "XC",
})
ORDER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# A DICOM AE title (VR AE): 1-16 printable ASCII characters, no backslash; spaces around it are not significant.
AE_TITLE_PATTERN = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")
_DICOM_TEXT_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f-\x9f]")


class OrderValidationError(FieldError):
    """An order field is invalid; ``field`` names it for the 422 answer."""


@dataclass(frozen=True)
class OrderInput:
    order_id: str
    accession_number: str
    mrn: str
    patient_id: str | None
    patient_family_name: str | None
    patient_given_name: str | None
    birth_date: date | None
    sex: str | None
    modality: str
    scheduled_start: datetime | None
    description: str | None
    referring_physician: str | None
    status: str
    station_aet: str | None = None  # the modality whose worklist shows this order (Scheduled Station AE Title)

    def as_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


_FIELDS = (
    "accession_number", "patient_id", "mrn", "patient_family_name", "patient_given_name", "birth_date", "sex",
    "modality", "scheduled_start", "description", "referring_physician", "status", "station_aet",
)


def person_name(order: Mapping[str, Any]) -> str:
    """DICOM PN ``Family^Given`` from an order; a given name alone stays in its component (``^Jan``)."""
    family = order.get("patient_family_name") or ""
    given = order.get("patient_given_name") or ""
    return f"{family}^{given}" if given else family


def validate_order_id(order_id: str) -> str:
    if not ORDER_ID_PATTERN.fullmatch(order_id):
        raise OrderValidationError("order_id", "1-64 characters: letters, digits, '.', '_', ':', '-'")
    return order_id


def parse_order(order_id: str, payload: Any) -> OrderInput:
    """Validate an order pushed by the EHR; raise ``OrderValidationError`` naming the first bad field."""
    validate_order_id(order_id)
    if not isinstance(payload, dict):
        raise OrderValidationError("body", "must be a JSON object")
    unknown = sorted(set(payload) - set(_FIELDS) - {"order_id"})
    if unknown:
        raise OrderValidationError(unknown[0], "unknown field")
    if "order_id" in payload and payload["order_id"] != order_id:
        raise OrderValidationError("order_id", "differs from the order id in the path")
    return OrderInput(
        order_id=order_id,
        accession_number=_text(payload, "accession_number", 16, required=True, identifier=True) or "",
        mrn=_text(payload, "mrn", 64, required=True, identifier=True) or "",
        patient_id=_text(payload, "patient_id", 64),
        patient_family_name=_text(payload, "patient_family_name", 64, name=True),
        patient_given_name=_text(payload, "patient_given_name", 64, name=True),
        birth_date=_date(payload, "birth_date"),
        sex=_choice(payload, "sex", SEXES),
        modality=_modality(payload),
        scheduled_start=_datetime(payload, "scheduled_start"),
        description=_text(payload, "description", 1024),
        referring_physician=_text(payload, "referring_physician", 64),  # a DICOM PN: "^" allowed
        status=_choice(payload, "status", ORDER_STATUSES) or "scheduled",
        station_aet=_ae_title(payload, "station_aet"),
    )


def _text(payload: dict[str, Any], field: str, max_length: int, *, required: bool = False,
          identifier: bool = False, name: bool = False) -> str | None:
    value = payload.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise OrderValidationError(field, "is required")
        return None
    if not isinstance(value, str):
        raise OrderValidationError(field, "must be a string")
    value = value.strip()
    if len(value) > max_length:
        raise OrderValidationError(field, f"longer than {max_length} characters")
    if _DICOM_TEXT_FORBIDDEN.search(value):
        raise OrderValidationError(field, "contains a backslash or control character")
    if identifier and not re.fullmatch(r"[\x21-\x7e]+", value):
        raise OrderValidationError(field, "must be printable ASCII without spaces")
    if name and ("^" in value or "=" in value):
        raise OrderValidationError(field, "must not contain '^' or '=' (DICOM name separators)")
    return value


def ae_title(value: str) -> str | None:
    """A DICOM AE title without its insignificant spaces, or None when it is not one."""
    text = value.strip()
    return text if AE_TITLE_PATTERN.fullmatch(text) else None


def _ae_title(payload: dict[str, Any], field: str) -> str | None:
    value = payload.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None  # no station: the worklist's fallback applies (README)
    if not isinstance(value, str) or ae_title(value) is None:
        raise OrderValidationError(field, "must be a DICOM AE title: 1-16 printable ASCII characters, no backslash")
    return ae_title(value)


def _choice(payload: dict[str, Any], field: str, allowed: tuple[str, ...]) -> str | None:
    value = payload.get(field)
    if value is None:
        return None
    if value not in allowed:
        raise OrderValidationError(field, f"must be one of {', '.join(allowed)}")
    return str(value)


def _modality(payload: dict[str, Any]) -> str:
    value = payload.get("modality")
    if not isinstance(value, str) or not value.strip():
        raise OrderValidationError("modality", "is required")
    code = value.strip().upper()
    if code not in MODALITIES:
        raise OrderValidationError("modality", f"unknown DICOM modality {value!r}")
    return code


def _date(payload: dict[str, Any], field: str) -> date | None:
    value = payload.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise OrderValidationError(field, "must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise OrderValidationError(field, "is not a valid date") from None


def _datetime(payload: dict[str, Any], field: str) -> datetime | None:
    """ISO 8601; a time without offset is taken as UTC (documented)."""
    value = payload.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise OrderValidationError(field, "must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise OrderValidationError(field, "is not an ISO 8601 date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
