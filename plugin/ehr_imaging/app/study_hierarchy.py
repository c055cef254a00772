"""Which series and instances belong to a study, as Orthanc holds it: the facts behind every viewer
decision ("never trust the study UID in the path alone").

Keyed by the *Orthanc* study a viewer token names (its ``orthanc_studies`` claim), not by StudyInstanceUID:
Orthanc may hold another patient's study under the same StudyInstanceUID, whose series and instances must
never count as members. Read from Orthanc in process and cached per study, bounded, dropped when Orthanc
deletes the study; an unknown series or instance UID makes the study reload at most every
``miss_reload_seconds`` (instances may still be arriving), so a flood of made-up UIDs costs one Orthanc
read per study and interval, not one per request.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import NotFound
from ..services import Pacs


@dataclass
class StudyMembers:
    stored: bool = False  # Orthanc holds the study
    study_uid: str = ""
    patient_id: str | None = None  # its PatientID as Orthanc's index holds it (QIDO answers carry the same)
    # Orthanc holds another study under the same StudyInstanceUID (another patient's): what DICOMweb answers
    # by StudyInstanceUID alone may mix the two, so only series- and instance-level reads are safe.
    uid_shared: bool = False
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

    def belongs(self, orthanc_study_id: str, series_uid: str | None, instance_uid: str | None) -> bool:
        """Is the study stored, and (when named) the series and instance in it?"""
        members = self._members(orthanc_study_id, fresh=False)
        if _contains(members, series_uid, instance_uid):
            return True
        if self._clock() - members.loaded_at < self._miss_reload:
            return False
        return _contains(self._members(orthanc_study_id, fresh=True), series_uid, instance_uid)

    def members(self, orthanc_study_id: str) -> StudyMembers:
        return self._members(orthanc_study_id, fresh=False)

    def shared_now(self, orthanc_study_id: str) -> bool:
        """Does Orthanc hold another study under this study's StudyInstanceUID *now*? A live lookup, not the
        cache: another node's arrival raises no change event here. For queries (few), never for frames."""
        members = self._members(orthanc_study_id, fresh=False)
        if not members.stored:
            return True  # fail closed: nothing to answer for
        return any(other != orthanc_study_id for other in self._pacs.find_study_ids(members.study_uid))

    def size_of(self, orthanc_study_id: str, instance_uid: str | None, frames: int | None = None) -> int:
        """Stored bytes of an instance (or of ``frames`` of its frames): what a WADO read returns, near enough."""
        with self._lock:
            members = self._studies.get(orthanc_study_id)
        if members is None or instance_uid is None or instance_uid not in members.sizes:
            return 0
        size, count = members.sizes[instance_uid]
        return size if frames is None else size * min(frames, count) // max(count, 1)

    def forget(self, orthanc_study_id: str) -> None:
        """Orthanc deleted the study (its DELETED change): no viewer reads it from the cache any more, and
        studies that shared their StudyInstanceUID (with it, perhaps) are read again."""
        with self._lock:
            self._studies.pop(orthanc_study_id, None)
            for shared in [key for key, members in self._studies.items() if members.uid_shared]:
                del self._studies[shared]

    def study_arrived(self, orthanc_study_id: str) -> None:
        """Orthanc's NEW_STUDY change: a cached study with the same StudyInstanceUID (another patient's) is read
        again, so it is known to share its UID before any viewer reads it by StudyInstanceUID alone."""
        with self._lock:
            if not self._studies:
                return
        try:
            uid = self._pacs.get_json(f"/studies/{orthanc_study_id}").get("MainDicomTags", {}).get("StudyInstanceUID")
        except NotFound:  # deleted meanwhile: nothing to refresh
            return
        with self._lock:
            for same in [key for key, members in self._studies.items() if members.study_uid == uid]:
                del self._studies[same]

    def _members(self, orthanc_study_id: str, *, fresh: bool) -> StudyMembers:
        now = self._clock()
        with self._lock:
            cached = self._studies.get(orthanc_study_id)
            if cached is not None and not fresh and now - cached.loaded_at < self._ttl:
                self._studies.move_to_end(orthanc_study_id)
                return cached
        members = self._load(orthanc_study_id)
        members.loaded_at = self._clock()
        with self._lock:
            self._studies[orthanc_study_id] = members
            self._studies.move_to_end(orthanc_study_id)
            while len(self._studies) > self._max:
                self._studies.popitem(last=False)
        return members

    def _load(self, orthanc_id: str) -> StudyMembers:
        members = StudyMembers()
        try:
            study: dict[str, Any] = self._pacs.get_json(f"/studies/{orthanc_id}")
            series_list: list[dict[str, Any]] = self._pacs.get_json(f"/studies/{orthanc_id}/series")
            instances: list[dict[str, Any]] = self._pacs.get_json(f"/studies/{orthanc_id}/instances")
        except NotFound:  # not stored (or deleted meanwhile): it has no members
            return members
        members.stored = True
        members.patient_id = study.get("PatientMainDicomTags", {}).get("PatientID")
        members.study_uid = study.get("MainDicomTags", {}).get("StudyInstanceUID", "")
        members.uid_shared = any(other != orthanc_id for other in self._pacs.find_study_ids(members.study_uid))
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
    if not members.stored:
        return False
    if series_uid is not None and series_uid not in members.series:
        return False
    if instance_uid is None:
        return True
    parent = members.instances.get(instance_uid)
    return parent is not None and (series_uid is None or parent == series_uid)
