"""Builds a realistic, deterministic set of sample DICOM studies (and their EHR orders) from real files.

The sources are the real images shipped with pydicom and pydicom-data; nothing is downloaded and nothing
generated is committed. Each source is re-identified for a fictional patient/study/series/instance with
UIDs derived from stable strings, so every build of the same parameters yields the same UIDs (the stack
can re-load the samples without creating duplicates). ``DIR/manifest.json`` is written last and acts as
the cache key: a second build with the same generator version and parameters returns it untouched.

Usage: ``python samples/build_samples.py --out DIR [--ct-slices N] [--force]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import struct
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, PYDICOM_ROOT_UID, UID, generate_uid
from pydicom.valuerep import DSfloat

GENERATOR_VERSION = 1
DEFAULT_CT_SLICES = 120
MANIFEST_NAME = "manifest.json"
MALFORMED_DIR = "malformed"
INSTITUTION = "EHR Clinic"

# Stable namespace for the EHR-side identifiers (orders, patients); UIDs use their own entropy prefix.
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ehr-imaging:samples")
_UID_ENTROPY = "ehr-imaging/samples"

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"

# Source attributes that describe the original patient/visit/site, or point at instances that are not
# part of the sample set; they are dropped rather than left contradicting the fictional identity.
_DROPPED_KEYWORDS = (
    # patient and visit
    "OtherPatientIDs", "OtherPatientNames", "OtherPatientIDsSequence", "PatientAddress",
    "PatientTelephoneNumbers", "PatientSize", "PatientWeight", "EthnicGroup", "AdditionalPatientHistory",
    "PregnancyStatus", "RequestAttributesSequence", "RequestedProcedureID", "PerformedProcedureStepID",
    "ScheduledProcedureStepID",
    # site and staff
    "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "OperatorsName",
    "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "TimezoneOffsetFromUTC",
    # references to instances outside the sample set, and leftovers of the sources' own de-identification
    "ReferencedImageSequence", "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
    "SourceImageSequence", "StorageMediaFileSetUID", "InstanceCreatorUID", "IconImageSequence",
    "ImageComments", "DataSetTrailingPadding", "PatientIdentityRemoved", "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
)
_DATE_KEYWORDS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate")


@dataclass(frozen=True)
class Patient:
    """A fictional patient; the MRN is the DICOM PatientID and the key of the EHR patient UUID."""

    mrn: str
    family_name: str
    given_name: str
    birth_date: date
    sex: str  # DICOM M/F/O

    @property
    def dicom_name(self) -> str:
        return f"{self.family_name}^{self.given_name}"

    @property
    def ehr_id(self) -> str:
        return str(uuid.uuid5(_UUID_NAMESPACE, f"patient/{self.mrn}"))


@dataclass(frozen=True)
class Stack:
    """How to lay a single source slice out as a volume: count slices along the slice normal."""

    count: int
    spacing: float
    first_location: float | None = None  # None keeps the source's own position for the first slice


@dataclass(frozen=True)
class SeriesSpec:
    """One series: a real source file, optionally repeated as a stack, plus tag overrides (None deletes)."""

    source: str
    description: str
    stack: Stack | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudySpec:
    """One study as the EHR ordered it; ``scheduled`` is the order's start, the study starts a bit later."""

    key: str
    patient: Patient
    accession: str
    scheduled: datetime
    modality: str
    description: str
    referring: str
    series: tuple[SeriesSpec, ...]
    body_part: str = ""

    @property
    def started(self) -> datetime:
        return self.scheduled + timedelta(minutes=7, seconds=13)

    @property
    def order_id(self) -> str:
        return str(uuid.uuid5(_UUID_NAMESPACE, f"order/{self.accession}"))


@dataclass(frozen=True)
class Identity:
    """Everything the re-identification of one instance needs beyond the source dataset itself."""

    study: StudySpec
    series_index: int  # 0-based
    series: SeriesSpec
    instance_number: int  # 1-based

    def uid(self, *parts: str) -> UID:
        return _uid(self.study.key, *parts)

    @property
    def study_uid(self) -> UID:
        return self.uid("study")

    @property
    def series_uid(self) -> UID:
        return self.uid("series", str(self.series_index))

    @property
    def sop_uid(self) -> UID:
        return self.uid("series", str(self.series_index), "instance", str(self.instance_number))


def _uid(*parts: str) -> UID:
    """A UID that depends only on ``parts``.

    ``generate_uid(prefix=None, ...)`` ignores its entropy sources (it returns a random 2.25 UUID), so
    the deterministic form needs a prefix; pydicom's root is the one it offers for this use.
    """
    return generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=[_UID_ENTROPY, *parts])


def _ds_number(value: float) -> DSfloat:
    """A DS value that always fits the 16-character limit, whatever float arithmetic produced."""
    return DSfloat(value, auto_format=True)


def _da(value: date) -> str:
    return value.strftime("%Y%m%d")


def _tm(value: datetime) -> str:
    return value.strftime("%H%M%S")


def _age(birth: date, on: date) -> str:
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return f"{years:03d}Y"


# --- sources ---------------------------------------------------------------------------------------


def source_path(name: str) -> Path:
    """Resolve a pydicom / pydicom-data test file locally; refusing to download keeps builds offline."""
    found = get_testdata_file(name, download=False)
    if not isinstance(found, str):
        raise FileNotFoundError(f"sample source {name!r} not found (is pydicom-data installed?)")
    return Path(found)


def _read_source(name: str) -> Dataset:
    return pydicom.dcmread(source_path(name))


# --- re-identification -------------------------------------------------------------------------------


def _slice_normal(ds: Dataset) -> tuple[float, float, float]:
    row = [float(v) for v in ds.ImageOrientationPatient[:3]]
    col = [float(v) for v in ds.ImageOrientationPatient[3:]]
    return (
        row[1] * col[2] - row[2] * col[1],
        row[2] * col[0] - row[0] * col[2],
        row[0] * col[1] - row[1] * col[0],
    )


def _place_in_stack(ds: Dataset, source_position: list[float], stack: Stack, index: int) -> None:
    """Move the slice along its normal so a stack has evenly spaced, strictly increasing locations."""
    normal = _slice_normal(ds)
    source_location = sum(p * n for p, n in zip(source_position, normal, strict=True))
    first = source_location if stack.first_location is None else stack.first_location
    location = first + index * stack.spacing
    shift = location - source_location
    position = [p + shift * n for p, n in zip(source_position, normal, strict=True)]
    ds.ImagePositionPatient = [_ds_number(p) for p in position]
    ds.SliceLocation = _ds_number(location)
    ds.SliceThickness = _ds_number(stack.spacing)
    if "SpacingBetweenSlices" in ds:
        ds.SpacingBetweenSlices = _ds_number(stack.spacing)


def _mark_slice(ds: Dataset, original: bytes, index: int) -> None:
    """Stamp a small bright square whose position encodes the slice index.

    It makes every slice's pixels distinct (and scrolling visible in a viewer) at the cost of one copy of
    the pixel buffer; only plain 16-bit single-frame greyscale data is touched, compressed data never.
    """
    if (
        ds.file_meta.TransferSyntaxUID.is_compressed
        or ds.get("BitsAllocated") != 16
        or ds.get("SamplesPerPixel", 1) != 1
        or int(ds.get("NumberOfFrames", 1) or 1) != 1
    ):
        return
    rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.get("BitsStored", 16))
    signed = ds.get("PixelRepresentation", 0) == 1
    value = struct.pack("<h" if signed else "<H", (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1)
    size = max(2, cols // 64)
    step = 2 * size
    per_row, per_column = max(1, (cols - size) // step), max(1, (rows // 4) // step)
    top = size + (index // per_row % per_column) * step
    left = size + (index % per_row) * step
    pixels = bytearray(original)
    for r in range(top, top + size):
        start = (r * cols + left) * 2
        pixels[start:start + 2 * size] = value * size
    ds.PixelData = bytes(pixels)


def reidentify(ds: Dataset, ident: Identity) -> None:
    """Give a source dataset the identity of one sample instance (in place; idempotent per instance).

    Everything identifying (patient, visit, site, UIDs, dates) is replaced, source-only references and
    private tags are dropped, and the file meta is kept consistent with the new SOP Class/Instance UIDs.
    """
    study, patient = ident.study, ident.study.patient
    for keyword in _DROPPED_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    ds.remove_private_tags()
    for tag in [t for t in list(ds.keys()) if t.element == 0 and t.group > 2]:  # stale retired group lengths
        del ds[tag]

    ds.PatientID = patient.mrn
    ds.PatientName = patient.dicom_name
    ds.PatientBirthDate = _da(patient.birth_date)
    ds.PatientSex = patient.sex
    ds.PatientAge = _age(patient.birth_date, study.started.date())
    ds.AccessionNumber = study.accession
    ds.StudyID = study.accession.rsplit("-", 1)[-1]
    ds.StudyDescription = study.description
    ds.ReferringPhysicianName = study.referring
    ds.InstitutionName = INSTITUTION
    ds.Modality = study.modality
    if study.body_part:
        ds.BodyPartExamined = study.body_part

    series_start = study.started + timedelta(minutes=3 * ident.series_index)
    content_time = series_start + timedelta(seconds=ident.instance_number)
    for keyword in _DATE_KEYWORDS:
        setattr(ds, keyword, _da(study.started.date()))
    ds.StudyTime = _tm(study.started)
    ds.SeriesTime = _tm(series_start)
    ds.AcquisitionTime = _tm(content_time)
    ds.ContentTime = _tm(content_time)
    ds.InstanceCreationTime = _tm(content_time)
    if "AcquisitionDateTime" in ds:
        ds.AcquisitionDateTime = content_time.strftime("%Y%m%d%H%M%S")

    ds.StudyInstanceUID = ident.study_uid
    ds.SeriesInstanceUID = ident.series_uid
    ds.SOPInstanceUID = ident.sop_uid
    if "FrameOfReferenceUID" in ds or ident.series.stack is not None:
        ds.FrameOfReferenceUID = ident.uid("frame-of-reference")
    ds.SeriesNumber = ident.series_index + 1
    ds.InstanceNumber = ident.instance_number
    ds.SeriesDescription = ident.series.description

    for keyword, value in ident.series.overrides.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)

    meta = ds.file_meta
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"EHR_SAMPLES_{GENERATOR_VERSION}"
    meta.SourceApplicationEntityTitle = "EHRSAMPLES"


def _instances(study: StudySpec, series_index: int) -> Iterator[tuple[Identity, Dataset]]:
    """Yield each instance of a series, re-identified.

    One source dataset is re-used (mutated) for every instance so a 120-slice stack streams without
    re-reading or copying it; write each yielded dataset before advancing the iterator.
    """
    spec = study.series[series_index]
    ds = _read_source(spec.source)
    count = spec.stack.count if spec.stack else 1
    source_position = [float(v) for v in ds.ImagePositionPatient] if spec.stack else []
    original_pixels: bytes = ds.PixelData
    for number in range(1, count + 1):
        ident = Identity(study, series_index, spec, number)
        reidentify(ds, ident)
        if spec.stack is not None:
            _place_in_stack(ds, source_position, spec.stack, number - 1)
            _mark_slice(ds, original_pixels, number - 1)
        yield ident, ds


def _save(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# --- the sample set ----------------------------------------------------------------------------------

_RIVERA = Patient("MRN-100001", "RIVERA", "Elena", date(1968, 4, 12), "F")
_OKAFOR = Patient("MRN-100002", "OKAFOR", "Daniel", date(1975, 9, 30), "M")
_LINDQVIST = Patient("MRN-100003", "LINDQVIST", "Margit", date(1941, 3, 5), "F")
_TANAKA = Patient("MRN-100004", "TANAKA", "Kenji", date(1959, 11, 21), "M")
_DUBOIS = Patient("MRN-100005", "DUBOIS", "Claire", date(1993, 2, 14), "F")
_MORGAN = Patient("MRN-100006", "MORGAN", "Alex", date(1988, 6, 2), "O")
_SINGH = Patient("MRN-100007", "SINGH", "Priya", date(2001, 10, 17), "F")
_MALFORMED = Patient("MRN-199999", "SAMPLE", "Malformed", date(1970, 1, 1), "O")

_BERGER = "BERGER^Thomas"
_NGUYEN = "NGUYEN^Linh"
_ADEYEMI = "ADEYEMI^Tola"


def study_specs(ct_slices: int = DEFAULT_CT_SLICES) -> list[StudySpec]:
    """The valid studies; the CT and the tibia radiograph belong to the same (trauma) patient."""
    mr_stack = Stack(count=5, spacing=5.0, first_location=20.0)  # both MR series cover the same slab
    return [
        StudySpec(
            "ct_head", _RIVERA, "ACC-2026-0001", datetime(2026, 1, 12, 8, 30), "CT",
            "CT HEAD WO CONTRAST", _BERGER, body_part="HEAD",
            series=(SeriesSpec("693_UNCR.dcm", "AX 2.5mm", Stack(count=ct_slices, spacing=2.5)),),
        ),
        StudySpec(
            "mr_abdomen", _OKAFOR, "ACC-2026-0002", datetime(2026, 1, 13, 10, 0), "MR",
            "MR ABDOMEN WO CONTRAST", _NGUYEN, body_part="ABDOMEN",
            series=(
                SeriesSpec("MR-SIEMENS-DICOM-WithOverlays.dcm", "T1 AX", mr_stack),
                SeriesSpec("MR_small.dcm", "T2 AX", mr_stack),
            ),
        ),
        StudySpec(
            "cr_tibia", _RIVERA, "ACC-2026-0003", datetime(2026, 1, 12, 9, 15), "CR",
            "XR TIBIA FIBULA RIGHT 2 VIEWS", _BERGER, body_part="LEG",
            series=(SeriesSpec("RG3_UNCR.dcm", "TIB/FIB AP"),),
        ),
        StudySpec(
            "dx_chest", _LINDQVIST, "ACC-2026-0004", datetime(2026, 1, 14, 11, 45), "DX",
            "XR CHEST PA", _ADEYEMI, body_part="CHEST",
            series=(
                SeriesSpec(
                    "RG1_UNCR.dcm", "CHEST PA",
                    overrides={
                        "SOPClassUID": UID(DX_FOR_PRESENTATION),
                        "PresentationIntentType": "FOR PRESENTATION",
                        "ImagerPixelSpacing": [_ds_number(0.2), _ds_number(0.2)],
                        "PixelSpacing": None,  # the source's is 0\0, which viewers reject
                    },
                ),
            ),
        ),
        StudySpec(
            "us_echo", _TANAKA, "ACC-2026-0005", datetime(2026, 1, 15, 14, 0), "US",
            "US ECHOCARDIOGRAM COMPLETE", _NGUYEN, body_part="HEART",
            series=(SeriesSpec("color3d_jpeg_baseline.dcm", "CINE LOOP"),),
        ),
        StudySpec(
            "us_obstetric", _DUBOIS, "ACC-2026-0006", datetime(2026, 1, 16, 9, 30), "US",
            "US OB 2ND TRIMESTER", _ADEYEMI, body_part="ABDOMEN",
            series=(SeriesSpec("OBXXXX1A_2frame.dcm", "OB GENERAL"),),
        ),
        StudySpec(
            "ct_head_j2k", _MORGAN, "ACC-2026-0007", datetime(2026, 1, 19, 16, 20), "CT",
            "CT HEAD WO CONTRAST", _BERGER, body_part="HEAD",
            series=(SeriesSpec("693_J2KR.dcm", "AX 5mm J2K", Stack(count=3, spacing=5.0)),),
        ),
        StudySpec(
            "mr_brain_rle", _SINGH, "ACC-2026-0008", datetime(2026, 1, 20, 7, 50), "MR",
            "MR BRAIN LIMITED", _NGUYEN, body_part="BRAIN",
            series=(SeriesSpec("MR_small_RLE.dcm", "T2 AX RLE", Stack(count=3, spacing=5.0)),),
        ),
    ]


def _malformed_spec() -> StudySpec:
    """The identity malformed files carry (where they carry one): a test patient, never ordered."""
    return StudySpec(
        "malformed", _MALFORMED, "ACC-2026-0999", datetime(2026, 1, 21, 12, 0), "MR",
        "MALFORMED SAMPLE", _BERGER,
        series=(
            SeriesSpec("MR_small.dcm", "TRUNCATED"),
            SeriesSpec("MR_small.dcm", "NO PREAMBLE"),
            SeriesSpec("MR_small.dcm", "MISSING STUDY UID"),
        ),
    )


def _build_study(out_dir: Path, study: StudySpec) -> dict[str, Any]:
    """Write every instance of a study and describe it (the manifest entry) from what was written."""
    series_entries: list[dict[str, Any]] = []
    study_uid = ""
    for index, spec in enumerate(study.series):
        files: list[str] = []
        sop_uids: list[str] = []
        for ident, ds in _instances(study, index):
            relative = f"{study.key}/{index + 1}/{ident.instance_number:04d}.dcm"
            _save(ds, out_dir / relative)
            files.append(relative)
            sop_uids.append(str(ds.SOPInstanceUID))
        study_uid = str(ds.StudyInstanceUID)
        series_entries.append({
            "series_instance_uid": str(ds.SeriesInstanceUID),
            "series_number": index + 1,
            "modality": str(ds.Modality),
            "description": spec.description,
            "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
            "source": spec.source,
            "files": files,
            "sop_instance_uids": sop_uids,
        })
    return {
        "key": study.key,
        "study_instance_uid": study_uid,
        "patient_id_dicom": study.patient.mrn,
        "patient_name": study.patient.dicom_name,
        "accession_number": study.accession,
        "study_date": study.started.date().isoformat(),
        "modality": study.modality,
        "description": study.description,
        "series": series_entries,
        "instance_count": sum(len(s["files"]) for s in series_entries),
        "transfer_syntax": series_entries[0]["transfer_syntax"],
        "order_id": study.order_id,
    }


def order_for(study: StudySpec) -> dict[str, Any]:
    """The EHR order that the study fulfils (what the EHR would have sent before the exam)."""
    patient = study.patient
    return {
        "order_id": study.order_id,
        "accession_number": study.accession,
        "patient_id": patient.ehr_id,
        "mrn": patient.mrn,
        "patient_family_name": patient.family_name,
        "patient_given_name": patient.given_name,
        "birth_date": patient.birth_date.isoformat(),
        "sex": patient.sex,
        "modality": study.modality,
        "scheduled_start": study.scheduled.isoformat(),
        "description": study.description,
        "referring_physician": study.referring,
        "status": "scheduled",
    }


def _write_malformed(out_dir: Path) -> list[dict[str, Any]]:
    """Files an ingest path must reject (or survive) without taking the rest of the set down with it."""
    folder = out_dir / MALFORMED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    spec = _malformed_spec()
    entries: list[dict[str, Any]] = []

    def record(name: str, kind: str, ident: Identity | None = None, *, has_study: bool = True) -> Path:
        """Note the file in the manifest, with the UIDs an archive would index it under if it took it."""
        entry: dict[str, Any] = {"file": f"{MALFORMED_DIR}/{name}", "kind": kind}
        if ident is not None:
            if has_study:
                entry["study_instance_uid"] = str(ident.study_uid)
            entry["sop_instance_uid"] = str(ident.sop_uid)
        entries.append(entry)
        return folder / name

    # A valid file cut in the middle of its pixel data, as an interrupted transfer leaves it.
    ident, ds = next(_instances(spec, 0))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    tag_at = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data, explicit VR little endian
    (length,) = struct.unpack_from("<I", data, tag_at + 8)  # after the tag, VR 'OW' and 2 reserved bytes
    record("truncated.dcm", "truncated", ident).write_bytes(data[: tag_at + 12 + length // 2])

    # A bare dataset (no preamble, no 'DICM', no file meta), as some old archives export.
    ident, ds = next(_instances(spec, 1))
    Dataset(ds).save_as(
        record("no_preamble.dcm", "no_preamble", ident), implicit_vr=True, little_endian=True
    )

    # A well-formed file that lacks a Type 1 attribute every archive keys on.
    ident, ds = next(_instances(spec, 2))
    del ds.StudyInstanceUID
    _save(ds, record("missing_study_uid.dcm", "missing_study_uid", ident, has_study=False))

    record("not_dicom.dcm", "not_dicom").write_text("This is not a DICOM file, whatever its name says.\n")
    return entries


# --- entry points ------------------------------------------------------------------------------------


def manifest_files(manifest: dict[str, Any]) -> list[str]:
    """Every file the manifest lists (valid studies first), relative to the output directory."""
    valid = [f for study in manifest["studies"] for series in study["series"] for f in series["files"]]
    return valid + [entry["file"] for entry in manifest["malformed"]]


def _cached_manifest(out_dir: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The existing manifest if it matches this generator and parameters and its files are all there."""
    try:
        manifest: dict[str, Any] = json.loads((out_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("generator_version") != GENERATOR_VERSION or manifest.get("params") != params:
        return None
    try:
        if all((out_dir / f).is_file() for f in manifest_files(manifest)):
            return manifest
    except (KeyError, TypeError):
        pass
    return None


def build_samples(
    out_dir: Path, ct_slices: int = DEFAULT_CT_SLICES, *, force: bool = False
) -> dict[str, Any]:
    """Build the sample set into ``out_dir`` (or return the existing one) and return its manifest."""
    if ct_slices < 1:
        raise ValueError("ct_slices must be at least 1")
    out_dir = Path(out_dir)
    params: dict[str, Any] = {"ct_slices": ct_slices}
    if not force and (cached := _cached_manifest(out_dir, params)) is not None:
        return cached

    specs = study_specs(ct_slices)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # a half-rebuilt set must never look complete
    for name in [spec.key for spec in specs] + [MALFORMED_DIR]:  # only what this script owns
        shutil.rmtree(out_dir / name, ignore_errors=True)

    manifest: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "params": params,
        "studies": [_build_study(out_dir, spec) for spec in specs],
        "orders": [order_for(spec) for spec in specs],
        "malformed": _write_malformed(out_dir),
    }
    tmp = out_dir / f"{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out_dir / MANIFEST_NAME)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="output directory (manifest.json goes here)")
    parser.add_argument("--ct-slices", type=int, default=DEFAULT_CT_SLICES, help="slices in the CT series")
    parser.add_argument("--force", action="store_true", help="rebuild even if the manifest is up to date")
    args = parser.parse_args(argv)
    started = time.monotonic()
    manifest = build_samples(args.out, args.ct_slices, force=args.force)
    instances = sum(study["instance_count"] for study in manifest["studies"])
    print(
        f"{len(manifest['studies'])} studies, {instances} instances, {len(manifest['orders'])} orders, "
        f"{len(manifest['malformed'])} malformed files in {args.out} ({time.monotonic() - started:.1f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
