"""A study's images as the EHR lists them: its series (by SeriesNumber), each with its instances ordered by
InstanceNumber, their frame counts, and which of them are images at all (a structured report has no pixels).

Pure: it reads Orthanc's expanded ``/studies/{id}/series`` and ``/series/{id}/instances`` answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .summary import NON_IMAGE_MODALITIES


@dataclass(frozen=True)
class ListedInstance:
    orthanc_id: str
    sop_instance_uid: str
    instance_number: int | None
    frames: int  # 0: no image (the series' modality holds none)


@dataclass(frozen=True)
class ListedSeries:
    orthanc_id: str
    series_instance_uid: str
    series_number: int | None
    modality: str
    description: str
    is_image: bool
    instances: tuple[ListedInstance, ...]


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip().split("\\")[0].split(".")[0])
    except (TypeError, ValueError):
        return None


def _text(tags: Mapping[str, Any], key: str) -> str:
    return str(tags.get(key, "") or "").strip()


def _last(number: int | None) -> tuple[int, int]:
    """Sort key: numbered items first, in order; unnumbered ones after."""
    return (0, number) if number is not None else (1, 0)


def list_series(series: Mapping[str, Any], instances: list[Mapping[str, Any]]) -> ListedSeries:
    """One series with its instances ordered by InstanceNumber (then SOPInstanceUID; unnumbered last)."""
    tags = series.get("MainDicomTags", {}) or {}
    modality = _text(tags, "Modality").upper()
    is_image = modality not in NON_IMAGE_MODALITIES
    listed = []
    for instance in instances:
        itags = instance.get("MainDicomTags", {}) or {}
        frames = (_int(itags.get("NumberOfFrames")) or 1) if is_image else 0
        listed.append(ListedInstance(str(instance["ID"]), _text(itags, "SOPInstanceUID"),
                                     _int(itags.get("InstanceNumber")), max(frames, 0)))
    listed.sort(key=lambda i: (*_last(i.instance_number), i.sop_instance_uid))
    return ListedSeries(str(series["ID"]), _text(tags, "SeriesInstanceUID"), _int(tags.get("SeriesNumber")), modality,
                        _text(tags, "SeriesDescription"), is_image, tuple(listed))


def ordered_series(listed: list[ListedSeries]) -> list[ListedSeries]:
    """Series by SeriesNumber (then SeriesInstanceUID; unnumbered last)."""
    return sorted(listed, key=lambda s: (*_last(s.series_number), s.series_instance_uid))
