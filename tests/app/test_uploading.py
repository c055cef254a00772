"""An upload through the EHR API (``app.uploading.Batch``) on an in-memory Orthanc: files validated and stored,
then each study recorded and matched once, one audit row per study."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import pydicom
from sqlalchemy import text

from ehr_imaging.api.router import status_of
from ehr_imaging.app import ingest, uploading
from ehr_imaging.app.uploading import Batch
from ehr_imaging.services import Services
from ehr_imaging.store import orders
from tests.app.conftest import Handed
from tests.app.records import accession, mrn, put_order, upload_rows
from tests.dicom_factory import make_study
from tests.fakes.orthanc import FakeOrthanc


def test_a_batch_stores_its_files_and_records_one_row_per_study(
        services: Services, orthanc: FakeOrthanc, handed: Handed, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    order_id = put_order(services, mrn=patient, accession_number=acc)
    linked_uid, linked_files = make_study(tmp_path / "a", patient_id=patient, accession=acc, study_date="20261120",
                                          instances=3)
    other_uid, other_files = make_study(tmp_path / "b", patient_id=mrn(), accession=None, study_date="20261120",
                                        instances=2)
    with Batch(services, uploaded_by="tech-1", source="api") as batch:
        for path in [*linked_files, *other_files]:
            assert batch.add(path.name, path.read_bytes()).status == "stored"
        junk = batch.add("notes.txt", b"not a DICOM file")
        # Held from the ingest worker while the upload runs: a STABLE_STUDY now would record half a study.
        assert all(services.holds.is_held(study_id) for study_id in orthanc.studies)
        assert ingest.process_stable_study(services, next(iter(orthanc.studies))) is None
        studies = batch.finish()

    assert (junk.status, status_of(junk.failure("")), junk.study_instance_uid) == ("failed", 400, None)
    assert (batch.successful, batch.failed) == (5, 1)
    assert len(orthanc.instances) == 5 and len(orthanc.studies) == 2  # every good file is in Orthanc
    assert set(studies) == {linked_uid, other_uid}
    linked, other = studies[linked_uid], studies[other_uid]
    assert (linked.order_id, linked.upload_status, linked.number_of_files) == (order_id, "success", 3)
    assert (other.order_id, other.match_reason, other.number_of_files) == (None, "no matching order", 2)
    sizes = {uid: sum(len(p.read_bytes()) for p in files) for uid, files in
             ((linked_uid, linked_files), (other_uid, other_files))}
    assert upload_rows(services, linked_uid) == [("success", "api", "tech-1", 3, sizes[linked_uid], order_id)]
    assert upload_rows(services, other_uid) == [("success", "api", "tech-1", 2, sizes[other_uid], None)]
    order = orders.get(services.engine, order_id)
    assert order is not None and (order.study_instance_uid, order.match_rule) == (linked_uid, "accession")
    assert (order.upload_source, order.uploaded_by, order.number_of_images) == ("api", "tech-1", 3)
    # Recorded at the end and released: nothing left for the ingest worker to record, both revisited.
    assert not any(services.holds.is_held(s) for s in orthanc.studies)
    assert handed.later == []
    assert sorted(handed.revisited) == sorted(orthanc.studies)
    # The ingest worker's STABLE_STUDY afterwards adds no second row.
    for study_id in orthanc.studies:
        assert ingest.process_stable_study(services, study_id) is not None
    assert len(upload_rows(services, linked_uid)) == len(upload_rows(services, other_uid)) == 1


def test_an_explicit_order_links_and_a_cut_file_makes_the_study_partial(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    patient = mrn()
    order_id = put_order(services, mrn=patient, accession_number=accession())
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261120", instances=3)
    with Batch(services, uploaded_by="tech-2", source="api", order_id=order_id) as batch:
        batch.add(files[0].name, files[0].read_bytes())
        batch.add(files[1].name, files[1].read_bytes())
        cut = batch.add("cut.dcm", files[2].read_bytes()[:-2000])  # header intact, pixel data cut
        outcome = batch.finish()[uid]

    assert cut.status == "failed" and cut.error is not None and cut.error.startswith("incomplete DICOM file:")
    assert cut.study_instance_uid == uid  # counted against its study
    assert len(orthanc.instances) == 2
    assert (outcome.order_id, outcome.upload_status, outcome.number_of_files) == (order_id, "partial", 2)
    order = orders.get(services.engine, order_id)
    assert order is not None and (order.study_instance_uid, order.match_rule) == (uid, "explicit")
    [row] = upload_rows(services, uid)
    assert row[:4] == ("partial", "api", "tech-2", 2)


def test_a_study_uid_held_by_another_patient_is_refused_and_nothing_stored(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    victim = mrn()
    uid, files = make_study(tmp_path / "victim", patient_id=victim, accession=None, study_date="20261120",
                            instances=1)
    with Batch(services, uploaded_by="tech-3", source="api") as batch:
        batch.add(files[0].name, files[0].read_bytes())
        batch.finish()
    _, intruder = make_study(tmp_path / "intruder", patient_id=mrn(), accession=None, study_date="20261120",
                             instances=1, study_uid=uid)

    with Batch(services, uploaded_by="tech-3", source="api") as batch:
        refused = batch.add(intruder[0].name, intruder[0].read_bytes())
        batch.finish()

    assert (refused.status, status_of(refused.failure(""))) == ("failed", 409)
    assert refused.error is not None and refused.error.startswith("study uid collision")
    assert [s.patient_id for s in orthanc.studies.values()] == [victim]  # the intruder's file was not stored
    assert [row[0] for row in upload_rows(services, uid)] == ["success", "failed"]


def test_each_refused_file_carries_the_status_it_would_get_alone(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    """Issue 11: per file in upload-multiple and ZIP results, an unreadable or non-DICOM file is a 400 (as
    ``upload`` answers it), a readable DICOM file lacking a UID a 422, an unsafe member a 422."""
    _, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=2)
    no_uid = pydicom.dcmread(files[1])
    del no_uid.SOPInstanceUID
    buffer = io.BytesIO()
    no_uid.save_as(buffer)
    archive_bytes = io.BytesIO()
    with zipfile.ZipFile(archive_bytes, "w") as archive:
        archive.writestr("good.dcm", files[0].read_bytes())
        archive.writestr("notes.txt", b"not a DICOM file")
        archive.writestr("no-uid.dcm", buffer.getvalue())
        archive.writestr("../escape.dcm", files[0].read_bytes())
        archive.writestr("damaged.dcm", b"CORRUPTME-PAYLOAD")  # stored: its bytes are in the archive as they are
    damaged = archive_bytes.getvalue().replace(b"CORRUPTME-PAYLOAD", b"CORRUPTME-PAYLOAX")  # CRC no longer fits
    with zipfile.ZipFile(io.BytesIO(damaged)) as archive, \
            Batch(services, uploaded_by="tech-4", source="cd_import") as batch:
        uploading.store_archive(batch, archive, archive.infolist(), max_file_bytes=uploading.MB)
        batch.finish()

    kinds = {r.file_name: (r.status, status_of(r.failure("")) if r.status == "failed" else None)
             for r in batch.results}
    assert kinds == {"good.dcm": ("stored", None), "notes.txt": ("failed", 400), "no-uid.dcm": ("failed", 422),
                     "../escape.dcm": ("failed", 422), "damaged.dcm": ("failed", 400)}
    assert len(orthanc.instances) == 1


def test_the_study_records_the_uploads_own_source_and_uploader(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    """The batch records who sent the study and how (Orthanc's Origin metadata is not read for an upload)."""
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=2)
    with Batch(services, uploaded_by="tech-5", source="cd_import") as batch:
        for path in files:
            batch.add(path.name, path.read_bytes())
        studies = batch.finish()
    assert studies[uid].upload_status == "success"
    with services.engine.connect() as conn:
        link = conn.execute(text("SELECT upload_source, uploaded_by, number_of_instances FROM"
                                 " ehr_imaging.study_links WHERE study_instance_uid = :u"), {"u": uid}).one()
    assert tuple(link) == ("cd_import", "tech-5", 2)
    assert upload_rows(services, uid) == [("success", "cd_import", "tech-5", 2,
                                           sum(len(p.read_bytes()) for p in files), None)]


def test_add_all_checks_every_file_first_and_answers_as_add_one_by_one(
        services: Services, tmp_path: Path) -> None:
    """``Batch.add_all`` (upload-multiple): the same per-file results, in the files' order, and the same rows as
    ``add`` file by file, for good files, a cut one (counted against its study), a non-DICOM one and a file
    whose UID is missing; each run on its own Orthanc."""
    patient = mrn()
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261120", instances=3)
    no_uid = pydicom.dcmread(files[1])
    del no_uid.SeriesInstanceUID
    buffer = io.BytesIO()
    no_uid.save_as(buffer)
    sent: list[tuple[str, bytes | memoryview]] = [
        (files[0].name, files[0].read_bytes()), ("notes.txt", b"not a DICOM file"),
        ("cut.dcm", files[1].read_bytes()[:-2000]), ("no-series.dcm", buffer.getvalue()),
        (files[2].name, memoryview(files[2].read_bytes()))]

    def run(together: bool) -> tuple[list[dict[str, object]], list[str], FakeOrthanc]:
        orthanc = FakeOrthanc()
        with Batch(dataclasses.replace(services, pacs=orthanc), uploaded_by="tech-6", source="api") as batch:
            results = batch.add_all(sent) if together else [batch.add(name, data) for name, data in sent]
            batch.finish()
        assert [r.to_json() for r in results] == [r.to_json() for r in batch.results]
        return [r.to_json() for r in batch.results], [s.upload_status for s in batch.studies.values()], orthanc

    one_by_one, together = run(False), run(True)
    assert together[:2] == one_by_one[:2]
    assert [r["status"] for r in together[0]] == ["stored", "failed", "failed", "failed", "stored"]
    assert together[0][2]["study_instance_uid"] == uid  # the cut file still counts against its study
    assert together[1] == ["partial"]
    assert sorted(together[2].instances) == sorted(one_by_one[2].instances)
    assert [row[:4] for row in upload_rows(services, uid)] == [("partial", "api", "tech-6", 2)] * 2
