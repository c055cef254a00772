"""Small real DICOM studies for tests: pydicom's CT/MR test slices with the tags a test needs."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from ehr_stack.dicom import storescu
from ehr_stack.stack import Stack

SOURCES = {"CT": "CT_small.dcm", "MR": "MR_small.dcm"}


def make_study(
    out_dir: Path, *, patient_id: str | None, accession: str | None, study_date: str, modality: str = "CT",
    instances: int = 2, study_uid: str | None = None, series_uid: str | None = None,
) -> tuple[str, list[Path]]:
    """Write ``instances`` files of one series; returns (StudyInstanceUID, files)."""
    source = get_testdata_file(SOURCES.get(modality, "CT_small.dcm"))
    assert source is not None
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(instances):
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = index + 1
        if patient_id is None:
            del ds.PatientID
        else:
            ds.PatientID = patient_id
        ds.PatientName = "Test^Patient"
        ds.AccessionNumber = accession or ""
        ds.StudyDate = ds.SeriesDate = study_date
        ds.Modality = modality
        path = out_dir / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path)
        files.append(path)
    return study_uid, files


def send(stack: Stack, files: list[Path], calling_aet: str | None = None) -> None:
    result = storescu(files, host="127.0.0.1", port=stack.config.dicom_port,
                      calling_aet=calling_aet or stack.config.modality_aet, called_aet=stack.config.orthanc_aet)
    assert result.returncode == 0, result.stderr
