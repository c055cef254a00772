"""Minting signed image URLs (``app.image_urls``) on an in-memory Orthanc: the instance a URL opens is the recorded
patient's, never another patient's copy under the same UIDs, and each call is one recorded grant."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import UID
from sqlalchemy import text

from ehr_imaging.app import image_urls, ingest, study_resolution
from ehr_imaging.core import errors
from ehr_imaging.core import image_urls as rules
from ehr_imaging.core.auth import AuthError
from ehr_imaging.services import Services
from tests.app.records import mrn
from tests.dicom_factory import make_study
from tests.fakes.orthanc import FakeOrthanc, orthanc_id


def _as_patient(path: Path, patient_id: str, sop: str | None = None) -> bytes:
    ds = pydicom.dcmread(path)
    ds.PatientID = patient_id
    if sop is not None:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _opened(services: Services, url: str) -> rules.SignedImage:
    token = url.split(f"{rules.TOKEN_PARAM}=", 1)[1]
    return rules.verify(token, secret=services.signing_secret, issuer=services.settings.JwtIssuer)


def test_a_url_opens_the_recorded_patients_instance_never_another_patients_copy(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    patient, intruder = mrn(), mrn()
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261120", instances=2)
    recorded = {str(orthanc.receive(path.read_bytes())["ParentStudy"]) for path in files}.pop()
    orthanc.make_stable(recorded)
    ingest.process_stable_study(services, recorded)  # recorded for its patient (unmatched: there is no order)
    # Later, another patient's files under the same StudyInstanceUID (and SOP UIDs), and one SOP of its own.
    for path in files:
        orthanc.receive(_as_patient(path, intruder))
    only_theirs = "1.2.826.0.1.3680043.10.999.4242"
    orthanc.receive(_as_patient(files[0], intruder, sop=only_theirs))
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    sop, series = str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)
    assert len(orthanc.find_study_ids(uid)) == 2
    assert study_resolution.resolve_one(services, uid) == recorded  # the UID names the recorded patient's study

    made = image_urls.instance_url(services, "dr-app", sop, "jpeg", 60)

    image = _opened(services, made.url)
    assert image.orthanc_instance_id == orthanc_id(patient, uid, series, sop)  # the recorded patient's copy
    assert (image.sop_instance_uid, image.study_uid, image.image_format, made.study_uid) == (sop, uid, "jpeg", uid)
    assert made.url.endswith(f"/api/v1/dicom/images/{sop}/rendered?format=jpeg&image_token="
                             f"{made.url.split('image_token=')[1]}")
    with pytest.raises(errors.NotFound):  # held only in the other patient's copy
        image_urls.instance_url(services, "dr-app", only_theirs, "png", 60)
    with pytest.raises(errors.Malformed):
        image_urls.instance_url(services, "dr-app", "not-a-uid", "png", 60)


def test_a_studys_images_are_one_grant_recorded_with_its_urls(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=3)
    for path, number in zip(files, (3, 1, 2), strict=True):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = number
        ds.save_as(path)
        orthanc.receive(path.read_bytes())

    found = image_urls.study_images(services, "dr-app", uid, "png", 30)

    (series,) = found.series
    assert [i.instance_number for i in series.instances] == [1, 2, 3]
    opened = [_opened(services, found.urls[i.orthanc_id]) for i in series.instances]
    assert [o.sop_instance_uid for o in opened] == [i.sop_instance_uid for i in series.instances]
    assert {o.token_id for o in opened} == {found.grant.token_id}  # one grant for the whole answer
    assert {o.orthanc_instance_id for o in opened} == {i.orthanc_id for i in series.instances}
    with services.engine.connect() as conn:
        row = conn.execute(text("SELECT kind, subject, study_uids, expires_at FROM ehr_imaging.viewer_tokens"
                                " WHERE token_id = :t"), {"t": found.grant.token_id}).one()
    assert tuple(row[:3]) == ("image-url", "dr-app", [uid]) and row[3].timestamp() == found.grant.expires_at
    with pytest.raises(AuthError, match="expired"):  # bound to its expiry
        rules.verify(found.urls[series.instances[0].orthanc_id].split("image_token=")[1],
                     secret=services.signing_secret, issuer=services.settings.JwtIssuer,
                     now=found.grant.expires_at + 5)
