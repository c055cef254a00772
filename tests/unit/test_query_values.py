"""Bounds on what a viewer token's query parameters may ask for (sizes, qualities, windows, pages)."""

from __future__ import annotations

import pytest

from ehr_imaging.core import access, query_values
from ehr_imaging.core.query_values import MAX_RENDER_PIXELS
from tests.unit.viewer_scope import IA, SA, SCOPE, A, belongs

RENDERED = f"/dicom-web/studies/{A}/series/{SA}/instances/{IA}/rendered"
FRAME = f"/dicom-web/studies/{A}/series/{SA}/instances/{IA}/frames/1/rendered"
THUMBNAIL = f"/dicom-web/studies/{A}/thumbnail"
IN_STUDY_QIDO = f"/dicom-web/studies/{A}/series"
WADO_URI = {"requestType": "WADO", "studyUID": A, "seriesUID": SA, "objectUID": IA}


def decision(path: str, query: dict[str, str]) -> access.Decision:
    return access.decide_viewer("GET", path, query, SCOPE, belongs)


@pytest.mark.parametrize("query", [
    {"viewport": "512,512"}, {"viewport": f"{MAX_RENDER_PIXELS},{MAX_RENDER_PIXELS}"},
    {"viewport": "64,64,0,0,512,512"}, {"viewport": "64,64,,,-512,512"}, {"quality": "1"}, {"quality": "100"},
    {"window": "40,400"},
    {"window": "-600.5,1500,linear"}, {"window": "40,400,SIGMOID"}, {"annotation": "patient,technique"},
    {"iccprofile": "srgb"}, {"charset": "UTF-8"}, {"accept": "image/jpeg"}, {"accept": "image%2Fpng"},
    {"viewport": "256,256", "quality": "90", "window": "40,400,linear"},
])
@pytest.mark.parametrize("path", [RENDERED, FRAME, THUMBNAIL])
def test_bounded_rendering_parameters_pass(path: str, query: dict[str, str]) -> None:
    assert decision(path, query).allowed


@pytest.mark.parametrize("query", [
    {"viewport": "60000,60000"}, {"viewport": f"{MAX_RENDER_PIXELS + 1},10"}, {"viewport": "10,4097"},
    {"viewport": "0,512"}, {"viewport": "-5,512"}, {"viewport": "512"}, {"viewport": "512,512,0"},
    {"viewport": "512,512,0,0,999999999,5"}, {"viewport": "1e4,1e4"}, {"viewport": "512.0,512"},
    {"viewport": "60000%2C60000"}, {"viewport": " 512,512"}, {"viewport": "512,512\x00"},
    {"quality": "0"}, {"quality": "101"}, {"quality": "99999999999"}, {"quality": "high"},
    {"window": "40"}, {"window": "nan,400"}, {"window": "inf,1"}, {"window": "1e300,1"}, {"window": "40,400,cubic"},
    {"annotation": "everything"}, {"iccprofile": "mine"}, {"charset": "x" * 2000}, {"accept": "image/jpeg\r\nX: y"},
])
@pytest.mark.parametrize("path", [RENDERED, FRAME, THUMBNAIL])
def test_unbounded_or_malformed_rendering_parameters_are_refused(path: str, query: dict[str, str]) -> None:
    refused = decision(path, query)
    assert not refused.allowed
    assert "query parameter" in refused.reason


@pytest.mark.parametrize(("extra", "allowed"), [
    ({}, True), ({"rows": "512", "columns": "512"}, True), ({"rows": "60000"}, False), ({"columns": "60000"}, False),
    ({"rows": "0"}, False), ({"rows": "-1"}, False), ({"region": "0,0,0.5,0.5"}, True), ({"region": "0,0,1,1"}, True),
    ({"region": "0,0,2,2"}, False), ({"region": "0.5,0,0.2,1"}, False), ({"region": "0,0,1"}, False),
    ({"imageQuality": "80"}, True), ({"imageQuality": "0"}, False), ({"imageQuality": "1000"}, False),
    ({"windowCenter": "40", "windowWidth": "400"}, True), ({"windowCenter": "nan"}, False),
    ({"frameNumber": "1"}, True), ({"frameNumber": "0"}, False), ({"frameNumber": "99999999"}, False),
    ({"contentType": "image/jpeg"}, True), ({"contentType": "image/jpeg\n"}, False), ({"anonymize": "yes"}, True),
    ({"anonymize": "please"}, False), ({"transferSyntax": "1.2.840.10008.1.2.1"}, True),
    ({"transferSyntax": "explicit"}, False), ({"annotation": "patient"}, True), ({"charset": "ISO_IR 100"}, False),
])
def test_wado_uri_sizes_and_qualities_are_bounded(extra: dict[str, str], allowed: bool) -> None:
    assert decision(access.WADO_URI_ROOT, {**WADO_URI, **extra}).allowed is allowed


@pytest.mark.parametrize(("query", "allowed"), [
    ({"limit": "100"}, True), ({"limit": "1000"}, True), ({"limit": "1001"}, False), ({"limit": "0"}, False),
    ({"offset": "0"}, True), ({"offset": "-1"}, False), ({"offset": "99999999999"}, False),
    ({"fuzzymatching": "true"}, True), ({"fuzzymatching": "maybe"}, False), ({"PatientID": "x" * 1025}, False),
    ({"PatientID": "DOE*"}, True), ({"PatientID": "a\rb"}, False), ({"includefield": "all"}, True),
])
def test_in_study_queries_are_bounded(query: dict[str, str], allowed: bool) -> None:
    assert decision(IN_STUDY_QIDO, query).allowed is allowed


def test_scoped_qido_uid_lists_have_their_own_bound() -> None:
    uids = ",".join(f"1.2.{n}" for n in range(200))
    assert query_values.refusal(query_values.QIDO, {"StudyInstanceUID": uids}) is None
    assert query_values.refusal(query_values.QIDO, {"StudyInstanceUID": "1.2.3\\1.2.4"}) is None
    assert query_values.refusal(query_values.QIDO, {"StudyInstanceUID": "1.2.3;DROP"}) is not None
    assert query_values.refusal(query_values.QIDO, {"0020000D": "1" * (query_values.MAX_UID_LIST_LENGTH + 1)})


def test_every_allowed_sizing_parameter_has_a_rule() -> None:
    """Closing the class: a parameter that sizes or prices the answer must never pass on its length check alone."""
    assert {"viewport", "quality", "window"} <= set(query_values.WADO_RS)
    assert {"rows", "columns", "region", "imageQuality", "frameNumber"} <= set(query_values.WADO_URI)
    assert {"limit", "offset"} <= set(query_values.QIDO)
    assert set(query_values.WADO_RS) == set(access.WADO_RS_PARAMETERS)
    assert set(query_values.WADO_URI) == set(access.WADO_URI_PARAMETERS)
