"""The clinical summary of a study, for report templates: text plus the same facts structured.

Pure: it receives DICOM tags already read (Orthanc's simplified JSON: keyword -> string, multi-values
joined by backslashes) and returns text; nothing here reads files or talks to Orthanc.
The text follows the EHR's format (seed dicom-service-guide.md)::

    PATIENT INFORMATION:
    Name: DOE, JOHN
    ...

    STUDY INFORMATION:
    Exam: CT CHEST W CONTRAST
    Date: November 6, 2025
    ...

    TECHNICAL PARAMETERS:
    Manufacturer: SIEMENS SOMATOM Definition
    Slice Thickness: 5.0 mm
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from .dicom_values import parse_da

Tags = Mapping[str, Any]


@dataclass(frozen=True)
class SummaryOptions:
    include_patient_info: bool = True
    include_study_info: bool = True
    include_technical_params: bool = True


OPTION_NAMES = ("include_patient_info", "include_study_info", "include_technical_params")


class SummaryOptionsError(ValueError):
    pass


def parse_options(body: Any) -> SummaryOptions:
    """The request body: each flag optional (default true); anything else is an error naming the field."""
    if body is None:
        return SummaryOptions()
    if not isinstance(body, dict):
        raise SummaryOptionsError("body: must be a JSON object")
    unknown = sorted(set(body) - set(OPTION_NAMES))
    if unknown:
        raise SummaryOptionsError(f"{unknown[0]}: unknown field (allowed: {', '.join(OPTION_NAMES)})")
    for name, value in body.items():
        if not isinstance(value, bool):
            raise SummaryOptionsError(f"{name}: must be true or false")
    return SummaryOptions(**body)


def clinical_summary(study: Tags, instance: Tags, options: SummaryOptions, *, number_of_series: int | None = None,
                     number_of_instances: int | None = None) -> tuple[str, dict[str, dict[str, Any]]]:
    """(text, structured_data) from the study's tags and one representative instance's tags.

    ``study`` holds patient and study level tags (PatientName, StudyDate, ...); ``instance`` the first image's
    (Modality, SliceThickness, KVP, ...). A value missing from both is left out of the text and is ``None``
    in the structured data.
    """
    tags = {**instance, **{k: v for k, v in study.items() if _text(v)}}
    sections: list[tuple[str, list[tuple[str, str | None]]]] = []
    structured: dict[str, dict[str, Any]] = {}
    if options.include_patient_info:
        patient = _patient(tags)
        structured["patient"] = patient
        sections.append(("PATIENT INFORMATION", [
            ("Name", display_name(patient["name"])), ("ID", patient["id"]), ("Age", patient["age"]),
            ("Sex", patient["sex"]), ("Birth Date", _long_date(parse_da(patient["birth_date"]))),
        ]))
    if options.include_study_info:
        study_facts = _study(tags, number_of_series, number_of_instances)
        structured["study"] = study_facts
        sections.append(("STUDY INFORMATION", [
            ("Exam", study_facts["description"]), ("Date", _long_date(parse_da(study_facts["date"]))),
            ("Time", _clock(study_facts["time"])), ("Accession", study_facts["accession_number"]),
            ("Modality", ", ".join(study_facts["modalities"]) or None),
            ("Body Part", study_facts["body_part"]),
            ("Referring Physician", display_name(study_facts["referring_physician"])),
            ("Series", _int_text(study_facts["number_of_series"])),
            ("Images", _int_text(study_facts["number_of_instances"])),
        ]))
    if options.include_technical_params:
        technical = _technical(tags)
        structured["technical"] = technical
        sections.append(("TECHNICAL PARAMETERS", _technical_lines(technical)))
    text = "\n\n".join(
        f"{title}:\n" + "\n".join(f"{label}: {value}" for label, value in lines if value)
        for title, lines in sections if any(value for _, value in lines)
    )
    return text, structured


def _patient(tags: Tags) -> dict[str, Any]:
    birth = _text(tags.get("PatientBirthDate"))
    return {
        "name": _text(tags.get("PatientName")), "id": _text(tags.get("PatientID")),
        "age": patient_age(_text(tags.get("PatientAge")), parse_da(birth), parse_da(_text(tags.get("StudyDate")))),
        "sex": _text(tags.get("PatientSex")), "birth_date": birth,
    }


def _study(tags: Tags, series: int | None, instances: int | None) -> dict[str, Any]:
    modalities = _values(tags.get("ModalitiesInStudy")) or _values(tags.get("Modality"))
    return {
        "study_instance_uid": _text(tags.get("StudyInstanceUID")),
        "description": _text(tags.get("StudyDescription")), "date": _text(tags.get("StudyDate")),
        "time": _text(tags.get("StudyTime")), "accession_number": _text(tags.get("AccessionNumber")),
        "modalities": modalities, "body_part": _text(tags.get("BodyPartExamined")),
        "referring_physician": _text(tags.get("ReferringPhysicianName")),
        "institution": _text(tags.get("InstitutionName")),
        "number_of_series": series, "number_of_instances": instances,
    }


def _technical(tags: Tags) -> dict[str, Any]:
    spacing = [_number(v) for v in _values(tags.get("PixelSpacing"))]
    rows, columns = _number(tags.get("Rows")), _number(tags.get("Columns"))
    return {
        "manufacturer": _text(tags.get("Manufacturer")), "model": _text(tags.get("ManufacturerModelName")),
        "station_name": _text(tags.get("StationName")),
        "slice_thickness_mm": _number(tags.get("SliceThickness")), "kvp": _number(tags.get("KVP")),
        "tube_current_ma": _number(tags.get("XRayTubeCurrent")), "exposure_mas": _number(tags.get("Exposure")),
        "exposure_time_ms": _number(tags.get("ExposureTime")),
        "convolution_kernel": _text(tags.get("ConvolutionKernel")),
        "magnetic_field_strength_t": _number(tags.get("MagneticFieldStrength")),
        "repetition_time_ms": _number(tags.get("RepetitionTime")), "echo_time_ms": _number(tags.get("EchoTime")),
        "flip_angle_deg": _number(tags.get("FlipAngle")),
        "contrast_agent": _text(tags.get("ContrastBolusAgent")),
        "rows": int(rows) if rows is not None else None, "columns": int(columns) if columns is not None else None,
        "pixel_spacing_mm": [s for s in spacing if s is not None] or None,
        "number_of_frames": _int(tags.get("NumberOfFrames")),
        "photometric_interpretation": _text(tags.get("PhotometricInterpretation")),
    }


def _technical_lines(t: dict[str, Any]) -> list[tuple[str, str | None]]:
    equipment = " ".join(v for v in (t["manufacturer"], t["model"]) if v) or None
    matrix = f"{t['columns']} x {t['rows']}" if t["rows"] and t["columns"] else None
    spacing = t["pixel_spacing_mm"]
    return [
        ("Manufacturer", equipment),
        ("Slice Thickness", _unit(t["slice_thickness_mm"], "mm")),
        ("kVp", _count(t["kvp"])),
        ("Tube Current", _unit(t["tube_current_ma"], "mA", whole=True)),
        ("Exposure", _unit(t["exposure_mas"], "mAs", whole=True)),
        ("Kernel", t["convolution_kernel"]),
        ("Field Strength", _unit(t["magnetic_field_strength_t"], "T")),
        ("TR", _unit(t["repetition_time_ms"], "ms")),
        ("TE", _unit(t["echo_time_ms"], "ms")),
        ("Flip Angle", _unit(t["flip_angle_deg"], "deg")),
        ("Contrast", t["contrast_agent"]),
        ("Matrix", matrix),
        ("Pixel Spacing", " x ".join(format_number(s) or "" for s in spacing) + " mm" if spacing else None),
        ("Frames", _int_text(t["number_of_frames"]) if (t["number_of_frames"] or 0) > 1 else None),
    ]


# --- value helpers (public ones are unit-tested) -----------------------------------------------------------

def display_name(pn: str | None) -> str | None:
    """DICOM PN ``DOE^JOHN^M`` -> ``DOE, JOHN M`` (the first, alphabetic component group only)."""
    if not pn:
        return None
    alphabetic = pn.split("=")[0]
    parts = [p.strip() for p in alphabetic.split("^")]
    family, rest = parts[0], " ".join(p for p in parts[1:] if p)
    if family and rest:
        return f"{family}, {rest}"
    return family or rest or None


def patient_age(age: str | None, birth: date | None, on: date | None) -> str | None:
    """PatientAge (``038Y`` -> ``38Y``), else whole years between birth date and study date."""
    if age and len(age) == 4 and age[:3].isdigit() and age[3] in "DWMY":
        return f"{int(age[:3])}{age[3]}"
    if birth and on and on >= birth:
        years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
        return f"{years}Y"
    return None


def format_number(value: float | None) -> str | None:
    """At most two decimals, at least one: 5 -> "5.0", 0.6836 -> "0.68", 120.0 -> "120.0"."""
    if value is None:
        return None
    text = f"{value:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _long_date(value: date | None) -> str | None:
    return f"{value:%B} {value.day}, {value.year}" if value else None


def _clock(value: str | None) -> str | None:
    digits = (value or "").split(".")[0]
    if len(digits) >= 4 and digits.isdigit():
        return f"{digits[:2]}:{digits[2:4]}"
    return None


def _unit(value: float | None, unit: str, *, whole: bool = False) -> str | None:
    text = _count(value) if whole else format_number(value)
    return f"{text} {unit}" if text else None


def _count(value: float | None) -> str | None:
    """Tube settings read best without a decimal when they have none: 120 kVp, 170 mA."""
    if value is None:
        return None
    return str(int(value)) if value.is_integer() else format_number(value)


def _int_text(value: int | None) -> str | None:
    return str(value) if value is not None else None


def _text(value: Any) -> str | None:
    if isinstance(value, list):  # Orthanc answers a sequence as a list; no summary line comes from one
        return None
    text = str(value).strip() if value is not None else ""
    return text or None


def _values(value: Any) -> list[str]:
    text = _text(value)
    return [v.strip() for v in text.split("\\") if v.strip()] if text else []


def _number(value: Any) -> float | None:
    values = _values(value)
    try:
        return float(values[0]) if values else None
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


# --- which image stands for a study ------------------------------------------------------------------------

NON_IMAGE_MODALITIES = frozenset({"SR", "PR", "KO", "DOC", "REG", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "SEG",
                                  "FID", "AU", "ECG", "HD"})


def first_image_series(series: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first series (by SeriesNumber) that holds images, from Orthanc's expanded ``/studies/{id}/series``."""
    def key(item: dict[str, Any]) -> tuple[float, str]:
        number = _number(item.get("MainDicomTags", {}).get("SeriesNumber"))
        return (number if number is not None else float("inf"), str(item.get("ID", "")))

    images = [s for s in series if s.get("Instances")
              and str(s.get("MainDicomTags", {}).get("Modality", "")).strip().upper() not in NON_IMAGE_MODALITIES]
    return min(images, key=key) if images else None


def ordered_instances(instances: list[dict[str, Any]]) -> list[str]:
    """Orthanc instance IDs of one series in acquisition order (IndexInSeries, else InstanceNumber)."""
    def key(item: dict[str, Any]) -> tuple[float, str]:
        index = item.get("IndexInSeries")
        if not isinstance(index, int):
            index = _number(item.get("MainDicomTags", {}).get("InstanceNumber"))
        return (float(index) if index is not None else float("inf"), str(item.get("ID", "")))

    return [str(item["ID"]) for item in sorted(instances, key=key)]
