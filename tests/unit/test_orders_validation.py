"""Order validation (core.orders): every field's valid and invalid values, and the field an error names."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from ehr_imaging.core.orders import MODALITIES, ORDER_STATUSES, OrderValidationError, parse_order, validate_order_id

ORDER_ID = "ORD-2026-0001"


def payload(**changes: Any) -> dict[str, Any]:
    """The smallest valid order, with fields changed (a value of ``...`` removes the field)."""
    body: dict[str, Any] = {"accession_number": "ACC-1001", "mrn": "MRN-200001", "modality": "CT"}
    body.update(changes)
    return {key: value for key, value in body.items() if value is not ...}


def refused(body: Any, order_id: str = ORDER_ID) -> OrderValidationError:
    with pytest.raises(OrderValidationError) as caught:
        parse_order(order_id, body)
    return caught.value


# --- the whole order ---------------------------------------------------------------------------------------


def test_minimal_order_gets_defaults() -> None:
    order = parse_order(ORDER_ID, payload())
    assert order.order_id == ORDER_ID
    assert (order.accession_number, order.mrn, order.modality) == ("ACC-1001", "MRN-200001", "CT")
    assert order.status == "scheduled"
    optional = (order.patient_id, order.patient_family_name, order.patient_given_name, order.birth_date, order.sex,
                order.scheduled_start, order.description, order.referring_physician)
    assert optional == (None,) * len(optional)


def test_full_order_is_normalized() -> None:
    order = parse_order(ORDER_ID, {
        "order_id": ORDER_ID,
        "accession_number": "  ACC-1001 ",
        "mrn": "MRN-200001",
        "patient_id": "PID 42",
        "patient_family_name": "Müller",
        "patient_given_name": " Jürgen ",
        "birth_date": "1815-12-10",
        "sex": "F",
        "modality": "mr",
        "scheduled_start": "2026-03-10T09:30:00-05:00",
        "description": "MR brain w/o contrast",
        "referring_physician": "House^Gregory^^Dr",
        "status": "in-progress",
    })
    assert order.accession_number == "ACC-1001"
    assert order.patient_given_name == "Jürgen"
    assert order.birth_date == date(1815, 12, 10)
    assert order.modality == "MR"
    assert order.scheduled_start == datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
    assert order.referring_physician == "House^Gregory^^Dr"
    assert order.status == "in-progress"
    row = order.as_row()
    assert row["order_id"] == ORDER_ID
    assert row["patient_id"] == "PID 42"
    assert set(row) == {
        "order_id", "accession_number", "mrn", "patient_id", "patient_family_name", "patient_given_name",
        "birth_date", "sex", "modality", "scheduled_start", "description", "referring_physician", "status",
        "station_aet",
    }


def test_error_message_starts_with_the_field() -> None:
    error = refused(payload(sex="X"))
    assert error.field == "sex"
    assert str(error).startswith("sex: ")
    assert isinstance(error, ValueError)


def test_first_bad_field_is_named() -> None:
    assert refused(payload(accession_number="", mrn="")).field == "accession_number"


# --- order id (path) and body shape ------------------------------------------------------------------------


@pytest.mark.parametrize("order_id", ["A", "7", "ORD-1", "a.b_c:d-e", "0rder", "x" * 64, "ORD:2026.03_10-1"])
def test_valid_order_ids(order_id: str) -> None:
    assert validate_order_id(order_id) == order_id
    assert parse_order(order_id, payload()).order_id == order_id


@pytest.mark.parametrize(
    "order_id",
    ["", "-ORD", ".ORD", "_ORD", ":ORD", "x" * 65, "ORD 1", "ORD/1", "ORD\\1", "ORD#1", "ORD-1\n", "ÖRD", "ORD?x=1"],
)
def test_invalid_order_ids(order_id: str) -> None:
    with pytest.raises(OrderValidationError) as caught:
        validate_order_id(order_id)
    assert caught.value.field == "order_id"
    # parse_order checks the path first, whatever the body.
    assert refused(payload(), order_id).field == "order_id"
    assert refused(None, order_id).field == "order_id"


@pytest.mark.parametrize("body", [None, [], [["mrn", "X"]], "mrn=X", 42, 1.5, True])
def test_body_must_be_an_object(body: Any) -> None:
    assert refused(body).field == "body"


def test_order_id_in_body_must_equal_the_path() -> None:
    assert parse_order(ORDER_ID, payload(order_id=ORDER_ID)).order_id == ORDER_ID
    for other in ("ORD-2026-0002", ORDER_ID.lower(), "", None, 1):
        assert refused(payload(order_id=other)).field == "order_id"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"patientName": "X"}, "patientName"),
        ({"accession": "ACC-1"}, "accession"),
        ({"Modality": "CT"}, "Modality"),
        ({"study_instance_uid": "1.2.3"}, "study_instance_uid"),
        ({"zeta": 1, "alpha": 2}, "alpha"),
    ],
)
def test_unknown_fields_are_refused_by_name(extra: dict[str, Any], named: str) -> None:
    error = refused(payload(**extra))
    assert error.field == named
    assert "unknown" in str(error)


def test_unknown_field_is_reported_before_missing_ones() -> None:
    assert refused({"colour": "red"}).field == "colour"


# --- required fields ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["accession_number", "mrn", "modality"])
@pytest.mark.parametrize("value", [..., None, "", "   ", "\t"])
def test_required_fields(field: str, value: Any) -> None:
    error = refused(payload(**{field: value}))
    assert error.field == field
    assert "required" in str(error)


@pytest.mark.parametrize("field", ["accession_number", "mrn", "patient_id", "patient_family_name",
                                   "patient_given_name", "description", "referring_physician"])
@pytest.mark.parametrize("value", [123, 1.5, True, ["A"], {"v": "A"}])
def test_text_fields_must_be_strings(field: str, value: Any) -> None:
    assert refused(payload(**{field: value})).field == field


@pytest.mark.parametrize("field", ["patient_id", "patient_family_name", "patient_given_name", "description",
                                   "referring_physician"])
@pytest.mark.parametrize("value", [None, "", "  "])
def test_optional_text_fields_blank_is_absent(field: str, value: Any) -> None:
    assert getattr(parse_order(ORDER_ID, payload(**{field: value})), field) is None


# --- lengths -----------------------------------------------------------------------------------------------

LIMITS = [
    ("accession_number", 16),
    ("mrn", 64),
    ("patient_id", 64),
    ("patient_family_name", 64),
    ("patient_given_name", 64),
    ("referring_physician", 64),
    ("description", 1024),
]


@pytest.mark.parametrize(("field", "limit"), LIMITS)
def test_value_at_the_length_limit_is_accepted(field: str, limit: int) -> None:
    value = "A" * limit
    assert getattr(parse_order(ORDER_ID, payload(**{field: value})), field) == value
    # Surrounding blanks are stripped before the length is counted.
    assert getattr(parse_order(ORDER_ID, payload(**{field: f"  {value} "})), field) == value


@pytest.mark.parametrize(("field", "limit"), LIMITS)
def test_value_over_the_length_limit_is_refused(field: str, limit: int) -> None:
    error = refused(payload(**{field: "A" * (limit + 1)}))
    assert error.field == field
    assert str(limit) in str(error)


def test_length_counts_characters_not_bytes() -> None:
    name = "Ü" * 64  # 128 bytes in UTF-8
    assert parse_order(ORDER_ID, payload(patient_family_name=name)).patient_family_name == name


# --- character rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["accession_number", "mrn"])
@pytest.mark.parametrize("value", ["A1", "ACC-2026/03#7", "!~", "a.b_c:d", "X" * 16])
def test_identifiers_accept_printable_ascii(field: str, value: str) -> None:
    assert getattr(parse_order(ORDER_ID, payload(**{field: value})), field) == value


@pytest.mark.parametrize("field", ["accession_number", "mrn"])
@pytest.mark.parametrize("value", ["ACC 1", "ACC\u00a01", "ÄCC1", "ACC€", "ACC\x7f", "ACC\u200b1"])
def test_identifiers_refuse_spaces_and_non_ascii(field: str, value: str) -> None:
    error = refused(payload(**{field: value}))
    assert error.field == field


TEXT_FIELDS = ["accession_number", "mrn", "patient_id", "patient_family_name", "patient_given_name",
               "description", "referring_physician"]


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("value", ["A\\B", "\\", "A\x00B", "A\x1bB", "A\nB", "A\rB", "A\tB", "A\x01"])
def test_backslash_and_control_characters_are_refused(field: str, value: str) -> None:
    error = refused(payload(**{field: value}))
    assert error.field == field
    assert "backslash or control" in str(error)


@pytest.mark.parametrize("field", ["patient_family_name", "patient_given_name"])
@pytest.mark.parametrize("value", ["Doe^John", "^", "Doe^", "^John"])
def test_caret_is_refused_in_patient_names(field: str, value: str) -> None:
    error = refused(payload(**{field: value}))
    assert error.field == field
    assert "^" in str(error)


@pytest.mark.parametrize("value", ["Smith^John", "Smith^John^A^Dr^MD", "^Jane", "Smith"])
def test_caret_is_allowed_in_referring_physician(value: str) -> None:
    assert parse_order(ORDER_ID, payload(referring_physician=value)).referring_physician == value


@pytest.mark.parametrize("value", ["van der Berg", "O'Brien", "Müller-Lüdenscheidt", "Zoë", "山田", "Nguyễn"])
def test_patient_names_accept_spaces_and_unicode(value: str) -> None:
    order = parse_order(ORDER_ID, payload(patient_family_name=value, patient_given_name=value))
    assert (order.patient_family_name, order.patient_given_name) == (value, value)


# --- sex, status, modality ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sex", ["M", "F", "O"])
def test_valid_sex(sex: str) -> None:
    assert parse_order(ORDER_ID, payload(sex=sex)).sex == sex


def test_sex_absent_is_none() -> None:
    assert parse_order(ORDER_ID, payload(sex=None)).sex is None


@pytest.mark.parametrize("sex", ["m", "f", "X", "U", "", "Male", " M", 1, ["M"]])
def test_invalid_sex(sex: Any) -> None:
    assert refused(payload(sex=sex)).field == "sex"


@pytest.mark.parametrize("status", ORDER_STATUSES)
def test_valid_status(status: str) -> None:
    assert parse_order(ORDER_ID, payload(status=status)).status == status


@pytest.mark.parametrize("status", [..., None])
def test_status_defaults_to_scheduled(status: Any) -> None:
    assert parse_order(ORDER_ID, payload(status=status)).status == "scheduled"


@pytest.mark.parametrize("status", ["Scheduled", "in_progress", "canceled", "done", "", 0])
def test_invalid_status(status: Any) -> None:
    assert refused(payload(status=status)).field == "status"


@pytest.mark.parametrize("modality", sorted(MODALITIES))
def test_every_known_modality_is_accepted_in_any_case(modality: str) -> None:
    assert parse_order(ORDER_ID, payload(modality=modality)).modality == modality
    assert parse_order(ORDER_ID, payload(modality=modality.lower())).modality == modality
    assert parse_order(ORDER_ID, payload(modality=f" {modality.title()} ")).modality == modality


@pytest.mark.parametrize("modality", ["XX", "MRI", "C T", "CTX", "SR", "PR", "KO", "ct,mr", 7, ["CT"]])
def test_unknown_modality_is_refused(modality: Any) -> None:
    assert refused(payload(modality=modality)).field == "modality"


# --- dates and times ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1815-12-10", date(1815, 12, 10)), ("2024-02-29", date(2024, 2, 29)), ("2000-01-01", date(2000, 1, 1)),
     ("1999-12-31", date(1999, 12, 31))],
)
def test_valid_birth_dates(value: str, expected: date) -> None:
    assert parse_order(ORDER_ID, payload(birth_date=value)).birth_date == expected


@pytest.mark.parametrize(
    "value",
    [
        "2023-02-29", "2026-13-01", "2026-00-10", "2026-04-31", "2026-01-00",  # shaped right, not real dates
        "20261120", "2026-1-5", "26-11-20", "2026/11/20", "10.12.1815", "2026-11-20T00:00", " 2026-11-20",
        "2026-11-20Z", "２０２６-１１-２０", "", "yesterday", 20261120, ["2026-11-20"],
    ],
)
def test_invalid_birth_dates(value: Any) -> None:
    assert refused(payload(birth_date=value)).field == "birth_date"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-10T09:30:00+00:00", datetime(2026, 3, 10, 9, 30, tzinfo=UTC)),
        ("2026-03-10T09:30:00Z", datetime(2026, 3, 10, 9, 30, tzinfo=UTC)),
        ("2026-03-10T09:30:00-05:00", datetime(2026, 3, 10, 14, 30, tzinfo=UTC)),
        ("2026-03-10T09:30:00.250+01:00", datetime(2026, 3, 10, 8, 30, 0, 250000, tzinfo=UTC)),
        ("2026-03-10T09:30", datetime(2026, 3, 10, 9, 30, tzinfo=UTC)),
        ("2026-03-10 09:30:15", datetime(2026, 3, 10, 9, 30, 15, tzinfo=UTC)),
    ],
)
def test_valid_scheduled_start(value: str, expected: datetime) -> None:
    start = parse_order(ORDER_ID, payload(scheduled_start=value)).scheduled_start
    assert start is not None
    assert start.tzinfo is not None
    assert start == expected


def test_scheduled_start_keeps_its_offset() -> None:
    start = parse_order(ORDER_ID, payload(scheduled_start="2026-03-10T09:30:00-05:00")).scheduled_start
    assert start is not None
    assert start.utcoffset() == timedelta(hours=-5)
    assert start.tzinfo == timezone(timedelta(hours=-5))


def test_naive_scheduled_start_is_taken_as_utc() -> None:
    start = parse_order(ORDER_ID, payload(scheduled_start="2026-03-10T09:30:00")).scheduled_start
    assert start is not None
    assert start.tzinfo is UTC
    assert (start.hour, start.minute) == (9, 30)


def test_scheduled_start_absent_is_none() -> None:
    assert parse_order(ORDER_ID, payload(scheduled_start=None)).scheduled_start is None


@pytest.mark.parametrize(
    "value",
    ["tomorrow", "2026-03-10T25:00", "2026-13-01T09:00", "2026-02-30T10:00", "2026-03-10T09:30+25:00",
     "10/03/2026 09:30", "", 1773135000, 1773135000.0, ["2026-03-10T09:30"]],
)
def test_invalid_scheduled_start(value: Any) -> None:
    assert refused(payload(scheduled_start=value)).field == "scheduled_start"


# --- station_aet: which modality's worklist shows the order ----------------------------------------------------


@pytest.mark.parametrize(("value", "stored"), [("CT1", "CT1"), ("  MR_ROOM 2 ", "MR_ROOM 2"), ("A" * 16, "A" * 16),
                                               (None, None), ("", None), ("   ", None)])
def test_station_aet_is_an_ae_title(value: Any, stored: str | None) -> None:
    assert parse_order(ORDER_ID, payload(station_aet=value)).station_aet == stored


@pytest.mark.parametrize("value", ["A" * 17, "CT\\1", "CT\n1", "RÖNTGEN", 42, ["CT1"]])
def test_station_aet_that_is_no_ae_title_is_refused(value: Any) -> None:
    error = refused(payload(station_aet=value))
    assert error.field == "station_aet"
    assert "AE title" in str(error)


@pytest.mark.parametrize(("current", "to", "moves"), [
    ("scheduled", "in-progress", True), ("scheduled", "completed", True), ("in-progress", "completed", True),
    ("in-progress", "in-progress", False), ("completed", "in-progress", False), ("completed", "scheduled", False),
    ("cancelled", "in-progress", False), ("cancelled", "completed", False), ("unknown", "completed", False),
])
def test_the_images_move_an_order_forward_only_and_never_a_cancelled_one(current: str, to: str, moves: bool) -> None:
    from ehr_imaging.core.orders import status_moves_forward

    assert status_moves_forward(current, to) is moves
