"""Studies an API upload is writing (pure, thread-safe): on this node, and on the other nodes of one Orthanc index.

The upload records its studies itself once all its files are in, so the ingest worker must not record half
of one when STABLE_STUDY fires during a long upload. One ``StudyHolds`` per process, owned by the
services the composition root builds (never a module-level global shared between modules). With several nodes
on one Orthanc index, the follower of the shared change log may be another node: app/hold_exchange.py publishes
this node's holds and hands back the other nodes' (``held_elsewhere``), so ``is_held`` answers for all of them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable


class StudyHolds:
    def __init__(self) -> None:
        self._held: Counter[str] = Counter()
        self._elsewhere: frozenset[str] = frozenset()
        self._seen_until: float | None = None  # the other nodes see this node's holds until then (monotonic)
        self._lock = threading.Lock()
        self._new_hold = threading.Event()

    def hold(self, orthanc_study_id: str) -> None:
        with self._lock:
            self._held[orthanc_study_id] += 1
            if self._held[orthanc_study_id] == 1:
                self._new_hold.set()

    def release(self, orthanc_study_id: str) -> None:
        with self._lock:
            self._held[orthanc_study_id] -= 1
            if self._held[orthanc_study_id] <= 0:
                del self._held[orthanc_study_id]

    def is_held(self, orthanc_study_id: str) -> bool:
        with self._lock:
            return self._held[orthanc_study_id] > 0 or orthanc_study_id in self._elsewhere

    def held_here(self) -> set[str]:
        """The studies uploads on this node hold now."""
        with self._lock:
            return set(self._held)

    def wait_for_new_hold(self, timeout: float) -> None:
        """Return once a study is newly held here, or after ``timeout`` seconds; read ``held_here`` after it (a
        hold taken meanwhile is in that reading, or returns the next wait at once)."""
        self._new_hold.wait(timeout)
        self._new_hold.clear()

    def held_elsewhere(self, orthanc_study_ids: Iterable[str]) -> None:
        """What the other nodes hold, as last read (replaces the previous reading)."""
        with self._lock:
            self._elsewhere = frozenset(orthanc_study_ids)

    def seen_elsewhere_until(self, deadline: float) -> None:
        """The hold exchange renewed this node's holds: the other nodes see them until ``deadline``
        (``time.monotonic()``; set only with several nodes on one index)."""
        with self._lock:
            self._seen_until = deadline

    def may_hold(self, now: float) -> bool:
        """Whether a new file may go into a held study now: not once the other nodes may have stopped seeing this
        node's holds (the exchange could not renew them), for the follower there may record the study then."""
        with self._lock:
            return self._seen_until is None or now < self._seen_until
