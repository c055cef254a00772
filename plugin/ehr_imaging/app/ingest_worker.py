"""The ingest worker: the one thread that records stable and deleted studies, following Orthanc's change log.

Orthanc's storage path stays untouched (no OnStoredInstance work at all): Orthanc itself records each instance's
origin in its metadata and logs STABLE_STUDY and NEW_STUDY in its persistent change log. This worker reads that
log (``/changes?since=<cursor>&limit=``) in Orthanc's order from a cursor kept in PostgreSQL
(store/ingest_cursor.py), and advances the cursor only once a change is handled (at-least-once; handling is
idempotent), so a restart resumes where it stopped: its cost grows with the changes missed, not with the archive.
The change callback (hooks/changes.py) only wakes it; it also polls every second. While PostgreSQL is down it
waits and retries, so no ingest is lost and none is slowed. In a flood it handles up to IngestBatchSize study
changes together (app/ingest_changes.py: the stable studies among them recorded in one transaction), and the
cursor never passes a change read but not handled yet.

Several nodes sharing Orthanc's index in PostgreSQL share one change log and one cursor row: its lease makes one
node at a time the follower, another takes over once the follower's lease runs out. A node with its own index
has its own log and cursor (the log's id lives in Orthanc's index). Orthanc never writes a deletion into its log:
a study's DELETED event is spooled on this node's disk (app/deletion_spool.py) and audited by this worker, in
turn with the log's changes. Studies handed over by use cases (an upload that could not record, a revisit for tag
coercion, the paged repair of app/ingest_repair.py) wait in memory. The worker reports what waits (changes
behind Orthanc's last one, plus those) and since when, and each match's latency, to the metrics.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..core import metrics
from ..services import Services
from ..store import db
from ..store import ingest_cursor as cursors
from . import ingest_repair
from .deletion_spool import DeletionSpool
from .ingest_changes import ARRIVED, DELETED, STABLE, ChangeHandler

# Orthanc's change types the worker acts on (at study level); every other change only moves the cursor on.
STUDY_CHANGES = {"StableStudy": STABLE, "NewStudy": ARRIVED}
BATCH = 200  # changes read per request
POLL_SECONDS = 1.0  # the safety net: the log is read this often even without a wake-up
# After a wake-up, the changes of this long are let gather before the log is read: in a flood (a NewStudy a
# few milliseconds apart) each round then handles tens of studies instead of one, and its fixed cost (the
# lease, the cursor, a transaction per kind: each a commit PostgreSQL syncs to the disk Orthanc writes to) is
# paid ten times a second at most, not once per study.
GATHER_SECONDS = 0.1
LEASE_SECONDS = 15.0  # another node takes over a shared log this long after its follower stopped renewing
# With Orthanc's index in PostgreSQL, a change's sequence number is taken before its transaction commits: a
# missing number near the head may still be committing, so it is waited for this long before being skipped.
GAP_GRACE_SECONDS = 3.0
# Within a batch the cursor is written at most this often (and at the batch's end): a crash replays at most
# what was handled since, idempotently; the write renews the lease too.
ADVANCE_EVERY_SECONDS = 1.0
GAP_NEAR_HEAD = 100


class IngestWorker:
    def __init__(self, services: Services, log_warning: Callable[[str], None], log_error: Callable[[str], None], *,
                 log_id: Callable[[], str], node: str, spool: DeletionSpool | None = None,
                 shared_index: bool = False) -> None:
        self._services = services
        self._log_warning = log_warning
        self._log_error = log_error
        self._find_log_id = log_id  # read from Orthanc's index once Orthanc has started
        self._log_id = ""
        self._node = node
        self._spool = spool or DeletionSpool(None)
        self._gap_grace = GAP_GRACE_SECONDS if shared_index else 0.0
        self._batch_size = max(services.settings.IngestBatchSize, 1)  # study changes handled together
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._deleted_inbox: deque[str] = deque()  # DELETED events not yet in the spool
        self._handed: deque[tuple[str, str, float]] = deque()  # (STABLE or DELETED, study, when handed over)
        self._changes = ChangeHandler(services, log_warning, log_error)
        self._gaps: dict[int, float] = {}  # a missing sequence number near the head -> when first seen
        # Stable studies an upload holds (it records them at its end; on this node or another of a shared index)
        # -> their change: the cursor written to PostgreSQL stays before the earliest, so a crash during the
        # upload replays it, and they are recorded here once released. Each with when its change was read (the
        # match latency counts from then, as for every other stable study).
        self._deferred: dict[str, tuple[int, float]] = {}
        self._following = False
        self._seq = 0  # the cursor as this node last read or advanced it
        self._advanced_at = 0.0  # when it last wrote the cursor
        self._stopping = False  # Orthanc is stopping: the lease was given up
        self._migrated = threading.Event()  # the plugin's tables exist (plugin.py says so once migrated)
        self._orthanc_up = threading.Event()  # Orthanc has started (its index and REST API answer)
        self._behind = 0  # changes behind Orthanc's last one, at the last look
        self._behind_since: float | None = None
        self._started_spooled = len(self._spool.pending())
        self._thread = threading.Thread(target=self._run, name="ehr-ingest", daemon=True)

    # --- what the rest of the plugin calls -----------------------------------------------------------------

    def start(self) -> None:
        if not self._spool.durable:
            self._log_warning("ehr-imaging: no usable folder for the deletion spool: a study deleted while the"
                              " database is away is audited only if Orthanc keeps running (run make reconcile)")
        self._thread.start()

    def schema_ready(self) -> None:
        """The plugin's tables exist: the worker may read its cursor (until then it only spools deletions)."""
        self._migrated.set()
        self._wake.set()

    def orthanc_started(self) -> None:
        """ORTHANC_STARTED: Orthanc's index and in-process REST API are there."""
        self._orthanc_up.set()
        self._wake.set()

    def wake(self) -> None:
        """Something happened in Orthanc's change log: read it now (the callback's only work)."""
        self._wake.set()

    def submit(self, orthanc_study_id: str) -> None:
        """A study to record and match now (handed over by a use case, or found by the repair)."""
        self._hand(STABLE, orthanc_study_id)

    def submit_deleted(self, orthanc_study_id: str) -> None:
        """A study deleted in Orthanc (its DELETED event): spooled at once, on Orthanc's change thread (one fsync,
        so no deletion waits in memory while the worker is busy with a long batch or coercion), then audited and
        its order freed. Should the spool refuse the write, the worker tries again in its next round."""
        try:
            self._spool.add([orthanc_study_id])
        except OSError as exc:
            self._log_warning(f"ehr-imaging: deletion spool write failed ({type(exc).__name__}); retried")
            with self._lock:
                self._deleted_inbox.append(orthanc_study_id)
        self._wake.set()

    def _hand(self, kind: str, orthanc_study_id: str) -> None:
        with self._lock:
            self._handed.append((kind, orthanc_study_id, time.monotonic()))
        self._wake.set()

    def release(self) -> None:
        """At Orthanc's stop: give the lease up, so another node takes over at once (best effort); this worker
        takes it no more."""
        self._stopping = True
        if not self._log_id:
            return
        with contextlib.suppress(Exception):  # the lease runs out by itself
            cursors.release(self._services.engine, self._log_id, self._node)

    def gauges(self) -> dict[str, float]:
        """What waits (changes behind Orthanc's last one, spooled deletions, handed-over studies) and since when."""
        with self._lock:
            handed = len(self._handed) + len(self._deleted_inbox)
            oldest = self._handed[0][2] if self._handed else None
        depth = self._behind + handed + len(self._spool.pending())
        since = [t for t in (oldest, self._behind_since) if t is not None]
        age = max(time.monotonic() - min(since), 0.0) if since and depth else 0.0
        return {metrics.INGEST_QUEUE_DEPTH: depth, metrics.INGEST_OLDEST_WAITING: round(age, 3)}

    # --- the thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        if self._started_spooled:
            self._log_warning(f"ehr-imaging: {self._started_spooled} study deletions spooled before this start:"
                              " auditing them")
        while not (self._migrated.is_set() and self._orthanc_up.is_set()):
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            self._spool_deletions()
        delay = 1.0
        while True:
            try:
                while self.step():
                    pass
                delay = 1.0
                if self._wake.wait(POLL_SECONDS) and not self._deletions_waiting():
                    time.sleep(GATHER_SECONDS)  # (a deletion is audited at once: rare, and a person may wait on it)
                self._wake.clear()
            except Exception as exc:  # noqa: BLE001 - waited for and retried, never lost silently
                if isinstance(exc, LeaseLost):
                    self._log_warning(f"ehr-imaging: {exc}")
                elif not isinstance(exc, db.UNAVAILABLE):
                    self._log_error(f"ehr-imaging: ingest worker: {type(exc).__name__}: {exc}")
                self._pause(delay)
                delay = min(delay * 2, 30.0)

    def _deletions_waiting(self) -> bool:
        with self._lock:
            inbox = bool(self._deleted_inbox)
        return inbox or bool(self._spool.pending())

    def _pause(self, seconds: float) -> None:
        """Wait before a retry; DELETED events arriving meanwhile still reach the spool at once."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._wake.wait(left)
            self._wake.clear()
            self._spool_deletions()

    def step(self) -> bool:
        """One round: spooled deletions, handed-over studies, then one batch of the change log (when this node
        follows it). True while more is waiting. Raises when the database (or Orthanc) cannot be reached; the
        cursor then stays where it is."""
        self._spool_deletions()
        for study in self._spool.pending():
            if self._changes.handle(DELETED, study, time.monotonic()):
                self._spool.done(study)
        with self._lock:
            handed = self._handed.popleft() if self._handed else None
        if handed is not None:
            kind, study, queued_at = handed
            try:
                self._changes.handle(kind, study, queued_at)
            except Exception:
                with self._lock:
                    self._handed.appendleft(handed)  # retried first, after the pause
                raise
            return True
        return self._follow()

    def _spool_deletions(self) -> None:
        with self._lock:
            inbox = list(self._deleted_inbox)
            self._deleted_inbox.clear()
        try:
            self._spool.add(inbox)
        except OSError:
            with self._lock:
                self._deleted_inbox.extendleft(reversed(inbox))  # kept, in order, for the next round
            raise

    # --- the change log ----------------------------------------------------------------------------------------

    def _follow(self) -> bool:
        engine, pacs = self._services.engine, self._services.pacs
        if self._stopping:
            return False
        if not self._log_id:
            self._log_id = self._find_log_id()
        try:
            cursor = cursors.claim(engine, self._log_id, self._node, LEASE_SECONDS)
        except db.UNAVAILABLE:
            if not self._following:
                raise
            # The database away: go on trying the change in hand (nothing advances until it is back, and no other
            # node can take the lease meanwhile).
            cursor = cursors.Cursor(self._seq, self._node, True)
        last = int(pacs.get_json("/changes?last")["Last"])
        if cursor is None:
            self._first_start(last)
            return True
        if not cursor.mine:
            self._set_behind(max(last - cursor.seq, 0))  # the follower's lag, the same on every node
            if self._following:
                self._log_warning(f"ehr-imaging: node {cursor.holder} follows Orthanc's change log now")
            self._following = False
            return False
        # Progress made while the database was away (held in memory) is kept; a replay from the row's older
        # cursor would be harmless too.
        seq = self._seq = max(cursor.seq, self._seq) if self._following else cursor.seq
        if not self._following:
            self._following = True
            seq = self._resumed(seq, last)
        self._set_behind(max(last - seq, 0))
        holds = self._services.holds
        released = [study for study in self._deferred if not holds.is_held(study)]
        if released:
            # Its upload ended (and recorded it, or handed it over) or, on another node, stopped renewing its hold
            # (that node died mid-upload): recorded now, idempotently, before the cursor passes its change.
            for read_at in sorted({self._deferred[study][1] for study in released}):
                self._changes.record([s for s in released if self._deferred[s][1] == read_at], read_at)
            self._deferred = {study: held for study, held in self._deferred.items()
                              if study not in released or holds.is_held(study)}  # (held again: passed over)
            self._advance(seq)  # the cursor held back for them moves on, even with no new change
        answer = pacs.get_json(f"/changes?since={seq}&limit={BATCH}")
        changes: list[dict[str, Any]] = answer.get("Changes", [])
        fetched_at = time.monotonic()
        handled = seq
        pending: list[tuple[int, str, str]] = []  # changes read, handled together later: (change, kind, study)
        for change in changes:
            number = int(change["Seq"])
            if number > handled + 1 and self._gap_grace and last - number < GAP_NEAR_HEAD:
                first_seen = self._gaps.setdefault(handled + 1, fetched_at)
                if fetched_at - first_seen < self._gap_grace:
                    break  # maybe still committing on another node: read again at the next poll
            kind = STUDY_CHANGES.get(str(change.get("ChangeType")))
            study = str(change.get("ID"))
            if kind is not None and change.get("ResourceType") == "Study":
                self._defer_if_held(number, kind, study, fetched_at)
                if kind == ARRIVED and (STABLE, study) in {(k, s) for _, k, s in pending}:
                    pending = self._flush(pending, fetched_at)  # a study's changes in the log's order
                pending.append((number, kind, study))
                if len(pending) >= self._batch_size:
                    pending = self._flush(pending, fetched_at)
                if time.monotonic() - self._advanced_at >= ADVANCE_EVERY_SECONDS:
                    # Never past a change not handled yet: a crash replays it.
                    self._advance(pending[0][0] - 1 if pending else number)
            handled = number
        self._flush(pending, fetched_at)
        if handled > seq:
            self._advance(handled)
            self._gaps = {k: v for k, v in self._gaps.items() if k > handled}
        self._set_behind(max(last - handled, 0))
        return bool(changes) and handled > seq and not answer.get("Done", True)

    def _flush(self, pending: list[tuple[int, str, str]], fetched_at: float) -> list[tuple[int, str, str]]:
        """Handle the changes read (ChangeHandler.flush); a stable study an upload holds by then is deferred too:
        its upload began between the change's reading and its handling, which may have passed it over (or
        recorded it just before: then recorded again, idempotently, once released)."""
        self._changes.flush(pending, fetched_at)
        for number, kind, study in pending:
            self._defer_if_held(number, kind, study, fetched_at)
        return []

    def _defer_if_held(self, number: int, kind: str, study: str, read_at: float) -> None:
        if kind == STABLE and self._services.holds.is_held(study):
            self._deferred.setdefault(study, (number, read_at))

    def _advance(self, seq: int) -> None:
        durable = min([seq, *(number - 1 for number, _ in self._deferred.values())])
        try:
            advanced = cursors.advance(self._services.engine, self._log_id, self._node, durable, LEASE_SECONDS)
        except db.UNAVAILABLE:
            # Held in memory and written with the next advance once the database is back (a best-effort change,
            # NEW_STUDY, is passed meanwhile; a stable study's handling waits for the database itself).
            self._seq = seq
            return
        if not advanced:
            self._following = False
            raise LeaseLost(f"the lease of change log {self._log_id} went to another node")
        self._seq = seq
        self._advanced_at = time.monotonic()

    def _set_behind(self, behind: int) -> None:
        self._behind = behind
        if behind == 0:
            self._behind_since = None
        elif self._behind_since is None:
            self._behind_since = time.monotonic()

    def _first_start(self, last: int) -> None:
        """No cursor for this change log yet (a new database, or an archive from before this version): follow the
        log from its last change, and let one paged repair find what came before, in the background."""
        cursors.create(self._services.engine, self._log_id, last)
        self._log_warning(f"ehr-imaging: no cursor for Orthanc's change log {self._log_id}: following it from"
                          f" change {last}; a paged repair looks for what came before")
        self._repair_in_background("first start on this change log")

    def _resumed(self, seq: int, last: int) -> int:
        """This node starts following: from its cursor, unless the log no longer holds what follows it."""
        pacs = self._services.pacs
        if seq > last:
            # A new index under an old id (restored from a backup, or its log reset): what follows is unknown.
            self._log_warning(f"ehr-imaging: Orthanc's change log ends at {last}, before the cursor ({seq}):"
                              " following it from there and running the paged repair")
            self._advance(last)
            self._repair_in_background("the change log restarted")
            return last
        oldest = pacs.get_json("/changes?since=0&limit=1").get("Changes", [])
        if oldest and int(oldest[0]["Seq"]) > seq + 1:
            self._log_warning(f"ehr-imaging: Orthanc's change log no longer holds changes {seq + 1} to"
                              f" {int(oldest[0]['Seq']) - 1} (cleared, or their resources deleted): running the"
                              " paged repair")
            self._repair_in_background("the cursor fell behind the change log")
        self._log_warning(f"ehr-imaging: resuming Orthanc's change log after change {seq} ({last - seq} behind)")
        return seq

    def _repair_in_background(self, why: str) -> None:
        def repair() -> None:
            try:
                ingest_repair.reconcile(self._services)
            except Exception as exc:  # noqa: BLE001 - said; make reconcile runs it again
                self._log_error(f"ehr-imaging: repair ({why}) failed: {type(exc).__name__}: {exc};"
                                " run make reconcile")

        threading.Thread(target=repair, name="ehr-ingest-repair", daemon=True).start()

class LeaseLost(Exception):
    """Another node follows the shared change log now: this one stops (and goes on with its own deletions)."""
