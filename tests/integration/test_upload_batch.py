"""upload-multiple and upload-zip through the plugin's API port: real sample files (CT, MR, CR, US
multi-frame, JPEG/J2K/RLE), malformed ones, ZIPs of whole studies and DICOMDIR media, jobs, limits,
concurrency. Counts are checked in Orthanc and in the audit rows."""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from samples.build_samples import build_samples
from tests.conftest import SAMPLES_CACHE, Client, running_stack
from tests.dicom_factory import make_study
from tests.integration.helpers import STABLE_WAIT, finished_job, mrn, query, stable_in_orthanc
from tests.waiting import eventually

pytestmark = pytest.mark.integration

Named = list[tuple[str, bytes]]


def fresh_study(keys: list[str]) -> tuple[dict[str, str], Named]:
    """The sample studies' real files under new UIDs (so every test stores them anew): {key: study UID}."""
    manifest = build_samples(SAMPLES_CACHE)
    uids: dict[str, str] = {}
    files: Named = []
    for study in manifest["studies"]:
        if study["key"] not in keys:
            continue
        study_uid = pydicom.uid.generate_uid()
        uids[study["key"]] = study_uid
        for series in study["series"]:
            series_uid = pydicom.uid.generate_uid()
            for name in series["files"]:
                ds = pydicom.dcmread(SAMPLES_CACHE / name)
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                files.append((name, buffer.getvalue()))
    return uids, files


def malformed(kind: str) -> tuple[str, bytes]:
    entry = next(m for m in build_samples(SAMPLES_CACHE)["malformed"] if m["kind"] == kind)
    return entry["file"], (SAMPLES_CACHE / entry["file"]).read_bytes()


def multiple(api: Client, files: Named, role: str = "technician", **form: str) -> requests.Response:
    parts = [("files", (name, data, "application/dicom")) for name, data in files]
    return api.request("POST", "/api/v1/dicom/upload-multiple", role, files=parts, data=form)


def zip_of(files: Named, *, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def upload_zip(api: Client, data: bytes, role: str = "technician", raw: bool = False) -> requests.Response:
    if raw:
        return api.request("POST", "/api/v1/dicom/upload-zip", role, data=data,
                           headers={"Content-Type": "application/zip", "X-File-Name": "cd.zip"})
    return api.request("POST", "/api/v1/dicom/upload-zip", role, files={"file": ("cd.zip", data, "application/zip")})


def orthanc_study(client: Client, study_uid: str) -> dict[str, Any]:
    found = client.request("POST", "/tools/lookup", auth=client.stack.admin_auth, data=study_uid).json()
    assert len(found) == 1, found
    stats: dict[str, Any] = client.get(f"/studies/{found[0]['ID']}/statistics", auth=client.stack.admin_auth).json()
    return stats


def ingested_after_upload(client: Client, study_uid: str) -> bool:
    """The study's record was updated after its first upload row was written: the ingest worker saw it since."""
    [(later,)] = query(client, "SELECT l.updated_at > (SELECT min(u.uploaded_at) FROM ehr_imaging.dicom_upload_logs u"
                       " WHERE u.study_instance_uid = l.study_instance_uid) FROM ehr_imaging.study_links l"
                       " WHERE l.study_instance_uid = :u", u=study_uid)
    return bool(later)


def upload_rows(client: Client, study_uid: str) -> list[tuple[Any, ...]]:
    return query(client, "SELECT upload_status, upload_source, number_of_files, total_size_bytes, file_names,"
                 " error_message, upload_duration_seconds FROM ehr_imaging.dicom_upload_logs"
                 " WHERE study_instance_uid = :u ORDER BY uploaded_at", u=study_uid)


def test_mixed_good_and_bad_files_are_reported_per_file(api: Client, client: Client) -> None:
    uids, good = fresh_study(["us_echo", "us_obstetric", "cr_tibia", "mr_brain_rle", "ct_head_j2k"])
    bad = [malformed("not_dicom"), malformed("missing_study_uid"), malformed("no_preamble")]
    answer = multiple(api, good + bad)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["total_files"], body["successful"], body["failed"]) == (len(good) + 3, len(good), 3)
    by_name = {r["file_name"]: r for r in body["results"]}
    for name, _ in good:
        result = by_name[name]
        assert result["status"] == "stored" and result["error"] is None, result
        assert result["sop_instance_uid"] and result["orthanc_instance_id"] and result["study_instance_uid"]
    for name, _ in bad:
        assert by_name[name]["status"] == "failed" and by_name[name]["error"], by_name[name]
        assert by_name[name]["orthanc_instance_id"] is None
    assert sorted(s["study_instance_uid"] for s in body["studies"]) == sorted(uids.values())
    for key, study_uid in uids.items():
        expected = sum(1 for name, _ in good if name.startswith(key + "/"))
        assert orthanc_study(client, study_uid)["CountInstances"] == expected
        [row] = upload_rows(client, study_uid)
        assert row[:3] == ("success", "api", expected)
        assert row[3] == sum(len(data) for name, data in good if name.startswith(key + "/"))
        assert row[6] is not None and row[6] > 0
    # the files no study can be named for: one failed row listing them with their errors
    failed = query(client, "SELECT file_names, error_message, number_of_files FROM ehr_imaging.dicom_upload_logs"
                   " WHERE upload_status = 'failed' AND file_names ? :n", n=bad[0][0])
    assert failed and failed[-1][2] == 3
    assert all(f"{name}: " in failed[-1][1] for name, _ in bad)


def test_a_study_with_some_files_refused_is_partial(api: Client, client: Client, tmp_path: Path) -> None:
    study_uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=3)
    truncated = files[0].read_bytes()[:-2000]  # header intact (its UIDs are read), pixel data cut
    named = [(f.name, f.read_bytes()) for f in files[1:]] + [("cut.dcm", truncated)]
    body = multiple(api, named).json()
    cut = next(r for r in body["results"] if r["file_name"] == "cut.dcm")
    assert cut["status"] == "failed" and cut["error"].startswith("incomplete DICOM file:"), cut
    assert cut["study_instance_uid"] == study_uid
    assert (body["successful"], body["failed"]) == (2, 1)
    [row] = upload_rows(client, study_uid)
    assert row[0] == "partial" and row[2] == 2 and "cut.dcm" in row[4] and "cut.dcm: " in row[5]


def test_a_hundred_instance_upload_is_counted_in_orthanc_and_in_one_audit_row(api: Client, client: Client,
                                                                             tmp_path: Path) -> None:
    study_uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=100)
    named = [(f.name, f.read_bytes()) for f in files]
    began = time.monotonic()
    body = multiple(api, named, role="ehr-service").json()
    elapsed = time.monotonic() - began
    assert (body["total_files"], body["successful"], body["failed"]) == (100, 100, 0), elapsed
    assert orthanc_study(client, study_uid)["CountInstances"] == 100
    # The ingest worker must not add a second row once the study is stable: wait until it has recorded the
    # stable study itself (the study's facts updated after the upload's own row), then count the rows.
    stable_in_orthanc(client, study_uid)
    eventually(lambda: ingested_after_upload(client, study_uid), timeout=STABLE_WAIT,
               what=f"the ingest worker to record the stable study {study_uid} after its upload")
    rows = upload_rows(client, study_uid)
    assert len(rows) == 1, rows
    assert rows[0][:4] == ("success", "api", 100, sum(len(d) for _, d in named))
    assert query(client, "SELECT number_of_instances FROM ehr_imaging.study_links WHERE study_instance_uid = :u",
                 u=study_uid) == [(100,)]


def test_a_zip_of_a_whole_study(api: Client, client: Client) -> None:
    uids, files = fresh_study(["mr_abdomen"])
    answer = upload_zip(api, zip_of(files))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["total_files"], body["successful"], body["failed"]) == (len(files), len(files), 0)
    assert orthanc_study(client, uids["mr_abdomen"])["CountInstances"] == len(files)
    [row] = upload_rows(client, uids["mr_abdomen"])
    assert row[:3] == ("success", "cd_import", len(files))


def test_a_dicomdir_medium_as_raw_zip_body(api: Client, client: Client) -> None:
    """A CD's layout: DICOMDIR index, files without extensions in nested folders, viewer files beside."""
    uids, files = fresh_study(["ct_head_j2k", "cr_tibia"])
    medium = [(f"DICOM/S{i // 2:03d}/IM{i:05d}", data) for i, (_, data) in enumerate(files)]
    extra = {"DICOMDIR": b"\0" * 128 + b"DICM index", "AUTORUN.INF": b"[autorun]\n", "DICOM/": b""}
    answer = upload_zip(api, zip_of(medium, extra=extra), raw=True)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    names = [r["file_name"] for r in body["results"]]
    assert "DICOMDIR" not in names and "DICOM/" not in names  # skipped, not failed
    assert (body["successful"], body["failed"]) == (len(files), 1)
    assert next(r for r in body["results"] if r["file_name"] == "AUTORUN.INF")["status"] == "failed"
    for study_uid in uids.values():
        assert orthanc_study(client, study_uid)["CountInstances"] >= 1
        assert upload_rows(client, study_uid)[0][1] == "cd_import"


def test_a_malicious_zip_stores_nothing_it_should_not(api: Client, client: Client, tmp_path: Path) -> None:
    study_uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=2)
    data = zip_of([("ok.dcm", files[0].read_bytes()), ("../../escape.dcm", files[1].read_bytes())])
    body = upload_zip(api, data).json()
    result = {r["file_name"]: (r["status"], r["error"]) for r in body["results"]}
    assert result == {"ok.dcm": ("stored", None), "../../escape.dcm": ("failed", "unsafe path in archive")}
    assert orthanc_study(client, study_uid)["CountInstances"] == 1
    not_a_zip = upload_zip(api, b"PK\x03\x04 this is no archive")
    assert not_a_zip.status_code == 422 and "ZIP" in not_a_zip.json()["detail"]
    # A small archive declaring a flood of members is refused from its end record, before zipfile loads them.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as flood:
        for n in range(5000):
            flood.writestr(f"x/{n}", b"")
    flooded = upload_zip(api, buffer.getvalue())
    assert flooded.status_code == 413 and "5000 entries" in flooded.json()["detail"]


def test_ten_concurrent_uploads_lose_no_audit_row(api: Client, client: Client, tmp_path: Path) -> None:
    studies = [make_study(tmp_path / str(i), patient_id=mrn(), accession=None, study_date="20261120", instances=3)
               for i in range(10)]

    def send(index: int) -> requests.Response:
        files = studies[index][1]
        if index % 2:
            return upload_zip(Client(api.stack, api.base), zip_of([(f.name, f.read_bytes()) for f in files]))
        return multiple(Client(api.stack, api.base), [(f.name, f.read_bytes()) for f in files])

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(send, range(10)))
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers if a.status_code != 200]
    for uid, _ in studies:
        rows = upload_rows(client, uid)
        assert len(rows) == 1 and rows[0][2] == 3, rows
        assert orthanc_study(client, uid)["CountInstances"] == 3


def test_limits_answer_413_store_nothing_and_are_audited(api: Client, client: Client, tmp_path: Path) -> None:
    with running_stack("upload-limits", extra_settings={"Timezone": "UTC", "MaxFilesPerUpload": 3,
                                                        "MaxFileSizeMb": 1, "MaxUploadSizeMb": 2,
                                                        "MaxZipUncompressedMb": 2}) as own:
        small = Client(own, own.api_url)
        _, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=4)
        named = [(f.name, f.read_bytes()) for f in files]
        big = ("big.dcm", named[0][1] + b"\0" * (1024 * 1024))

        def refused(answer: requests.Response, words: str) -> None:
            assert answer.status_code == 413, answer.text
            assert words in answer.json()["detail"]
            rows = query(small, "SELECT upload_status FROM ehr_imaging.dicom_upload_logs WHERE error_message = :e",
                         e=answer.json()["detail"])
            assert rows and rows[0][0] == "failed"

        refused(multiple(small, named), "at most 3 per upload")
        refused(multiple(small, [named[0], big]), "larger than 1 MB")
        refused(upload_zip(small, zip_of(named)), "at most 3 per upload")
        refused(upload_zip(small, zip_of([big])), "larger than 1 MB")
        refused(upload_zip(small, zip_of([(f"{i}.dcm", b"\0" * 900_000) for i in range(3)])), "expands to more")
        single = small.request("POST", "/api/v1/dicom/upload", "technician",
                               files={"file": ("big.dcm", big[1], "application/dicom")})
        refused(single, "larger than 1 MB")
        # the listener refuses a body over MaxUploadSizeMb from its Content-Length, before reading it
        huge = small.request("POST", "/api/v1/dicom/upload-zip", "technician", data=b"\0" * (3 * 1024 * 1024),
                             headers={"Content-Type": "application/zip"})
        assert huge.status_code == 413
        assert small.get("/api/v1/dicom/stats", "admin").json()["total_instances"] == 0


def test_a_large_zip_runs_as_a_job_polled_to_completion(tmp_path: Path) -> None:
    with running_stack("upload-jobs", extra_settings={"Timezone": "UTC", "UploadJobAboveFiles": 5}) as own:
        api = Client(own, own.api_url)
        study_uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120",
                                      instances=30)
        data = zip_of([(f"IMG/{f.name}", f.read_bytes()) for f in files], extra={"notes.txt": b"hello"})
        answer = upload_zip(api, data)
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert job["status"] == "queued" and job["status_url"] == f"/api/v1/dicom/upload-jobs/{job['job_id']}"
        seen: set[str] = set()
        status = finished_job(api, job["status_url"], seen)
        assert status["status"] == "completed", status
        assert (status["total_files"], status["processed_files"], status["successful"], status["failed"]) == \
            (31, 31, 30, 1)
        assert len(status["results"]) == 31
        assert next(r for r in status["results"] if r["file_name"] == "notes.txt")["status"] == "failed"
        [row] = upload_rows(api, study_uid)
        assert row[:3] == ("partial", "cd_import", 30) or row[:3] == ("success", "cd_import", 30)
        assert orthanc_study(Client(own), study_uid)["CountInstances"] == 30
        # only its owner (or an admin) sees a job; unknown ids are 404
        assert api.get(job["status_url"], "technician", headers={"Authorization": "Bearer " + api.token(
            "technician", subject="someone-else")}).status_code == 404
        assert api.get(job["status_url"], "admin").status_code == 200
        assert api.get(f"/api/v1/dicom/upload-jobs/{uuid.uuid4()}", "technician").status_code == 404
        assert api.get(job["status_url"], "nurse").status_code == 403
        # Orthanc's own port takes the raw ZIP body and answers the same 202
        again = upload_zip(Client(own), data, raw=True)
        assert again.status_code == 202, again.text
        assert Client(own).get(again.json()["status_url"], "technician").json()["total_files"] == 31


def test_upload_routes_refuse_what_they_should(api: Client) -> None:
    assert multiple(api, [("a.dcm", b"x")], role="nurse").status_code == 403
    assert api.request("POST", "/api/v1/dicom/upload-multiple").status_code == 401
    assert api.request("POST", "/api/v1/dicom/upload-multiple", "doctor", files={"other": ("a", b"x")}).status_code \
        == 400
    wrong = api.request("POST", "/api/v1/dicom/upload-zip", "doctor", data=b"x", headers={"Content-Type": "text/plain"})
    assert wrong.status_code == 415 and "application/zip" in wrong.json()["detail"]
