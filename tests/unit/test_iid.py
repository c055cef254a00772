"""IHE Invoke Image Display (core/iid.py): the profile's parameters read and checked, a PATIENT request's selection,
and the short-lived token an EHR may put in the URL (core/query_token.py, router ``query_token`` routes)."""

from __future__ import annotations

import time
from datetime import date, datetime
from datetime import time as clock

import pytest

from ehr_imaging.api.router import Request, Router, json_response
from ehr_imaging.core import errors, iid
from ehr_imaging.core.access import Area, classify
from ehr_imaging.core.auth import Authenticator, BasicAuthenticator, TokenVerifier, mint_token
from ehr_imaging.core.iid import Candidate

UID_A, UID_B = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"


def malformed(query: dict[str, str]) -> str:
    with pytest.raises(errors.Malformed) as caught:
        iid.parse(query)
    return caught.value.detail


def test_study_requests_by_uid_list_or_accession_list() -> None:
    by_uid = iid.parse({"requestType": "STUDY", "studyUID": f"{UID_A}, {UID_B},{UID_A}"})
    assert by_uid.study_uids == (UID_A, UID_B) and by_uid.accession_numbers == ()
    by_accession = iid.parse({"requestType": "STUDY", "accessionNumber": "ACC1,ACC2"})
    assert by_accession.accession_numbers == ("ACC1", "ACC2") and by_accession.study_uids == ()


@pytest.mark.parametrize(("query", "says"), [
    ({}, "requestType is required"),
    ({"requestType": "SERIES", "studyUID": UID_A}, "is not supported"),
    ({"requestType": "study", "studyUID": UID_A}, "is not supported"),  # the profile's values are upper case
    ({"requestType": "STUDY"}, "needs studyUID or accessionNumber"),
    ({"requestType": "STUDY", "studyUID": UID_A, "accessionNumber": "A1"}, "never both"),
    ({"requestType": "STUDY", "studyUID": "not-a-uid"}, "not a DICOM UID"),
    ({"requestType": "STUDY", "studyUID": UID_A, "patientID": "P1"}, "parameter of requestType=PATIENT"),
    ({"requestType": "PATIENT"}, "needs patientID"),
    ({"requestType": "PATIENT", "patientID": "^^^&1.2&ISO"}, "CX ID component"),
    ({"requestType": "PATIENT", "patientID": "P1", "studyUID": UID_A}, "parameter of requestType=STUDY"),
    ({"requestType": "PATIENT", "patientID": "P1", "lowerDateTime": "yesterday"}, "lowerDateTime"),
    ({"requestType": "PATIENT", "patientID": "P1", "lowerDateTime": "2026-02-01", "upperDateTime": "2026-01-01"},
     "after upperDateTime"),
    ({"requestType": "PATIENT", "patientID": "P1", "mostRecentResults": "0"}, "mostRecentResults"),
    ({"requestType": "PATIENT", "patientID": "P1", "mostRecentResults": "-3"}, "mostRecentResults"),
    ({"requestType": "PATIENT", "patientID": "P1", "modalitiesInStudy": "CT,M R"}, "modalitiesInStudy"),
    ({"requestType": "STUDY", "studyUID": UID_A, "diagnosticQuality": "yes"}, "diagnosticQuality"),
    ({"requestType": "STUDY", "studyUID": ",".join(f"1.2.{n}" for n in range(201))}, "at most 200"),
])
def test_a_request_that_breaks_the_profile_is_malformed(query: dict[str, str], says: str) -> None:
    assert says in malformed(query)


@pytest.mark.parametrize(("value", "expected"), [
    ("P123", ("P123", None)),
    ("P123^^^&1.2.840.113619.6.197&ISO", ("P123", "&1.2.840.113619.6.197&ISO")),
    ("99998410^^^&www.MEDICALCENTER.com&DNS", ("99998410", "&www.MEDICALCENTER.com&DNS")),
    ("P123^^^HOSP", ("P123", "HOSP")),
])
def test_patient_id_plain_or_hl7_cx(value: str, expected: tuple[str, str | None]) -> None:
    assert iid.patient_identifier(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-11-20T09:30:00", datetime(2026, 11, 20, 9, 30)),
    ("2026-11-20T09:30:00Z", datetime(2026, 11, 20, 9, 30)),
    ("2026-11-20T09:30:00+01:00", datetime(2026, 11, 20, 9, 30)),
    ("2026-11-20", datetime(2026, 11, 20)),
    ("20261120", datetime(2026, 11, 20)),
    ("20261120093015", datetime(2026, 11, 20, 9, 30, 15)),
    ("20261120093015.5+0100", datetime(2026, 11, 20, 9, 30, 15, 500000)),
    ("2026", datetime(2026, 1, 1)),
    ("20261340", None), ("2026-13-01", None), ("noon", None),
])
def test_date_times_xml_schema_or_dicom_dt(value: str, expected: datetime | None) -> None:
    assert iid.parse_datetime(value) == expected


def test_patient_request_options_are_read() -> None:
    parsed = iid.parse({"requestType": "PATIENT", "patientID": "P1^^^&1.2.3&ISO", "lowerDateTime": "20260101",
                        "upperDateTime": "2026-12-31T23:59:59", "mostRecentResults": "2",
                        "modalitiesInStudy": "ct,MR", "viewerType": "IHE_BIR", "diagnosticQuality": "true",
                        "keyImagesOnly": "false"})
    assert (parsed.patient_id, parsed.issuer, parsed.most_recent) == ("P1", "&1.2.3&ISO", 2)
    assert parsed.lower == datetime(2026, 1, 1) and parsed.upper == datetime(2026, 12, 31, 23, 59, 59)
    assert parsed.modalities == {"CT", "MR"}
    assert (parsed.viewer_type, parsed.diagnostic_quality, parsed.key_images_only) == ("IHE_BIR", True, False)


STUDIES = [
    Candidate("1.1", date(2026, 1, 10), clock(8, 0), ("CT",)),
    Candidate("1.2", date(2026, 3, 5), None, ("MR", "SR")),
    Candidate("1.3", date(2026, 6, 1), clock(17, 45), ("CT", "SR")),
    Candidate("1.4", None, None, ("CT",)),
]


@pytest.mark.parametrize(("extra", "expected"), [
    ({}, ["1.3", "1.2", "1.1", "1.4"]),  # newest first; a study without a date last
    ({"lowerDateTime": "2026-03-01"}, ["1.3", "1.2"]),  # a bound excludes studies without a date
    ({"upperDateTime": "20260305"}, ["1.2", "1.1"]),  # 2026-03-05 00:00 itself is inside
    ({"lowerDateTime": "2026-06-01T17:46:00"}, []),
    ({"mostRecentResults": "2"}, ["1.3", "1.2"]),
    ({"modalitiesInStudy": "MR"}, ["1.2"]),
    ({"modalitiesInStudy": "SR,XA", "mostRecentResults": "1"}, ["1.3"]),
])
def test_patient_selection(extra: dict[str, str], expected: list[str]) -> None:
    request = iid.parse({"requestType": "PATIENT", "patientID": "P1", **extra})
    assert iid.select(request, STUDIES, cap=200) == expected


def test_without_most_recent_results_the_server_caps() -> None:
    request = iid.parse({"requestType": "PATIENT", "patientID": "P1", "mostRecentResults": "50"})
    assert iid.select(request, STUDIES, cap=2) == ["1.3", "1.2"]


def test_the_iid_path_is_one_of_the_plugins_routes_on_orthancs_port() -> None:
    assert classify("/IHEInvokeImageDisplay") is Area.PLUGIN_API
    assert classify("/IHEInvokeImageDisplay/x") is Area.ADMIN_ONLY
    assert classify("/iheinvokeimagedisplay") is Area.ADMIN_ONLY


# --- the token in the URL -------------------------------------------------------------------------------------

ISSUER, AUDIENCE, SECRET = "iid-tests", "ehr-imaging", "iid-test-secret-0123456789abcdef"


def router() -> Router:
    users = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, secret=SECRET)
    found = Router(Authenticator(users=users, admins=BasicAuthenticator({}), sessions=None), lambda _: None)
    answer = lambda request: json_response({"subject": request.principal.subject})  # noqa: E731
    found.add("GET", "/IHEInvokeImageDisplay", answer, roles=["doctor"], query_token=True)
    found.add("GET", "/api/v1/dicom/other", answer, roles=["doctor"])
    return found


def user_token(ttl: int, *, subject: str = "dr-who", role: str = "doctor", **extra: object) -> str:
    return mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject=subject, roles=[role],
                      ttl_seconds=ttl, extra=extra or None)


def call(path: str, query: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    answer = router().dispatch(path, Request("GET", path, query=query, headers=headers or {}))
    return answer.status, answer.body


def test_a_short_lived_token_in_the_url_opens_a_query_token_route_only() -> None:
    short = user_token(300)
    assert call("/IHEInvokeImageDisplay", {"token": short}) == (200, b'{"subject": "dr-who"}')
    status, body = call("/api/v1/dicom/other", {"token": short})
    assert status == 401 and b"authentication required" in body


def test_a_long_lived_or_wrong_token_in_the_url_is_refused() -> None:
    status, body = call("/IHEInvokeImageDisplay", {"token": user_token(301)})
    assert status == 401 and b"at most 300 s" in body
    now = int(time.time())
    status, body = call("/IHEInvokeImageDisplay", {"token": user_token(60, iat=now - 3600)})
    assert status == 401 and b"at most 300 s" in body  # an old iat makes exp - iat long: refused
    status, _ = call("/IHEInvokeImageDisplay", {"token": user_token(60, role="technician")})
    assert status == 403
    status, _ = call("/IHEInvokeImageDisplay", {"token": user_token(60) + "x"})
    assert status == 401
    assert call("/IHEInvokeImageDisplay", {})[0] == 401


def test_the_header_wins_over_the_url_and_any_lifetime_is_fine_there() -> None:
    long = user_token(86400, subject="by-header")
    status, body = call("/IHEInvokeImageDisplay", {"token": user_token(60)}, {"authorization": f"Bearer {long}"})
    assert (status, body) == (200, b'{"subject": "by-header"}')
