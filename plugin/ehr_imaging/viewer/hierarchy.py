"""Which series and instances belong to a study, as Orthanc holds it: the facts behind every viewer
decision that names a series or an instance ("never trust the study UID in the path alone").

Read from Orthanc in process and cached per study, bounded; an unknown series or instance UID makes
the study reload at most every ``miss_reload_seconds`` (instances may still be arriving), so a flood of
made-up UIDs costs one Orthanc read per study and interval, not one per request.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..services import Pacs


@dataclass
class StudyMembers:
    series: set[str] = field(default_factory=set)
    instances: dict[str, str] = field(default_factory=dict)  # SOPInstanceUID -> SeriesInstanceUID
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # SOPInstanceUID -> (bytes, frames)
    loaded_at: float = 0.0


class StudyHierarchy:
    def __init__(self, pacs: Pacs, *, max_studies: int = 2000, ttl_seconds: float = 300.0,
                 miss_reload_seconds: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._pacs = pacs
        self._max = max_studies
        self._ttl = ttl_seconds
        self._miss_reload = miss_reload_seconds
        self._clock = clock
        self._studies: OrderedDict[str, StudyMembers] = OrderedDict()
        self._lock = threading.Lock()

    def belongs(self, study_uid: str, series_uid: str | None, instance_uid: str | None) -> bool:
        members = self._members(study_uid, fresh=False)
        if _contains(members, series_uid, instance_uid):
            return True
        if self._clock() - members.loaded_at < self._miss_reload:
            return False
        return _contains(self._members(study_uid, fresh=True), series_uid, instance_uid)

    def size_of(self, study_uid: str, instance_uid: str | None, frames: int | None = None) -> int:
        """Stored bytes of an instance (or of ``frames`` of its frames): what a WADO read returns, near enough."""
        with self._lock:
            members = self._studies.get(study_uid)
        if members is None or instance_uid is None or instance_uid not in members.sizes:
            return 0
        size, count = members.sizes[instance_uid]
        return size if frames is None else size * min(frames, count) // max(count, 1)

    def forget(self, study_uid: str) -> None:
        with self._lock:
            self._studies.pop(study_uid, None)

    def _members(self, study_uid: str, *, fresh: bool) -> StudyMembers:
        now = self._clock()
        with self._lock:
            cached = self._studies.get(study_uid)
            if cached is not None and not fresh and now - cached.loaded_at < self._ttl:
                self._studies.move_to_end(study_uid)
                return cached
        members = self._load(study_uid)
        members.loaded_at = self._clock()
        with self._lock:
            self._studies[study_uid] = members
            self._studies.move_to_end(study_uid)
            while len(self._studies) > self._max:
                self._studies.popitem(last=False)
        return members

    def _load(self, study_uid: str) -> StudyMembers:
        members = StudyMembers()
        for orthanc_id in self._pacs.find_study_ids(study_uid):
            try:
                series_list: list[dict[str, Any]] = self._pacs.get_json(f"/studies/{orthanc_id}/series")
                instances: list[dict[str, Any]] = self._pacs.get_json(f"/studies/{orthanc_id}/instances")
            except Exception:  # noqa: BLE001 - deleted meanwhile: it has no members
                continue
            series_uids = {s["ID"]: s.get("MainDicomTags", {}).get("SeriesInstanceUID", "") for s in series_list}
            members.series.update(uid for uid in series_uids.values() if uid)
            for instance in instances:
                tags = instance.get("MainDicomTags", {})
                sop = tags.get("SOPInstanceUID")
                if sop:
                    members.instances[sop] = series_uids.get(instance.get("ParentSeries", ""), "")
                    frames = str(tags.get("NumberOfFrames") or "1").strip()
                    members.sizes[sop] = (int(instance.get("FileSize", 0)), int(frames) if frames.isdigit() else 1)
        return members


def _contains(members: StudyMembers, series_uid: str | None, instance_uid: str | None) -> bool:
    if series_uid is not None and series_uid not in members.series:
        return False
    if instance_uid is None:
        return True
    parent = members.instances.get(instance_uid)
    return parent is not None and (series_uid is None or parent == series_uid)
