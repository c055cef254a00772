"""Studies an API upload is writing on this node (pure, thread-safe).

The upload records its studies itself once all its files are in, so the ingest worker must not record half
of one when STABLE_STUDY fires during a long upload. One ``StudyHolds`` per process, owned by the
services the composition root builds (never a module-level global shared between modules).
"""

from __future__ import annotations

import threading
from collections import Counter


class StudyHolds:
    def __init__(self) -> None:
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def hold(self, orthanc_study_id: str) -> None:
        with self._lock:
            self._held[orthanc_study_id] += 1

    def release(self, orthanc_study_id: str) -> None:
        with self._lock:
            self._held[orthanc_study_id] -= 1
            if self._held[orthanc_study_id] <= 0:
                del self._held[orthanc_study_id]

    def is_held(self, orthanc_study_id: str) -> bool:
        with self._lock:
            return self._held[orthanc_study_id] > 0
