"""Tag coercion (core.coercion): the tags an order implies, and only those that differ from the study's."""

from __future__ import annotations

import pytest

from ehr_imaging.core.coercion import COERCED_TAGS, order_tags, tag_changes

ORDER: dict[str, str | None] = {
    "order_id": "ORD-1",
    "mrn": "MRN-200001",
    "accession_number": "ACC-1001",
    "patient_family_name": "Lovelace",
    "patient_given_name": "Ada",
    "modality": "CT",
}
AGREEING: dict[str, str | None] = {"PatientID": "MRN-200001", "PatientName": "Lovelace^Ada",
                                   "AccessionNumber": "ACC-1001"}


def with_order(**changes: str | None) -> dict[str, str | None]:
    return {**ORDER, **changes}


# --- order_tags --------------------------------------------------------------------------------------------


def test_order_tags_for_a_full_order() -> None:
    assert order_tags(ORDER) == AGREEING
    assert set(order_tags(ORDER)) == set(COERCED_TAGS)


@pytest.mark.parametrize(
    ("family", "given", "expected"),
    [("Lovelace", "Ada", "Lovelace^Ada"), ("Müller", "Jürgen", "Müller^Jürgen"), ("Lovelace", None, "Lovelace"),
     ("Lovelace", "", "Lovelace"), ("van der Berg", "Jan Piet", "van der Berg^Jan Piet")],
)
def test_names_are_joined_with_a_caret(family: str, given: str | None, expected: str) -> None:
    assert order_tags(with_order(patient_family_name=family, patient_given_name=given))["PatientName"] == expected


@pytest.mark.parametrize("blank", [None, ""])
def test_tags_the_order_says_nothing_about_are_absent(blank: str | None) -> None:
    assert "PatientName" not in order_tags(with_order(patient_family_name=blank, patient_given_name=blank))
    assert "PatientID" not in order_tags(with_order(mrn=blank))
    assert "AccessionNumber" not in order_tags(with_order(accession_number=blank))
    assert order_tags({}) == {}


def test_order_tags_ignore_other_order_fields() -> None:
    assert order_tags(with_order(patient_id="PID-7", description="x", sex="F")) == AGREEING


# --- tag_changes -------------------------------------------------------------------------------------------


def test_no_change_when_the_study_agrees() -> None:
    assert tag_changes(AGREEING, ORDER) == {}


def test_dicom_padding_is_ignored() -> None:
    padded = {"PatientID": "MRN-200001 ", "PatientName": "Lovelace^Ada ", "AccessionNumber": "ACC-1001 "}
    assert tag_changes(padded, ORDER) == {}


@pytest.mark.parametrize(
    ("tag", "current", "wanted"),
    [
        ("PatientID", "TMP-0001", "MRN-200001"),
        ("PatientName", "LOVELACE^ADA", "Lovelace^Ada"),  # case matters
        ("PatientName", "Ada^Lovelace", "Lovelace^Ada"),
        ("AccessionNumber", "ACC-1002", "ACC-1001"),
        ("AccessionNumber", "", "ACC-1001"),
        ("AccessionNumber", None, "ACC-1001"),
    ],
)
def test_only_the_differing_tag_changes(tag: str, current: str | None, wanted: str) -> None:
    assert tag_changes({**AGREEING, tag: current}, ORDER) == {tag: wanted}


def test_tag_missing_from_the_study_is_set() -> None:
    # Absent from the shared tags (it differs between instances): every tag the order has must be written.
    assert tag_changes({}, ORDER) == AGREEING
    assert tag_changes({"PatientID": "MRN-200001"}, ORDER) == {"PatientName": "Lovelace^Ada",
                                                                 "AccessionNumber": "ACC-1001"}


def test_all_tags_differing() -> None:
    current = {"PatientID": "X", "PatientName": "Doe^John", "AccessionNumber": "Y"}
    assert tag_changes(current, ORDER) == AGREEING


@pytest.mark.parametrize(
    ("silent", "tag"),
    [({"mrn": None}, "PatientID"), ({"accession_number": ""}, "AccessionNumber"),
     ({"patient_family_name": None, "patient_given_name": None}, "PatientName")],
)
def test_tags_the_order_says_nothing_about_are_left_alone(silent: dict[str, str | None], tag: str) -> None:
    order = with_order(**silent)
    for current_value in ("SOMETHING ELSE", "", None):
        changes = tag_changes({**AGREEING, tag: current_value}, order)
        assert tag not in changes
        assert changes == {}


def test_empty_order_changes_nothing() -> None:
    assert tag_changes({"PatientID": "X", "PatientName": "Y", "AccessionNumber": "Z"}, {}) == {}


def test_changes_use_the_order_values_exactly() -> None:
    changes = tag_changes({}, with_order(patient_family_name="Müller", patient_given_name="Jürgen"))
    assert changes["PatientName"] == "Müller^Jürgen"
