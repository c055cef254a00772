"""A StudyInstanceUID reused under another PatientID (security review, issue 9 item 2) on every ingest path:
never merged into, linked to or shown under the recorded patient's study; quarantined for reconciliation
(C-STORE, Orthanc's REST API) or refused before anything is stored (the EHR's upload routes)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.conftest import Client
from tests.dicom_factory import make_study, send
from tests.integration.helpers import order, query
from tests.integration.offline_helpers import binary, declaration, declare
from tests.integration.viewer_helpers import FRAME_ACCEPT, StoredStudy, as_viewer, store_study, viewer_token
from tests.waiting import eventually

pytestmark = pytest.mark.integration

COLLISION = "study uid collision"


def intruder(directory: Path, victim: StoredStudy, instances: int = 1) -> list[Path]:
    """The attacker's files: the victim's StudyInstanceUID, another PatientID, new series and SOP UIDs."""
    _, files = make_study(directory, patient_id="ATTACKER-1", accession=None, study_date="20261120",
                          study_uid=victim.uid, instances=instances)
    return files


def orthanc_studies(client: Client, uid: str) -> list[str]:
    found = client.request("POST", "/tools/lookup", auth=client.stack.admin_auth, data=uid).json()
    return sorted(f["ID"] for f in found if f["Type"] == "Study")


def link_row(client: Client, uid: str) -> tuple[Any, ...]:
    rows = query(client, "SELECT orthanc_study_id, patient_id, number_of_instances, order_id"
                 " FROM ehr_imaging.study_links WHERE study_instance_uid = :u", u=uid)
    assert len(rows) == 1
    return rows[0]


def queued(client: Client, sent_as: str) -> dict[str, Any] | None:
    """The reconciliation queue's entry of the study sent under the StudyInstanceUID ``sent_as``, moved."""
    items = client.get("/api/v1/dicom/unmatched?limit=500", "admin").json()["items"]
    return next((i for i in items if i["original_study_instance_uid"] == sent_as), None)


def assert_victim_untouched(client: Client, victim: StoredStudy, before: tuple[Any, ...]) -> None:
    assert link_row(client, victim.uid) == before
    linked = order(client, victim.order_id)
    assert (linked["study_instance_uid"], linked["orthanc_study_id"], linked["number_of_images"]) == (
        victim.uid, before[0], len(victim.instances))
    found = client.get(f"/api/v1/dicom/studies?mrn={victim.patient_id}", "doctor").json()
    assert [s["StudyInstanceUID"] for s in found["items"]] == [victim.uid]
    study = client.get(f"/api/v1/dicom/studies/{victim.uid}", "doctor").json()
    assert (study["PatientID"], study["OrthancStudyID"], study["NumberOfInstances"]) == (
        victim.patient_id, before[0], len(victim.instances))


def test_cstore_and_orthancs_rest_upload_are_quarantined(client: Client, tmp_path: Path) -> None:
    victim = store_study(client, tmp_path / "victim", instances=3)
    before = link_row(client, victim.uid)
    token = viewer_token(client, study_uids=[victim.uid])["token"]  # minted before the intruder arrives

    via_cstore = intruder(tmp_path / "cstore", victim)
    intruder_series = str(pydicom.dcmread(via_cstore[0], stop_before_pixels=True).SeriesInstanceUID)
    intruder_sop = str(pydicom.dcmread(via_cstore[0], stop_before_pixels=True).SOPInstanceUID)
    send(client.stack, via_cstore)
    eventually(lambda: (queued(client, victim.uid) or {}).get("number_of_instances") == 1,
               timeout=30, what="the intruder in the reconciliation queue")
    item = queued(client, victim.uid)
    assert item is not None
    moved_uid, moved_id = item["study_instance_uid"], item["orthanc_study_id"]
    assert (item["reason"], item["patient_id"], item["collides_with_orthanc_study_id"]) == (
        COLLISION, "ATTACKER-1", before[0])
    assert moved_uid.startswith("2.25.") and moved_uid != victim.uid
    # Moved out of the victim's StudyInstanceUID, with series and SOP UIDs of its own: nothing lost or mixed.
    eventually(lambda: orthanc_studies(client, victim.uid) == [before[0]],
               timeout=30, what="the victim's UID to be hers alone")
    assert orthanc_studies(client, moved_uid) == [moved_id]
    moved = client.get(f"/studies/{moved_id}/instances", auth=client.stack.admin_auth).json()
    assert len(moved) == 1 and moved[0]["MainDicomTags"]["SOPInstanceUID"].startswith("2.25.")
    assert_victim_untouched(client, victim, before)

    # Orthanc's own REST upload (an admin in Explorer) ends the same way, in the same quarantined study.
    _, more = make_study(tmp_path / "rest", patient_id="ATTACKER-1", accession=None, study_date="20261120",
                         study_uid=victim.uid, instances=1)
    stored = client.request("POST", "/instances", auth=client.stack.admin_auth, data=more[0].read_bytes())
    assert stored.status_code == 200, stored.text
    eventually(lambda: (queued(client, victim.uid) or {}).get("number_of_instances") == 2,
               timeout=30, what="the second file moved into the same quarantined study")
    assert orthanc_studies(client, victim.uid) == [before[0]] and orthanc_studies(client, moved_uid) == [moved_id]
    assert_victim_untouched(client, victim, before)
    match = client.get(f"/api/v1/dicom/studies/{victim.uid}/match", "admin").json()
    assert match["status"] == "linked" and match["quarantined_orthanc_study_ids"] == [moved_id]
    audit = query(client, "SELECT action, reason FROM ehr_imaging.link_audit WHERE study_instance_uid = :u"
                  " AND action = 'quarantine'", u=victim.uid)
    assert len(audit) == 1 and COLLISION in audit[0][1] and moved_uid in audit[0][1]
    # Each arrival has its upload row (the quarantined study's, no order), as every ingest does.
    rows = query(client, "SELECT number_of_files, order_id, patient_id, error_message"
                 " FROM ehr_imaging.dicom_upload_logs WHERE orthanc_study_id = :o ORDER BY uploaded_at", o=moved_id)
    assert [(r[0], r[1], r[2]) for r in rows] == [(1, None, "ATTACKER-1"), (1, None, "ATTACKER-1")]
    assert all(COLLISION in r[3] for r in rows)
    # The quarantined study is never a study of its own for the EHR, nor in a viewer token.
    assert client.get(f"/api/v1/dicom/studies/{moved_uid}", "doctor").status_code == 404
    refused = client.request("POST", "/api/v1/dicom/viewer-token", "doctor", json={"study_uids": [moved_uid]})
    assert refused.status_code == 404, refused.text

    # The viewer token minted before opens the victim's study only, at every level.
    base = f"/dicom-web/studies/{victim.uid}"
    assert as_viewer(client, token, f"{base}/series/{victim.series}/metadata").status_code == 200
    assert as_viewer(client, token, f"{base}/series/{intruder_series}/metadata").status_code == 403
    assert as_viewer(client, token, f"/dicom-web/studies/{moved_uid}/series").status_code == 403
    assert as_viewer(client, token, f"{base}/series/{intruder_series}/instances/{intruder_sop}/frames/1",
                     headers={"Accept": FRAME_ACCEPT}).status_code == 403
    series = as_viewer(client, token, f"{base}/series")
    assert series.status_code == 200 and [s["0020000E"]["Value"][0] for s in series.json()] == [victim.series]
    assert as_viewer(client, token, f"{base}/metadata").status_code == 200
    studies = as_viewer(client, token, "/ehr-imaging/dicom-web/studies?PatientID=*").json()
    assert [s["00100020"]["Value"][0] for s in studies] == [victim.patient_id]
    scoped = as_viewer(client, token, f"/ehr-imaging/dicom-web/studies/{victim.uid}/series").json()
    assert [s["0020000E"]["Value"][0] for s in scoped] == [victim.series]

    # Deleting the quarantined study (a person's decision) takes it out of the queue.
    assert client.request("DELETE", f"/studies/{moved_id}", auth=client.stack.admin_auth).status_code == 200
    eventually(lambda: queued(client, victim.uid) is None, timeout=30, what="the deleted intruder to leave the queue")
    assert_victim_untouched(client, victim, before)


def upload_single(client: Client, path: Path) -> Any:
    return client.request("POST", "/api/v1/dicom/upload", "technician", data=path.read_bytes(),
                          headers={"Content-Type": "application/dicom"})


def upload_multiple(api: Client, path: Path) -> Any:
    return api.request("POST", "/api/v1/dicom/upload-multiple", "technician",
                       files=[("files", (path.name, path.read_bytes(), "application/dicom"))])


def upload_zip(api: Client, path: Path) -> Any:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(path.name, path.read_bytes())
    return api.request("POST", "/api/v1/dicom/upload-zip", "technician",
                       files={"file": ("cd.zip", buffer.getvalue(), "application/zip")})


def upload_offline(api: Client, path: Path) -> Any:
    declared = declare(api, declaration(path, str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)))
    assert declared.status_code == 200, declared.text
    return binary(api, declared.json()["upload_id"], path.read_bytes())


@pytest.mark.parametrize("route", ["single", "multiple", "zip", "offline"])
def test_the_ehr_upload_routes_refuse_a_collision_and_store_nothing(client: Client, api: Client, tmp_path: Path,
                                                                    route: str) -> None:
    victim = store_study(client, tmp_path / "victim")
    before = link_row(client, victim.uid)
    files = intruder(tmp_path / "intruder", victim)
    answer = {"single": lambda: upload_single(client, files[0]), "multiple": lambda: upload_multiple(api, files[0]),
              "zip": lambda: upload_zip(api, files[0]), "offline": lambda: upload_offline(api, files[0])}[route]()
    text = answer.text
    if route in ("single", "offline"):
        assert answer.status_code == 409, text
        assert COLLISION in answer.json()["detail"]
    else:  # per-file results (200, README: "partial success is 200, reported per file"): nothing stored
        assert answer.status_code == 200, text
        result = answer.json()["results"][0]
        assert result["status"] == "failed" and COLLISION in result["error"], text
    assert orthanc_studies(client, victim.uid) == [before[0]]  # nothing of the intruder's was stored
    assert_victim_untouched(client, victim, before)
    failed = query(client, "SELECT upload_status, error_message FROM ehr_imaging.dicom_upload_logs"
                   " WHERE study_instance_uid = :u AND upload_status = 'failed'", u=victim.uid)
    assert len(failed) == 1 and COLLISION in failed[0][1]


def test_a_resent_batch_of_the_same_patient_is_not_a_collision(client: Client, tmp_path: Path) -> None:
    victim = store_study(client, tmp_path / "first")
    _, late = make_study(tmp_path / "late", patient_id=victim.patient_id, accession=None, study_date="20261120",
                         study_uid=victim.uid, instances=1)
    answer = upload_single(client, late[0])
    assert answer.status_code == 200, answer.text
    assert link_row(client, victim.uid)[2] == len(victim.instances) + 1


def test_a_full_resend_under_another_patient_id_never_mixes_and_never_blocks_the_victim(
        client: Client, tmp_path: Path) -> None:
    """The same files (study, series and SOP UIDs all reused) sent again under another PatientID, as a modality
    re-sending a study keyed to the wrong patient does. While both are in Orthanc under the same UIDs, queries of
    the victim's token are refused (not answered with a mix); once quarantined, the copy has UIDs of its own at
    every level, and the victim's series, metadata and frames read again."""
    victim = store_study(client, tmp_path / "victim", instances=2)
    before = link_row(client, victim.uid)
    token = viewer_token(client, study_uids=[victim.uid])["token"]
    copies = []
    for path in sorted((tmp_path / "victim").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.PatientName = "ATTACKER-2", "Other^Patient"
        copy = tmp_path / f"copy-{path.name}"
        ds.save_as(copy)
        copies.append(copy)
    in_series = f"/dicom-web/studies/{victim.uid}/series/{victim.series}/instances?includefield=00100010"
    send(client.stack, copies)
    # Within StableAge (2 s here) of the resend both studies hold the UIDs: the query is refused, not mixed.
    assert as_viewer(client, token, in_series).status_code == 403
    scoped = f"/ehr-imaging/dicom-web/studies/{victim.uid}/series/{victim.series}/instances"
    assert as_viewer(client, token, scoped).status_code == 403

    eventually(lambda: orthanc_studies(client, victim.uid) == [before[0]],
               timeout=30, what="the copy moved out of the UID")
    item = queued(client, victim.uid)
    assert item is not None and item["patient_id"] == "ATTACKER-2" and item["reason"] == COLLISION
    moved = client.get(f"/studies/{item['orthanc_study_id']}/instances", auth=client.stack.admin_auth).json()
    moved_sops = {i["MainDicomTags"]["SOPInstanceUID"] for i in moved}
    assert len(moved_sops) == 2 and not moved_sops & set(victim.instances)  # UIDs of its own at every level
    assert_victim_untouched(client, victim, before)

    answer = as_viewer(client, token, in_series)
    assert answer.status_code == 200
    assert sorted(i["00080018"]["Value"][0] for i in answer.json()) == sorted(victim.instances)
    assert {i["00100010"]["Value"][0]["Alphabetic"] for i in answer.json()} == {"Test^Patient"}
    base = f"/dicom-web/studies/{victim.uid}/series/{victim.series}"
    assert as_viewer(client, token, f"{base}/metadata").status_code == 200
    frame = as_viewer(client, token, f"{base}/instances/{victim.instances[0]}/frames/1",
                      headers={"Accept": FRAME_ACCEPT})
    assert frame.status_code == 200, frame.text
