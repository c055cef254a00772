"""Studies an API upload is writing (pure, thread-safe): on this node, and on the other nodes of one Orthanc index.

The upload records its studies itself once all its files are in, so the ingest worker must not record half
of one when STABLE_STUDY fires during a long upload. One ``StudyHolds`` per process, owned by the
services the composition root builds (never a module-level global shared between modules). With Orthanc's index
in PostgreSQL the follower of the shared change log may be another node: app/hold_exchange.py publishes this
node's holds and hands back the other nodes' (``held_elsewhere``), so ``is_held`` answers for all of them, and
``ready_for`` lets a file into a held study only while the other nodes see its hold.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable


class StudyHolds:
    def __init__(self) -> None:
        self._held: Counter[str] = Counter()
        self._elsewhere: frozenset[str] = frozenset()
        # Set by the hold exchange (none runs with Orthanc's own SQLite index): what its last round published,
        # until when the other nodes see it (monotonic), and the studies whose holds may have run out meanwhile.
        self._published: frozenset[str] = frozenset()
        self._published_until: float | None = None
        self._lapsed: set[str] = set()
        self._lock = threading.Lock()
        self._published_now = threading.Condition(self._lock)
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
                self._lapsed.discard(orthanc_study_id)

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

    def published(self, orthanc_study_ids: Iterable[str], seen_until: float) -> None:
        """The hold exchange published these holds of this node: the other nodes see them until ``seen_until``
        (``time.monotonic()``). A round that comes after the last one's ``seen_until`` marks every study held
        here as lapsed: the follower may have recorded it meanwhile, so its upload stores no more of it."""
        with self._lock:
            if self._published_until is not None and time.monotonic() >= self._published_until:
                self._lapsed.update(self._held)
            self._published = frozenset(orthanc_study_ids)
            self._published_until = seen_until
            self._published_now.notify_all()

    def ready_for(self, orthanc_study_id: str, timeout: float) -> bool:
        """Whether a file may go into this study, which the caller holds: at once without a hold exchange;
        with one, once the other nodes see the hold (the exchange's next round, waited for up to ``timeout``
        seconds), never once it may have lapsed there."""
        give_up = time.monotonic() + timeout
        with self._lock:
            while True:
                if self._published_until is None:
                    return True
                if orthanc_study_id in self._lapsed:
                    return False
                now = time.monotonic()
                if orthanc_study_id in self._published and now < self._published_until:
                    return True
                if now >= give_up:
                    return False
                self._new_hold.set()  # (the exchange publishes at once on a new hold: also for one it missed)
                self._published_now.wait(give_up - now)
