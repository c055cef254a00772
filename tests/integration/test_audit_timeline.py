"""The audit timeline (GET /api/v1/dicom/audit) on the real stack: one patient's study goes through upload, unlink,
link, a tag edit, a viewer token and DICOMweb reads, a revocation and a deletion, each by its own person; the
timeline then answers every filter (patient, MRN, study, actor, action, time window), pages, fits its OpenAPI
schema, exports the same rows as CSV on both ports, and shows the patient's rows even after the study is deleted
(the rows without an order of their own find the patient through the deletion log)."""

from __future__ import annotations

import csv
import io
import itertools
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest

from ehr_imaging.store.audit import actions as audit_actions
from ehr_stack.tokens import mint_dev_token
from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.helpers import accession, mrn, put_order, query
from tests.integration.viewer_helpers import as_viewer
from tests.openapi_validation import problems
from tests.waiting import eventually

pytestmark = pytest.mark.integration

P = "/api/v1/dicom"
COLUMNS = ["at", "started_at", "action", "actor", "patient_id", "mrn", "study_uid", "order_id", "details"]


def auth(client: Client, role: str, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.token(role, subject)}"}


@dataclass(frozen=True)
class History:
    patient_id: str  # the EHR's
    mrn: str
    study_uid: str
    order_id: str
    other_patient_id: str
    other_study_uid: str
    actors: dict[str, str]  # what each did -> who
    token_id: str
    began: datetime
    ended: datetime


def upload(client: Client, files: list[Path], order_id: str, subject: str) -> None:
    for path in files:
        answer = client.request("POST", f"{P}/upload", data=path.read_bytes(), headers={
            **auth(client, "technician", subject), "Content-Type": "application/dicom", "X-Order-Id": order_id})
        assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def history(client: Client, api: Client, tmp_path_factory: pytest.TempPathFactory) -> History:
    run = uuid.uuid4().hex[:8]
    actors = {name: f"{name}-{run}" for name in ("uploader", "reconciler", "editor", "viewer", "revoker", "deleter")}
    began = datetime.now(UTC) - timedelta(seconds=1)
    patient_id, patient_mrn = str(uuid.uuid4()), mrn()
    order_id = put_order(client, patient_id=patient_id, mrn=patient_mrn, accession_number=accession())
    uid, files = make_study(tmp_path_factory.mktemp("audit"), patient_id=patient_mrn, accession=None,
                            study_date="20261120", instances=2)
    upload(client, files, order_id, actors["uploader"])
    # Another patient's study, uploaded by the same person: never in the first patient's timeline.
    other_patient, other_mrn = str(uuid.uuid4()), mrn()
    other_order = put_order(client, patient_id=other_patient, mrn=other_mrn, accession_number=accession())
    other_uid, other_files = make_study(tmp_path_factory.mktemp("audit-other"), patient_id=other_mrn,
                                        accession=None, study_date="20261121", instances=1)
    upload(client, other_files, other_order, actors["uploader"])

    reconciler = auth(client, "radiologist", actors["reconciler"])
    unlinked = client.request("POST", f"{P}/studies/{uid}/unlink", json={"reason": "checking the order"},
                              headers=reconciler)
    assert unlinked.status_code == 200, unlinked.text
    linked = client.request("POST", f"{P}/studies/{uid}/link", json={"order_id": order_id}, headers=reconciler)
    assert linked.status_code == 200, linked.text

    edited = api.request("POST", f"{P}/modify-tags", headers=auth(api, "doctor", actors["editor"]),
                         files={"file": ("image.dcm", files[0].read_bytes(), "application/dicom")},
                         data={"changes": json.dumps({"StudyDescription": "AUDITED"})})
    assert edited.status_code == 200, edited.text

    issued = client.request("POST", f"{P}/viewer-token", json={"study_uids": [uid]},
                            headers=auth(client, "doctor", actors["viewer"]))
    assert issued.status_code == 200, issued.text
    token, token_id = issued.json()["token"], issued.json()["token_id"]
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    frame = f"/dicom-web/studies/{uid}/series/{header.SeriesInstanceUID}/instances/{header.SOPInstanceUID}/frames/1"
    for _ in range(3):
        assert as_viewer(client, token, frame).status_code == 200
    eventually(lambda: query(client, "SELECT request_count FROM ehr_imaging.viewer_access_log WHERE token_id = :t",
                             t=token_id) == [(3,)], timeout=20, what="the viewer's reads in the access log")
    revoked = client.request("POST", f"{P}/viewer-token/revoke", json={"token_id": token_id, "reason": "done"},
                             headers=auth(client, "admin", actors["revoker"]))
    assert revoked.status_code == 200, revoked.text

    deleted = api.request("DELETE", f"{P}/studies/{uid}", params={"reason": "wrong patient"},
                          headers=auth(api, "radiologist", actors["deleter"]))
    assert deleted.status_code == 200, deleted.text
    return History(patient_id, patient_mrn, uid, order_id, other_patient, other_uid, actors, token_id, began,
                   datetime.now(UTC) + timedelta(seconds=1))


# The pinned timelines below leave out the order-status rows (OrderStatusUpdates): their number depends on
# whether a study's first instance is seen before its upload links it; they are checked on their own.
BUT_STATUS = ",".join(action for action in audit_actions() if action != "order-status")


def timeline(client: Client, **params: Any) -> dict[str, Any]:
    params.setdefault("action", BUT_STATUS)
    answer = client.get(f"{P}/audit", "admin", params=params)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def actions(page: dict[str, Any]) -> list[tuple[str, str]]:
    return [(item["action"], item["actor"]) for item in page["items"]]


def test_one_patients_timeline_newest_first_even_after_the_study_is_deleted(client: Client, history: History) -> None:
    page = timeline(client, patient_id=history.patient_id)
    a = history.actors
    assert actions(page) == [
        ("delete", a["deleter"]),
        ("unlink", a["deleter"]),  # a deletion frees the order
        ("viewer-token-revoked", a["revoker"]),
        ("viewer-access", a["viewer"]),
        ("viewer-token-issued", a["viewer"]),
        ("tag-edit", a["editor"]),
        ("link", a["reconciler"]),
        ("unlink", a["reconciler"]),
        ("upload", a["uploader"]),  # the second file (each upload request is a row)
        ("auto-link", "ehr-imaging"),  # the first file's ingest linked it to its order: the plugin did
        ("upload", a["uploader"]),
    ]
    assert page["total"] == 11 and (page["limit"], page["offset"]) == (50, 0)
    for item in page["items"]:
        assert (item["patient_id"], item["mrn"], item["study_uid"], item["order_id"]) == (
            history.patient_id, history.mrn, history.study_uid, history.order_id), item
    ats = [item["at"] for item in page["items"]]
    assert ats == sorted(ats, reverse=True)
    by_action = {item["action"]: item for item in page["items"]}
    access = by_action["viewer-access"]
    assert access["details"]["token_id"] == history.token_id
    assert (access["details"]["requests"], access["details"]["denied"]) == (3, 0)
    assert access["started_at"] <= access["at"]
    assert by_action["delete"]["details"]["reason"] == "wrong patient"
    assert by_action["tag-edit"]["details"]["new_values"] == {"StudyDescription": "AUDITED"}
    assert by_action["viewer-token-revoked"]["details"]["reason"] == "done"
    assert by_action["viewer-token-revoked"]["details"]["token_subject"] == history.actors["viewer"]
    assert by_action["upload"]["details"]["status"] == "success"
    assert by_action["upload"]["details"]["study_deleted"] is True
    # The other patient's study (same uploader) is not in it, and this patient's is not in theirs.
    other = timeline(client, patient_id=history.other_patient_id)
    assert {item["study_uid"] for item in other["items"]} == {history.other_study_uid}
    assert actions(other) == [("auto-link", "ehr-imaging"), ("upload", a["uploader"])]


def test_the_order_status_the_images_set_is_in_the_timeline(client: Client, history: History) -> None:
    """Linked: completed; unlinked by a person: scheduled again; linked again: completed; the study deleted:
    scheduled. (In progress first, when the first instance was seen before the upload linked the study.)"""
    rows = timeline(client, patient_id=history.patient_id, action="order-status")["items"]
    changes = [(row["details"]["from"], row["details"]["to"]) for row in reversed(rows)]  # oldest first
    assert changes[-4:] == [(changes[-4][0], "completed"), ("completed", "scheduled"),
                            ("scheduled", "completed"), ("completed", "scheduled")], changes
    assert changes[0][0] == "scheduled" and all(a[1] == b[0] for a, b in itertools.pairwise(changes))
    assert all(row["actor"] == "ehr-imaging" and row["order_id"] == history.order_id for row in rows)


def test_who_looked_at_this_patients_images(client: Client, history: History) -> None:
    """The question compliance asks: viewer access of one patient in a time window, with who and how much."""
    window = {"from": history.began.isoformat(), "to": history.ended.isoformat()}
    looked = timeline(client, patient_id=history.patient_id, action="viewer-access", **window)
    assert [(item["actor"], item["details"]["requests"]) for item in looked["items"]] == [(history.actors["viewer"], 3)]
    last_month = (history.began - timedelta(days=30)).date().isoformat()
    before = timeline(client, patient_id=history.patient_id, action="viewer-access", **{"from": last_month,
                      "to": (history.began - timedelta(days=1)).date().isoformat()})
    assert before["total"] == 0 and before["items"] == []
    today = timeline(client, patient_id=history.patient_id, action="viewer-access",
                     **{"from": history.began.date().isoformat(), "to": history.ended.date().isoformat()})
    assert today["total"] == 1  # a date alone as "to" includes that day


def test_each_filter(client: Client, history: History) -> None:
    a = history.actors
    everything = actions(timeline(client, patient_id=history.patient_id))
    assert actions(timeline(client, mrn=history.mrn.lower())) == everything  # MRNs compare as matching does
    assert actions(timeline(client, study_uid=history.study_uid)) == everything
    assert actions(timeline(client, actor=a["viewer"])) == [("viewer-access", a["viewer"]),
                                                           ("viewer-token-issued", a["viewer"])]
    assert actions(timeline(client, actor=a["uploader"], action="upload")) == [("upload", a["uploader"])] * 3
    assert actions(timeline(client, patient_id=history.patient_id, action="unlink,delete")) == [
        ("delete", a["deleter"]), ("unlink", a["deleter"]), ("unlink", a["reconciler"])]
    assert actions(timeline(client, study_uid=history.study_uid, action="tag-edit")) == [("tag-edit", a["editor"])]
    after = (history.ended + timedelta(seconds=1)).isoformat()
    assert timeline(client, patient_id=history.patient_id, **{"from": after})["total"] == 0
    assert timeline(client, patient_id=history.patient_id, to=history.began.isoformat())["total"] == 0
    naive = history.began.replace(tzinfo=None).isoformat()  # no offset: UTC
    assert actions(timeline(client, patient_id=history.patient_id, **{"from": naive})) == everything
    # The DICOM services' rows are in the timeline too (the other tests' C-FINDs and C-MOVEs, when they ran).
    dimse = timeline(client, action="dicom-find,worklist-query,dicom-move", limit=5)
    assert {item["action"] for item in dimse["items"]} <= {"dicom-find", "worklist-query", "dicom-move"}


def test_paging(client: Client, history: History) -> None:
    whole = timeline(client, patient_id=history.patient_id)["items"]
    first = timeline(client, patient_id=history.patient_id, limit=4)
    second = timeline(client, patient_id=history.patient_id, limit=4, offset=4)
    last = timeline(client, patient_id=history.patient_id, limit=4, offset=8)
    assert (first["total"], second["total"], last["total"]) == (11, 11, 11)
    assert first["items"] + second["items"] + last["items"] == whole
    assert len(last["items"]) == 3 and (last["limit"], last["offset"]) == (4, 8)


def test_the_answer_fits_its_openapi_schema(client: Client, history: History) -> None:
    doc = client.get(f"{P}/openapi.json", "admin").json()
    content = doc["paths"][f"{P}/audit"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/csv"}
    body = timeline(client, patient_id=history.patient_id)
    assert problems(content["application/json"]["schema"], body, doc["components"]["schemas"]) == []


@pytest.mark.parametrize("port", ["api", "orthanc"])
def test_csv_export_holds_the_same_rows(client: Client, api: Client, history: History, port: str) -> None:
    through = api if port == "api" else client
    answer = through.get(f"{P}/audit", "admin", params={"patient_id": history.patient_id, "format": "csv",
                                                        "action": BUT_STATUS})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
    disposition = answer.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="ehr-imaging-audit-') and disposition.endswith('.csv"')
    assert answer.headers["X-Total-Count"] == "11"
    rows = list(csv.reader(io.StringIO(answer.content.decode())))
    assert rows[0] == COLUMNS
    items = timeline(client, patient_id=history.patient_id)["items"]
    assert len(rows) == 1 + len(items)
    for row, item in zip(rows[1:], items, strict=True):
        cells = dict(zip(COLUMNS, row, strict=True))
        assert json.loads(cells.pop("details")) == item["details"]
        assert cells == {name: item[name] or "" for name in COLUMNS if name != "details"}
    paged = through.get(f"{P}/audit", "admin", params={"patient_id": history.patient_id, "format": "csv",
                                                       "limit": 3, "offset": 1, "action": BUT_STATUS})
    assert paged.status_code == 200
    assert list(csv.reader(io.StringIO(paged.content.decode())))[1:] == rows[2:5]
    assert paged.headers["X-Total-Count"] == "11"
    # At most 100,000 rows a request where the file is streamed (the API port), 10,000 where it is built in memory.
    most = 100_000 if port == "api" else 10_000
    assert through.get(f"{P}/audit", "admin", params={"format": "csv", "limit": most, "action": "delete",
                                                      "actor": history.actors["deleter"]}).status_code == 200
    too_many = through.get(f"{P}/audit", "admin", params={"format": "csv", "limit": most + 1})
    assert too_many.status_code == 422 and too_many.json()["detail"] == f"limit: must be between 1 and {most}"


def test_csv_cells_never_run_as_formulas(client: Client, api: Client, history: History) -> None:
    """A token subject (or reason) a spreadsheet would evaluate is written with a leading apostrophe."""
    subject = f"=HYPERLINK(\"http://evil.example/{uuid.uuid4().hex[:6]}\")"
    issued = client.request("POST", f"{P}/viewer-token", json={"study_uids": [history.other_study_uid]},
                            headers=auth(client, "doctor", subject))
    assert issued.status_code == 200, issued.text
    answer = api.get(f"{P}/audit", "admin", params={"actor": subject, "format": "csv"})
    assert answer.status_code == 200
    rows = list(csv.reader(io.StringIO(answer.content.decode())))
    assert [(row[2], row[3]) for row in rows[1:]] == [("viewer-token-issued", "'" + subject)]
    assert timeline(client, actor=subject)["items"][0]["actor"] == subject  # the JSON keeps it as it is


def test_admins_and_patients_only(client: Client) -> None:
    assert client.get(f"{P}/audit").status_code == 401
    for role in ("doctor", "radiologist", "nurse", "technician", "ehr-service"):
        assert client.get(f"{P}/audit", role).status_code == 403, role


def test_a_patient_reads_the_audit_of_their_own_records_only(client: Client, history: History) -> None:
    """Who looked at my images: the same rows an admin sees for this patient, and nothing of another's."""
    token = mint_dev_token(client.stack, role="patient", subject="portal", ttl_seconds=600,
                           patient_id=history.patient_id)
    own = client.request("GET", f"{P}/audit?limit=500", None, headers={"Authorization": f"Bearer {token}"})
    assert own.status_code == 200, own.text
    everything = ",".join(audit_actions())
    assert own.json()["items"] == timeline(client, patient_id=history.patient_id, limit=500,
                                           action=everything)["items"]
    assert history.other_study_uid not in own.text and history.other_patient_id not in own.text
    asked_for_another = client.request("GET", f"{P}/audit", None, params={"patient_id": history.other_patient_id},
                                       headers={"Authorization": f"Bearer {token}"})
    assert asked_for_another.status_code == 200 and asked_for_another.json()["total"] == 0


@pytest.mark.parametrize(("params", "named"), [
    ({"action": "bogus"}, "action"), ({"from": "last tuesday"}, "from"), ({"to": "2026-13-01"}, "to"),
    ({"from": "2026-11-02", "to": "2026-11-01"}, "from"), ({"study_uid": "not a uid"}, "study_uid"),
    ({"format": "xml"}, "format"), ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"),
    ({"offset": "-1"}, "offset"), ({"patient_id": "x" * 129}, "patient_id"),
])
def test_a_bad_filter_is_422_naming_it(client: Client, params: dict[str, str], named: str) -> None:
    answer = client.get(f"{P}/audit", "admin", params=params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(f"{named}:")
