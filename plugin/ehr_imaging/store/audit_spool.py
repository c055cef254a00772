"""The durable local audit spool: append-only segment files of audit records, on this node's disk.

One ``AuditSpool`` owns one stream (a folder): ``access`` (every counted viewer request) or ``events`` (audit
rows that could not be written while PostgreSQL was away: DIMSE queries and retrievals). A record is written
with one ``os.write`` before the request it describes is answered, so a killed process loses none; the
folder's files are fsync'd at most every ``sync_millis`` (or at once for ``append(..., sync=True)``), so a
power loss loses at most that window. Segments are named by their first sequence number (then a unique
part); every start opens a new one (never appending after a torn tail) and the sequence continues from the
highest one on disk. A segment is deleted only once PostgreSQL holds every record in it (``applied``;
store/spool_replay.py writes the rows and the spool's high-water mark in one transaction). The folder (0700,
checked by the composition root) is locked (``flock``): two processes never share a spool.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.audit_record import Record, decode, encode

SUFFIX = ".seg"
SEGMENT_BYTES = 8 << 20  # a long outage spreads over several files, each deleted once applied


@dataclass
class _Segment:
    path: Path
    first_seq: int
    last_seq: int  # first_seq - 1 while empty
    size: int


@dataclass(frozen=True)
class Snapshot:
    """What a replay may read: records up to ``last_seq``, each segment up to its size then."""

    last_seq: int
    segments: tuple[tuple[Path, int, int], ...]  # path, last seq, bytes


def spool_id(root: Path) -> str:
    """The spool's stable identity (its high-water marks in PostgreSQL are keyed by it), made once."""
    path = root / "spool-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = uuid.uuid4().hex
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, value.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        _sync_dir(root)
        return value


class AuditSpool:
    def __init__(self, folder: Path, stream: str, identity: str, *, sync_millis: int = 200,
                 log: Callable[[str], None] = print) -> None:
        self.folder = folder
        self.stream = stream
        self.identity = identity
        self._sync_seconds = sync_millis / 1000
        self._log = log
        self._lock = threading.Lock()
        self._dirty = False
        self._closed = False
        folder.mkdir(mode=0o700, exist_ok=True)
        self._lock_fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(f"audit spool {folder} is in use by another process") from None
        self._segments = self._load()
        next_seq = max((s.last_seq for s in self._segments), default=0) + 1
        # Until PostgreSQL says otherwise (``applied``), everything on disk is taken as not yet applied.
        self._applied = min((s.first_seq for s in self._segments), default=next_seq) - 1
        self._fd = -1
        self._open_segment(next_seq)

    # --- writing -------------------------------------------------------------------------------------
    def append(self, kind: str, payload: Any, *, sync: bool = False) -> int:
        """Write one record now (one os.write); its sequence number. ``sync``: fsync'd before returning."""
        with self._lock:
            active = self._segments[-1]
            seq = active.last_seq + 1
            data = encode(seq, kind, payload)
            written = os.write(self._fd, data)
            while written < len(data):  # a regular file takes it whole; a full disk raises instead
                written += os.write(self._fd, data[written:])
            active.last_seq = seq
            active.size += len(data)
            if sync:
                os.fsync(self._fd)
            else:
                self._dirty = True
            if active.size >= SEGMENT_BYTES:
                self._open_segment(seq + 1)
            return seq

    def sync(self) -> None:
        """fsync what was written since the last one (the group commit: one fsync for many records)."""
        with self._lock:
            if not self._dirty or self._closed:
                return
            self._dirty = False
            fd = os.dup(self._fd)
        try:
            os.fsync(fd)  # outside the lock: appends carry on meanwhile
        finally:
            os.close(fd)

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"ehr-audit-spool-{self.stream}", daemon=True).start()

    def _run(self) -> None:
        while not self._closed:
            time.sleep(self._sync_seconds)
            try:
                self.sync()
            except OSError as exc:
                self._log(f"ehr-imaging: audit spool {self.folder} not synced ({exc.strerror}); will retry")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.fsync(self._fd)
            os.close(self._fd)
            os.close(self._lock_fd)

    # --- reading and applying ------------------------------------------------------------------------
    def last_seq(self) -> int:
        with self._lock:
            return self._segments[-1].last_seq

    def behind(self) -> bool:
        """Records not yet known to be in PostgreSQL (a replay has something to do)."""
        with self._lock:
            return self._segments[-1].last_seq > self._applied

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._segments[-1].last_seq,
                            tuple((s.path, s.last_seq, s.size) for s in self._segments))

    def records(self, after: int, snapshot: Snapshot) -> Iterator[Record]:
        """The records with ``after`` < seq <= ``snapshot.last_seq``, in order (damaged ones skipped)."""
        for path, last, size in snapshot.segments:
            if last <= after:
                continue
            with path.open("rb") as file:
                data = file.read(size)
            decoded = decode(data)
            for problem in decoded.problems:
                self._log(f"ehr-imaging: audit spool {path.name}: {problem}")
            for record in decoded.records:
                if after < record.seq <= snapshot.last_seq:
                    yield record

    def applied(self, upto: int) -> None:
        """PostgreSQL holds every record up to ``upto``: delete the segments that hold nothing newer."""
        with self._lock:
            active = self._segments[-1]
            if active.last_seq <= upto and active.last_seq >= active.first_seq and not self._closed:
                # The folder keeps the next sequence number; the old file is deleted below, unsynced.
                self._open_segment(active.last_seq + 1, sync_old=False)
            self._applied = max(self._applied, upto)
            done = [s for s in self._segments[:-1] if s.last_seq <= upto]
            for segment in done:
                segment.path.unlink(missing_ok=True)
                self._segments.remove(segment)
        if done:
            _sync_dir(self.folder)

    def depth(self) -> tuple[int, int]:
        """(records, bytes) not yet known to be in PostgreSQL: the records after its last high-water mark
        this process saw, and the size of the segment files holding them."""
        with self._lock:
            pending = [s for s in self._segments if s.last_seq > self._applied]
            return max(self._segments[-1].last_seq - self._applied, 0), sum(s.size for s in pending)

    # --- segments ------------------------------------------------------------------------------------
    def _load(self) -> list[_Segment]:
        segments = []
        for path in sorted(self.folder.glob("*" + SUFFIX), key=lambda p: (_first_seq(p), p.name)):
            data = path.read_bytes()
            decoded = decode(data)
            for problem in decoded.problems:
                self._log(f"ehr-imaging: audit spool {path.name}: {problem}")
            first = _first_seq(path)
            last = max((r.seq for r in decoded.records), default=first - 1)
            segments.append(_Segment(path, first, max(last, first - 1), len(data)))
        return segments

    def _open_segment(self, first_seq: int, *, sync_old: bool = True) -> None:
        """Called with the lock held (or from __init__): a new, empty segment becomes the active one."""
        # The first sequence number, then what makes the name unique (a start may reopen at the same number).
        path = self.folder / f"{first_seq:020d}-{time.time_ns():x}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        if self._fd >= 0:
            if sync_old:
                os.fsync(self._fd)
            os.close(self._fd)
            self._dirty = False
        self._fd = fd
        self._segments.append(_Segment(path, first_seq, first_seq - 1, 0))
        old_empty = [s for s in self._segments[:-1] if s.last_seq < s.first_seq]
        for segment in old_empty:  # an empty segment held only the next sequence number: the new one does
            segment.path.unlink(missing_ok=True)
            self._segments.remove(segment)
        _sync_dir(self.folder)


def _first_seq(path: Path) -> int:
    return int(path.name.split("-", 1)[0].removesuffix(SUFFIX))


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
