"""The sample builder: complete, valid, deterministic, cached, and malformed exactly where intended."""

from __future__ import annotations

import itertools
import json
import re
import sys
import uuid
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from samples import build_samples as builder
from samples.build_samples import build_samples, manifest_files

SMALL_CT = 5
ORDER_FIELDS = {
    "order_id", "accession_number", "patient_id", "mrn", "patient_family_name", "patient_given_name",
    "birth_date", "sex", "modality", "scheduled_start", "description", "referring_physician", "status",
}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("samples")
    return out, build_samples(out, ct_slices=SMALL_CT)


def _valid_instances(manifest: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any], str, str]]:
    return [
        (study, series, file, sop)
        for study in manifest["studies"]
        for series in study["series"]
        for file, sop in zip(series["files"], series["sop_instance_uids"], strict=True)
    ]


def _study(manifest: dict[str, Any], key: str) -> dict[str, Any]:
    return next(s for s in manifest["studies"] if s["key"] == key)


def _z_positions(out: Path, files: list[str]) -> list[float]:
    return [float(pydicom.dcmread(out / f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]


def test_manifest_lists_every_file_and_nothing_else(small: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = small
    listed = manifest_files(manifest)
    assert len(listed) == len(set(listed))
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert on_disk == set(listed)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["generator_version"] == builder.GENERATOR_VERSION
    assert manifest["params"] == {"ct_slices": SMALL_CT}
    for study in manifest["studies"]:
        assert study["instance_count"] == sum(len(s["files"]) for s in study["series"])
        for index, series in enumerate(study["series"], start=1):
            assert all(f.startswith(f"{study['key']}/{index}/") for f in series["files"])


def test_every_valid_file_reads_and_matches_the_manifest(small: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = small
    for study, series, file, sop in _valid_instances(manifest):
        ds = pydicom.dcmread(out / file)
        assert ds.StudyInstanceUID == study["study_instance_uid"]
        assert ds.SeriesInstanceUID == series["series_instance_uid"]
        assert ds.SOPInstanceUID == sop == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
        assert ds.file_meta.TransferSyntaxUID == series["transfer_syntax"]
        assert ds.PatientID == study["patient_id_dicom"] and re.fullmatch(r"MRN-\d{6}", ds.PatientID)
        assert str(ds.PatientName) == study["patient_name"]
        assert ds.AccessionNumber == study["accession_number"]
        assert ds.StudyDate == study["study_date"].replace("-", "")
        assert ds.StudyDescription == study["description"] and ds.SeriesDescription == series["description"]
        assert ds.Modality == series["modality"] == study["modality"]
        assert ds.InstitutionName == "EHR Clinic"
        assert ds.ReferringPhysicianName and ds.PatientBirthDate and ds.PatientSex in {"M", "F", "O"}
        assert len(ds.PixelData) > 0
        assert not any(element.tag.is_private for element in ds)


def test_uids_are_unique(small: tuple[Path, dict[str, Any]]) -> None:
    _, manifest = small
    sops = [sop for *_, sop in _valid_instances(manifest)]
    series = [s["series_instance_uid"] for study in manifest["studies"] for s in study["series"]]
    studies = [study["study_instance_uid"] for study in manifest["studies"]]
    malformed = [m["sop_instance_uid"] for m in manifest["malformed"] if "sop_instance_uid" in m]
    everything = sops + series + studies + malformed
    assert len(everything) == len(set(everything)), Counter(everything).most_common(3)
    assert all(len(uid) <= 64 and re.fullmatch(r"[0-9.]+", uid) for uid in everything)


def test_builds_are_deterministic(small: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, manifest = small
    again = build_samples(tmp_path / "other", ct_slices=SMALL_CT)
    assert again == manifest
    first = _study(manifest, "ct_head")["series"][0]["files"][0]
    assert (tmp_path / "other" / first).read_bytes() == (out / first).read_bytes()


def test_second_call_is_the_fast_path(
    small: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, manifest = small
    mtimes = {f: (out / f).stat().st_mtime_ns for f in [*manifest_files(manifest), "manifest.json"]}

    def no_rebuild(*_: object) -> None:
        raise AssertionError("rebuilt although the manifest was up to date")

    monkeypatch.setattr(builder, "_build_study", no_rebuild)
    assert build_samples(out, ct_slices=SMALL_CT) == manifest
    assert {f: (out / f).stat().st_mtime_ns for f in mtimes} == mtimes


def test_other_parameters_rebuild_without_stale_files(tmp_path: Path) -> None:
    build_samples(tmp_path, ct_slices=4)
    manifest = build_samples(tmp_path, ct_slices=2)
    assert manifest["params"] == {"ct_slices": 2}
    assert sorted(p.name for p in (tmp_path / "ct_head" / "1").iterdir()) == ["0001.dcm", "0002.dcm"]


def test_a_missing_file_triggers_a_rebuild(tmp_path: Path) -> None:
    manifest = build_samples(tmp_path, ct_slices=2)
    victim = tmp_path / manifest["studies"][0]["series"][0]["files"][0]
    victim.unlink()
    assert build_samples(tmp_path, ct_slices=2) == manifest
    assert victim.is_file()


def test_ct_stack_is_evenly_spaced_along_z(small: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = small
    files = _study(manifest, "ct_head")["series"][0]["files"]
    assert len(files) == SMALL_CT
    datasets = [pydicom.dcmread(out / f) for f in files]
    assert [int(ds.InstanceNumber) for ds in datasets] == list(range(1, SMALL_CT + 1))
    assert all((ds.Rows, ds.Columns) == (512, 512) for ds in datasets)
    source = pydicom.dcmread(builder.source_path("693_UNCR.dcm"), stop_before_pixels=True)
    for index, ds in enumerate(datasets):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        assert (x, y) == (float(source.ImagePositionPatient[0]), float(source.ImagePositionPatient[1]))
        assert z == pytest.approx(float(source.ImagePositionPatient[2]) + index * float(ds.SliceThickness))
        assert float(ds.SliceLocation) == pytest.approx(z)
        assert list(ds.ImageOrientationPatient) == list(source.ImageOrientationPatient)
        assert ds.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    assert len({ds.PixelData for ds in datasets}) == SMALL_CT  # the per-slice marker makes each distinct


def test_mr_has_two_aligned_series(small: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = small
    study = _study(manifest, "mr_abdomen")
    assert [s["description"] for s in study["series"]] == ["T1 AX", "T2 AX"]
    positions = [_z_positions(out, s["files"]) for s in study["series"]]
    assert positions[0] == positions[1] and len(positions[0]) == 5
    assert all(b > a for a, b in itertools.pairwise(positions[0]))
    frames = {pydicom.dcmread(out / s["files"][0]).FrameOfReferenceUID for s in study["series"]}
    assert len(frames) == 1


def test_radiographs_and_ultrasound(small: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = small
    cr = pydicom.dcmread(out / _study(manifest, "cr_tibia")["series"][0]["files"][0])
    assert (cr.Modality, cr.SOPClassUID) == ("CR", "1.2.840.10008.5.1.4.1.1.1")
    assert (cr.Rows, cr.Columns) == (1760, 1760)
    dx = pydicom.dcmread(out / _study(manifest, "dx_chest")["series"][0]["files"][0])
    assert (dx.Modality, dx.SOPClassUID, dx.PresentationIntentType) == (
        "DX", "1.2.840.10008.5.1.4.1.1.1.1", "FOR PRESENTATION"
    )
    assert dx.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
    us = pydicom.dcmread(out / _study(manifest, "us_echo")["series"][0]["files"][0])
    assert (us.Modality, int(us.NumberOfFrames)) == ("US", 120)


def test_same_patient_across_ct_and_cr(small: tuple[Path, dict[str, Any]]) -> None:
    _, manifest = small
    ct, cr = _study(manifest, "ct_head"), _study(manifest, "cr_tibia")
    assert ct["patient_id_dicom"] == cr["patient_id_dicom"]
    assert ct["accession_number"] != cr["accession_number"]


def test_compressed_studies_keep_their_transfer_syntax(small: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = small
    expected = {
        "jpeg_baseline": {JPEGBaseline8Bit},
        "jpeg_2000": {JPEG2000Lossless, JPEG2000},
        "rle": {RLELossless},
    }
    for kind, syntaxes in expected.items():
        studies = [s for s in manifest["studies"] if s["transfer_syntax"] in syntaxes]
        assert studies, f"no {kind} study"
        for study in studies:
            for series in study["series"]:
                for file in series["files"]:
                    ds = pydicom.dcmread(out / file)
                    assert ds.file_meta.TransferSyntaxUID in syntaxes
                    assert ds.PixelData[:4] == b"\xfe\xff\x00\xe0"  # still encapsulated (Item tag)
                    source = pydicom.dcmread(builder.source_path(series["source"]))
                    assert ds.PixelData == source.PixelData


def test_malformed_files_fail_as_intended(small: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = small
    kinds = {entry["kind"]: out / entry["file"] for entry in manifest["malformed"]}
    assert set(kinds) == {"truncated", "no_preamble", "missing_study_uid", "not_dicom"}
    assert all(path.parent.name == "malformed" for path in kinds.values())

    try:
        truncated = pydicom.dcmread(kinds["truncated"])
    except Exception:  # noqa: BLE001 - failing to read at all is one of the two acceptable outcomes
        pass
    else:
        assert len(truncated.PixelData) < get_expected_length(truncated)

    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(kinds["no_preamble"])
    raw = kinds["no_preamble"].read_bytes()
    assert raw[128:132] != b"DICM"
    assert pydicom.dcmread(kinds["no_preamble"], force=True).SOPInstanceUID

    missing = pydicom.dcmread(kinds["missing_study_uid"])
    assert "StudyInstanceUID" not in missing
    assert missing.SOPInstanceUID and missing.SeriesInstanceUID

    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(kinds["not_dicom"])


def test_orders_describe_every_study(small: tuple[Path, dict[str, Any]]) -> None:
    _, manifest = small
    orders, studies = manifest["orders"], manifest["studies"]
    assert sorted(o["accession_number"] for o in orders) == sorted(s["accession_number"] for s in studies)
    by_accession = {s["accession_number"]: s for s in studies}
    patients: dict[str, str] = {}
    for order in orders:
        assert set(order) == ORDER_FIELDS
        study = by_accession[order["accession_number"]]
        assert re.fullmatch(r"ACC-\d{4}-\d{4}", order["accession_number"])
        assert uuid.UUID(order["order_id"]).version == 5 and order["order_id"] == study["order_id"]
        assert uuid.UUID(order["patient_id"]).version == 5
        assert order["mrn"] == study["patient_id_dicom"]
        assert patients.setdefault(order["mrn"], order["patient_id"]) == order["patient_id"]
        assert f"{order['patient_family_name']}^{order['patient_given_name']}" == study["patient_name"]
        assert date.fromisoformat(order["birth_date"]).isoformat() == order["birth_date"]
        assert order["sex"] in {"M", "F", "O"}
        assert order["modality"] == study["modality"]
        assert datetime.fromisoformat(order["scheduled_start"]).date().isoformat() == study["study_date"]
        assert order["description"] == study["description"]
        assert order["referring_physician"]
        assert order["status"] == "scheduled"
    assert len(set(patients.values())) == len(patients)  # one EHR patient per MRN
    assert len({o["order_id"] for o in orders}) == len(orders)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert builder.main(["--out", str(tmp_path), "--ct-slices", "2"]) == 0
    assert "8 studies" in capsys.readouterr().out
    assert json.loads((tmp_path / "manifest.json").read_text())["params"] == {"ct_slices": 2}


def test_default_build_has_a_full_ct_series(tmp_path: Path) -> None:
    manifest = build_samples(tmp_path)
    assert manifest["params"] == {"ct_slices": builder.DEFAULT_CT_SLICES}
    series = _study(manifest, "ct_head")["series"][0]
    assert len(series["files"]) >= 100
    headers = [pydicom.dcmread(tmp_path / f, stop_before_pixels=True) for f in series["files"]]
    sops = [str(ds.SOPInstanceUID) for ds in headers]
    assert sops == series["sop_instance_uids"] and len(set(sops)) == len(sops)
    z = [float(ds.ImagePositionPatient[2]) for ds in headers]
    assert all(b > a for a, b in itertools.pairwise(z))
