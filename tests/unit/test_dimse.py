"""DICOM services (core.dimse): which configurations start, C-FIND queries and answers, C-MOVE requests."""

from __future__ import annotations

from typing import Any

import pytest

from ehr_imaging.core.dimse import (
    DicomPolicyError,
    QueryKey,
    check_policy,
    find_answer,
    find_request,
    move_request,
    policy_problems,
)


def modality(**allow: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"AET": "CT1", "Host": "10.0.0.5", "Port": 104, "AllowFind": False, "AllowMove": False,
                             "AllowGet": False}
    entry.update(allow)
    return {key: value for key, value in entry.items() if value is not None}


def config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"DicomCheckModalityHost": True, "DicomModalities": {"ct": modality()}}
    base.update(overrides)
    return base


def test_the_shipped_shape_starts_without_warnings() -> None:
    assert policy_problems(config()) == ([], [])
    assert check_policy(config()) == []
    assert policy_problems({"DicomCheckModalityHost": True}) == ([], [])  # no modality at all


def test_an_audited_service_may_be_allowed() -> None:
    errors, _ = policy_problems(config(DicomModalities={"ws": modality(AllowFind=True, AllowMove=True)}))
    assert errors == []


@pytest.mark.parametrize(("shape", "fragment"), [
    ({"DicomModalities": {"ct": ["CT1", "10.0.0.5", 104]}}, "array form allows every DICOM service"),
    ({"DicomModalities": {"ct": modality(AllowGet=True)}}, "AllowGet must be false"),
    ({"DicomModalities": {"ct": modality(AllowGet=None)}}, "AllowGet must be set"),
    ({"DicomModalities": {"ct": modality(AllowFind=None)}}, "AllowFind must be set"),
    ({"DicomModalities": {"ct": modality(AllowMove="no")}}, "AllowMove must be set"),
    ({"DicomModalities": ["CT1"]}, "DicomModalities must be an object"),
    ({"DicomAlwaysAllowFind": True}, "DicomAlwaysAllowFind must be false"),
    ({"DicomAlwaysAllowFindWorklist": True}, "DicomAlwaysAllowFindWorklist must be false"),
    ({"DicomAlwaysAllowMove": True}, "DicomAlwaysAllowMove must be false"),
    ({"DicomAlwaysAllowGet": True}, "DicomAlwaysAllowGet must be false"),
    ({"DicomModalitiesInDatabase": True}, "DicomModalitiesInDatabase must be false"),
])
def test_configurations_that_escape_the_audit_are_refused(shape: dict[str, Any], fragment: str) -> None:
    errors, _ = policy_problems(config(**shape))
    assert any(fragment in error for error in errors), errors
    with pytest.raises(DicomPolicyError, match=fragment):
        check_policy(config(**shape))


def test_every_error_is_reported_at_once() -> None:
    errors, _ = policy_problems(config(DicomAlwaysAllowGet=True, DicomModalities={"a": ["A", "h", 1], "b": modality(
        AllowGet=True)}))
    assert len(errors) == 3


def test_an_unchecked_host_is_a_warning() -> None:
    errors, warnings = policy_problems(config(DicomCheckModalityHost=False))
    assert errors == [] and "DicomCheckModalityHost" in warnings[0]


def key(group: int, element: int, name: str, value: str = "") -> QueryKey:
    return QueryKey(group, element, name, value)


LEVEL_STUDY = key(0x0008, 0x0052, "QueryRetrieveLevel", "STUDY")


def test_a_find_request_maps_keys_with_values_to_constraints() -> None:
    request = find_request([LEVEL_STUDY, key(0x0010, 0x0010, "PatientName", "DOE*"), key(0x0010, 0x0020, "PatientID"),
                            key(0x0008, 0x0005, "SpecificCharacterSet", "ISO_IR 100")])
    assert request.level == "Study"
    assert request.orthanc_query(11) == {"Level": "Study", "Query": {"0010,0010": "DOE*"}, "Expand": True,
                                         "Limit": 11}
    assert request.audit_query() == {"QueryRetrieveLevel": "STUDY", "PatientName": "DOE*",
                                     "SpecificCharacterSet": "ISO_IR 100"}


@pytest.mark.parametrize("level", ["", "WORKLIST", "FRAME"])
def test_an_unknown_level_is_refused(level: str) -> None:
    keys = [key(0x0008, 0x0052, "QueryRetrieveLevel", level)] if level else []
    with pytest.raises(ValueError, match="QueryRetrieveLevel"):
        find_request(keys)


def test_an_answer_has_every_key_asked_and_the_unique_key() -> None:
    request = find_request([key(0x0008, 0x0052, "QueryRetrieveLevel", "SERIES"),
                            key(0x0020, 0x000D, "StudyInstanceUID", "1.2.3"), key(0x0008, 0x0060, "Modality"),
                            key(0x0020, 0x0011, "SeriesNumber"), key(0x0009, 0x0010, "", "private"),
                            key(0x0008, 0x1140, "ReferencedImageSequence")])
    resource = {"MainDicomTags": {"SeriesInstanceUID": "1.2.3.4", "Modality": "CT", "SeriesNumber": "7"}}
    ds = find_answer(request, resource)
    assert ds.QueryRetrieveLevel == "SERIES"
    assert ds.StudyInstanceUID == "1.2.3"  # not a series tag: echoed from the exact query value
    assert (ds.Modality, ds.SeriesNumber, ds.SeriesInstanceUID) == ("CT", 7, "1.2.3.4")
    assert "ReferencedImageSequence" not in ds and (0x0009, 0x0010) not in ds


def test_a_wildcard_key_orthanc_does_not_index_is_answered_empty() -> None:
    request = find_request([LEVEL_STUDY, key(0x0008, 0x1030, "StudyDescription", "CT*"),
                            key(0x0008, 0x0061, "ModalitiesInStudy"), key(0x0020, 0x1208,
                                                                          "NumberOfStudyRelatedInstances")])
    ds = find_answer(request, {"MainDicomTags": {"StudyInstanceUID": "9.8"}, "PatientMainDicomTags": {}},
                     {"ModalitiesInStudy": ["CT", "SR"], "NumberOfStudyRelatedInstances": "12"})
    assert ds.StudyDescription in ("", None)
    assert list(ds.ModalitiesInStudy) == ["CT", "SR"]
    assert ds.NumberOfStudyRelatedInstances == 12
    assert ds.StudyInstanceUID == "9.8"


@pytest.mark.parametrize(("request_", "expected"), [
    ({"Level": "STUDY", "StudyInstanceUID": "1.2\\1.3"}, ("Study", ("1.2", "1.3"), False)),
    ({"Level": "STUDY", "StudyInstanceUID": "", "AccessionNumber": "A1"}, ("Study", ("A1",), True)),
    ({"Level": "PATIENT", "PatientID": "P1"}, ("Patient", ("P1",), False)),
    ({"Level": "SERIES", "SeriesInstanceUID": "1.4"}, ("Series", ("1.4",), False)),
    ({"Level": "IMAGE", "SOPInstanceUID": "1.5"}, ("Instance", ("1.5",), False)),
])
def test_a_move_names_what_to_send(request_: dict[str, str], expected: tuple[Any, ...]) -> None:
    wanted = move_request(request_)
    assert (wanted.level, wanted.identifiers, wanted.by_accession) == expected


@pytest.mark.parametrize("request_", [
    {"Level": "STUDY"}, {"Level": "SERIES", "StudyInstanceUID": "1.2"}, {"Level": "FRAME", "SOPInstanceUID": "1"},
    {"Level": "PATIENT", "PatientID": "*"},
])
def test_a_move_that_names_nothing_exactly_is_refused(request_: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="C-MOVE"):
        move_request(request_)
