"""The clinical summary (pure), the representative image choice, and the studies/render query parsing."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from ehr_imaging.api.images import _float_param
from ehr_imaging.api.router import Request, status_of
from ehr_imaging.api.studies import deletion_reason, parse_date_param, parse_study_filter
from ehr_imaging.core import errors
from ehr_imaging.core.summary import (
    SummaryOptions,
    SummaryOptionsError,
    clinical_summary,
    display_name,
    first_image_series,
    format_number,
    ordered_instances,
    parse_options,
    patient_age,
)

STUDY = {"PatientName": "DOE^JOHN", "PatientID": "12345678", "PatientSex": "M", "PatientBirthDate": "19870315",
         "StudyDescription": "CT CHEST W CONTRAST", "StudyDate": "20251106", "StudyTime": "103000",
         "AccessionNumber": "A2025110601", "ModalitiesInStudy": "CT"}
CT = {"Modality": "CT", "Manufacturer": "SIEMENS", "ManufacturerModelName": "SOMATOM Definition",
      "SliceThickness": "5.000000", "KVP": "120", "XRayTubeCurrent": "200", "Rows": "512", "Columns": "512",
      "PixelSpacing": "0.6836\\0.6836", "PatientAge": "038Y"}


def test_the_seed_format() -> None:
    text, data = clinical_summary(STUDY, CT, SummaryOptions(), number_of_series=2, number_of_instances=240)
    assert text == (
        "PATIENT INFORMATION:\nName: DOE, JOHN\nID: 12345678\nAge: 38Y\nSex: M\nBirth Date: March 15, 1987\n\n"
        "STUDY INFORMATION:\nExam: CT CHEST W CONTRAST\nDate: November 6, 2025\nTime: 10:30\n"
        "Accession: A2025110601\nModality: CT\nSeries: 2\nImages: 240\n\n"
        "TECHNICAL PARAMETERS:\nManufacturer: SIEMENS SOMATOM Definition\nSlice Thickness: 5.0 mm\nkVp: 120\n"
        "Tube Current: 200 mA\nMatrix: 512 x 512\nPixel Spacing: 0.68 x 0.68 mm"
    )
    assert set(data) == {"patient", "study", "technical"}
    assert data["patient"]["age"] == "38Y"
    assert data["study"]["modalities"] == ["CT"]
    assert data["technical"]["slice_thickness_mm"] == 5.0
    assert data["technical"]["pixel_spacing_mm"] == [0.6836, 0.6836]
    assert data["technical"]["magnetic_field_strength_t"] is None


def test_sections_can_be_left_out() -> None:
    text, data = clinical_summary(STUDY, CT, SummaryOptions(include_patient_info=False, include_technical_params=False))
    assert text.startswith("STUDY INFORMATION:\n")
    assert "PATIENT" not in text and "TECHNICAL" not in text and "DOE" not in text
    assert set(data) == {"study"}
    assert clinical_summary(STUDY, CT, SummaryOptions(False, False, False)) == ("", {})


def test_mr_parameters_and_missing_values() -> None:
    mr = {"Modality": "MR", "MagneticFieldStrength": "1.5", "RepetitionTime": "4000", "EchoTime": "102.4",
          "FlipAngle": "90", "SliceThickness": "", "PatientAge": ""}
    text, data = clinical_summary({"PatientName": "Roe", "StudyDate": "20260110"}, mr, SummaryOptions())
    assert "Field Strength: 1.5 T\nTR: 4000.0 ms\nTE: 102.4 ms\nFlip Angle: 90.0 deg" in text
    assert "Slice Thickness" not in text and "Age" not in text and "Accession" not in text
    assert "Name: Roe\n" in text and "Modality: MR" in text
    assert data["technical"]["echo_time_ms"] == 102.4
    assert data["patient"]["age"] is None


@pytest.mark.parametrize(("pn", "shown"), [
    ("DOE^JOHN", "DOE, JOHN"), ("DOE^JOHN^M^DR", "DOE, JOHN M DR"), ("DOE", "DOE"), ("^JOHN", "JOHN"),
    ("Yamada^Tarou=山田^太郎", "Yamada, Tarou"), ("", None), (None, None),
])
def test_display_name(pn: str | None, shown: str | None) -> None:
    assert display_name(pn) == shown


def test_patient_age() -> None:
    assert patient_age("038Y", None, None) == "38Y"
    assert patient_age("006M", None, None) == "6M"
    assert patient_age(None, date(1987, 3, 15), date(2025, 3, 14)) == "37Y"
    assert patient_age(None, date(1987, 3, 15), date(2025, 3, 15)) == "38Y"
    assert patient_age("bad", date(2030, 1, 1), date(2025, 1, 1)) is None


@pytest.mark.parametrize(("value", "text"), [(5.0, "5.0"), (0.6836, "0.68"), (120, "120.0"), (2.5, "2.5"),
                                             (None, None)])
def test_format_number(value: float | None, text: str | None) -> None:
    assert format_number(value) == text


def test_options() -> None:
    assert parse_options(None) == SummaryOptions()
    assert parse_options({"include_patient_info": False}) == SummaryOptions(include_patient_info=False)
    bad_bodies: list[object] = [[], {"include_patient_info": "no"}, {"include_everything": True}]
    for bad in bad_bodies:
        with pytest.raises(SummaryOptionsError):
            parse_options(bad)


def test_the_representative_series_and_instance() -> None:
    series = [
        {"ID": "sr", "MainDicomTags": {"Modality": "SR", "SeriesNumber": "1"}, "Instances": ["x"]},
        {"ID": "b", "MainDicomTags": {"Modality": "CT", "SeriesNumber": "10"}, "Instances": ["y"]},
        {"ID": "a", "MainDicomTags": {"Modality": "CT", "SeriesNumber": "2"}, "Instances": ["z"]},
        {"ID": "empty", "MainDicomTags": {"Modality": "CT", "SeriesNumber": "0"}, "Instances": []},
    ]
    assert first_image_series(series)["ID"] == "a"  # type: ignore[index]
    assert first_image_series(series[:1]) is None
    instances: list[dict[str, Any]] = [{"ID": "i3", "IndexInSeries": 3}, {"ID": "i1", "IndexInSeries": 1},
                 {"ID": "n2", "MainDicomTags": {"InstanceNumber": "2"}}, {"ID": "none"}]
    assert ordered_instances(instances) == ["i1", "n2", "i3", "none"]


def test_study_filter_parsing() -> None:
    where = parse_study_filter({"mrn": " MRN1 ", "modality": "ct", "study_date_from": "2026-01-01",
                                "study_date_to": "20260131", "order_status": "scheduled", "limit": "10",
                                "offset": "20", "patient_name": "doe"})
    assert (where.mrn, where.modality, where.patient_name) == ("MRN1", "ct", "doe")
    assert (where.study_date_from, where.study_date_to) == (date(2026, 1, 1), date(2026, 1, 31))
    assert (where.order_status, where.limit, where.offset) == ("scheduled", 10, 20)
    assert parse_study_filter({}).limit == 50


@pytest.mark.parametrize(("query", "named"), [
    ({"study_date_from": "2026-13-01"}, "study_date_from"), ({"study_date_to": "yesterday"}, "study_date_to"),
    ({"study_date_from": "2026-02-01", "study_date_to": "2026-01-01"}, "study_date_from"),
    ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"), ({"limit": "ten"}, "limit"), ({"offset": "-1"}, "offset"),
    ({"order_status": "done"}, "order_status"), ({"modality": "C T"}, "modality"), ({"mrn": "x" * 200}, "mrn"),
])
def test_bad_study_filters_answer_422_naming_the_parameter(query: dict[str, str], named: str) -> None:
    with pytest.raises(errors.DomainError) as caught:
        parse_study_filter(query)
    assert status_of(caught.value) == 422
    assert caught.value.detail.startswith(named)


def test_dates_in_both_forms() -> None:
    assert parse_date_param({"d": "2026-03-01"}, "d") == parse_date_param({"d": "20260301"}, "d") == date(2026, 3, 1)
    assert parse_date_param({}, "d") is None
    with pytest.raises(errors.DomainError):
        parse_date_param({"d": "2026301"}, "d")


def test_the_deletion_reason_from_query_header_or_body() -> None:
    assert deletion_reason(Request("DELETE", "/", query={"reason": " duplicate "})) == "duplicate"
    assert deletion_reason(Request("DELETE", "/", headers={"x-reason": "wrong patient"})) == "wrong patient"
    body = Request("DELETE", "/", headers={"content-type": "application/json"}, body=b'{"reason": "test"}')
    assert deletion_reason(body) == "test"
    for missing in (Request("DELETE", "/"), Request("DELETE", "/", query={"reason": "  "}),
                    Request("DELETE", "/", body=b'{"reason": 3}')):
        with pytest.raises(errors.DomainError) as caught:
            deletion_reason(missing)
        assert status_of(caught.value) == 422


def test_window_and_level_numbers() -> None:
    assert _float_param({"window": "400"}, "window") == 400.0
    assert _float_param({}, "window") is None
    for bad in ("wide", "nan", "inf"):
        with pytest.raises(errors.DomainError):
            _float_param({"window": bad}, "window")
