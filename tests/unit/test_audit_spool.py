"""The audit spool on disk: the record format (round trip, a torn tail, a flipped bit), segments that keep
their sequence across restarts and are deleted only once applied, and the access log writing each request
to the spool before it counts it."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from ehr_imaging.app.access_log import AccessLog
from ehr_imaging.app.audit_replay import spool_gauges
from ehr_imaging.app.dicomweb_gate import ViewerGate
from ehr_imaging.app.study_hierarchy import StudyMembers
from ehr_imaging.app.token_revocations import RevocationList
from ehr_imaging.core import metrics
from ehr_imaging.core.audit_record import ACCESS, HEADER_BYTES, Record, decode, encode
from ehr_imaging.core.auth import TokenVerifier
from ehr_imaging.core.study_identity import orthanc_study_id
from ehr_imaging.core.viewer_tokens import VIEWER_AUDIENCE, mint_viewer_token, viewer_principal
from ehr_imaging.store.audit_spool import AuditSpool, Snapshot, spool_id
from ehr_imaging.store.spool_replay import access_counts
from ehr_imaging.store.viewer_tokens import AccessCount


def test_records_round_trip_in_order() -> None:
    data = b"".join(encode(seq, ACCESS, ["t", "1.2.3", "dr", 100.5 + seq, seq % 2 == 0, seq * 10])
                    for seq in range(1, 6))
    decoded = decode(data)
    assert decoded.problems == []
    assert [r.seq for r in decoded.records] == [1, 2, 3, 4, 5]
    assert decoded.records[1] == Record(2, ACCESS, ["t", "1.2.3", "dr", 102.5, True, 20])


@pytest.mark.parametrize("cut", [1, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + 3])
def test_a_truncated_tail_is_skipped_and_reported(cut: int) -> None:
    whole = encode(1, "dimse", {"service": "C-FIND"}) + encode(2, "dimse", {"service": "MWL"})
    last = encode(3, "dimse", {"service": "C-MOVE"})
    decoded = decode(whole + last[:cut])
    assert [r.seq for r in decoded.records] == [1, 2]
    assert len(decoded.problems) == 1 and f"{cut} bytes skipped at offset {len(whole)}" in decoded.problems[0]


def test_every_flipped_bit_of_a_record_is_detected_and_the_next_record_still_read() -> None:
    first, second, third = (encode(seq, ACCESS, ["t", "s", "u", 1.0, True, seq]) for seq in (1, 2, 3))
    for bit in range(len(second) * 8):
        damaged = bytearray(second)
        damaged[bit // 8] ^= 1 << (bit % 8)
        decoded = decode(first + bytes(damaged) + third)
        assert [r.seq for r in decoded.records] == [1, 3], bit
        assert len(decoded.problems) == 1, (bit, decoded.problems)


def spool(folder: Path, **kwargs: Any) -> AuditSpool:
    return AuditSpool(folder, "access", "spool-1", log=kwargs.pop("log", lambda line: None), **kwargs)


def test_the_sequence_continues_across_restarts_and_a_torn_tail_is_never_appended_to(tmp_path: Path) -> None:
    first = spool(tmp_path / "access")
    assert [first.append(ACCESS, [n]) for n in range(3)] == [1, 2, 3]
    first.close()
    segment = next((tmp_path / "access").glob("*.seg"))
    with segment.open("ab") as file:
        file.write(encode(4, ACCESS, [3])[:7])  # killed mid-write
    logged: list[str] = []
    second = spool(tmp_path / "access", log=logged.append)
    assert any("7 bytes skipped" in line for line in logged), logged
    assert second.append(ACCESS, ["after"]) == 4
    records = list(second.records(0, second.snapshot()))
    assert [(r.seq, r.payload) for r in records] == [(1, [0]), (2, [1]), (3, [2]), (4, ["after"])]
    assert second.depth()[0] == 4


def test_segments_are_deleted_only_once_applied_and_the_next_number_is_kept(tmp_path: Path) -> None:
    folder = tmp_path / "access"
    first = spool(folder)
    for n in range(5):
        first.append(ACCESS, [n])
    first.applied(3)  # records 4 and 5 are not in PostgreSQL yet: nothing deleted
    assert [r.seq for r in first.records(3, first.snapshot())] == [4, 5]
    assert len(list(folder.glob("*.seg"))) == 1
    first.applied(5)
    assert first.depth() == (0, 0)
    assert [path.stat().st_size for path in folder.glob("*.seg")] == [0]  # only the next number is left
    first.close()
    again = spool(folder)
    assert again.append(ACCESS, ["next"]) == 6  # never reused: a replay would take it as applied


def test_the_spool_is_private_and_locked(tmp_path: Path) -> None:
    folder = tmp_path / "access"
    first = spool(folder)
    first.append(ACCESS, ["x"])
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.glob("*.seg"))
    with pytest.raises(RuntimeError, match="in use by another process"):
        spool(folder)
    identity = spool_id(tmp_path)
    assert identity == spool_id(tmp_path) and len(identity) == 32


def test_spool_records_aggregate_as_the_live_log_does() -> None:
    records = [Record(1, ACCESS, ["t1", "A", "dr", 10.0, True, 100]),
               Record(2, ACCESS, ["t1", "A", "dr", 12.0, True, 5]),
               Record(3, ACCESS, ["t1", "B", "dr", 11.0, False, 0]), Record(4, "dimse", {}),
               Record(5, ACCESS, ["t1", "A", "dr", 9.0, False, 0])]
    by_study = {c.study_uid: c for c in access_counts(records)}
    assert by_study["A"] == AccessCount("t1", "A", "dr", 9.0, 12.0, requests=2, denied=1, bytes=105)
    assert by_study["B"] == AccessCount("t1", "B", "dr", 11.0, 11.0, requests=0, denied=1, bytes=0)


def test_the_access_log_spools_each_request_before_counting_it(tmp_path: Path) -> None:
    log_spool = spool(tmp_path / "access")
    calls: list[tuple[list[AccessCount], int, Snapshot]] = []

    def apply(counts: list[AccessCount], first: int, snapshot: Snapshot) -> int:
        calls.append((counts, first, snapshot))
        if len(calls) == 1:
            raise ConnectionError("database down")
        log_spool.applied(snapshot.last_seq)
        return snapshot.last_seq - first + 1

    log = AccessLog(lambda counts: None, clock=lambda: 100.0, spool=log_spool, apply_spooled=apply)
    for _ in range(3):
        log.record("t1", "dr", "A", allowed=True, size=10)
    assert [r.seq for r in log_spool.records(0, log_spool.snapshot())] == [1, 2, 3]  # on disk before any flush
    with pytest.raises(ConnectionError):
        log.flush()
    log.record("t1", "dr", "A", allowed=True, size=5)
    assert log.flush() == 1
    (counts, first, snapshot), (retry, retry_first, retry_snapshot) = calls
    assert (first, snapshot.last_seq, counts[0].requests, counts[0].bytes) == (1, 3, 3, 30)
    # The failed batch is not kept in memory: the retry holds only record 4, and the spool the rest.
    assert (retry_first, retry_snapshot.last_seq, retry[0].requests, retry[0].bytes) == (4, 4, 1, 5)
    assert log.flush() == 0 and len(calls) == 2  # nothing new, nothing behind: no database round trip


def test_the_depth_gauges_add_up_every_spool(tmp_path: Path) -> None:
    access, events = spool(tmp_path / "access"), AuditSpool(tmp_path / "events", "events", "spool-1")
    for n in range(3):
        access.append(ACCESS, [n])
    events.append("dimse", {"service": "C-FIND"}, sync=True)
    gauges = spool_gauges(access, events)()
    sizes = sum(p.stat().st_size for p in tmp_path.glob("*/*.seg"))
    assert gauges == {metrics.AUDIT_SPOOL_RECORDS: 4, metrics.AUDIT_SPOOL_BYTES: sizes} and sizes > 0
    access.applied(3)
    events.applied(1)
    assert spool_gauges(access, events)() == {metrics.AUDIT_SPOOL_RECORDS: 0, metrics.AUDIT_SPOOL_BYTES: 0}


class StoredStudy:
    """The viewer gate's hierarchy for one stored study, every series and instance in it."""

    def members(self, orthanc_study_id: str) -> StudyMembers:
        return StudyMembers(stored=True, study_uid=STUDY)

    def belongs(self, orthanc_study_id: str, series_uid: str | None, instance_uid: str | None) -> bool:
        return True

    def shared_now(self, orthanc_study_id: str) -> bool:
        return False

    def size_of(self, orthanc_study_id: str, instance_uid: str | None, frames: int | None = None) -> int:
        return 1000


STUDY = "1.2.826.0.1.3680043.8.498.1"


def test_a_read_that_cannot_be_put_on_record_is_refused(tmp_path: Path) -> None:
    log_spool = spool(tmp_path / "access")
    errors: list[str] = []
    log = AccessLog(lambda counts: None, spool=log_spool, apply_spooled=lambda c, f, s: 0, log_error=errors.append)
    verifier = TokenVerifier(issuer="iss", audience=VIEWER_AUDIENCE, secret="s" * 32,
                             principal_from_claims=viewer_principal)
    minted = mint_viewer_token(secret="s" * 32, issuer="iss", subject="dr",
                               studies={STUDY: orthanc_study_id("P", STUDY)}, ttl_seconds=60)
    revocations = RevocationList(dict)
    revocations.refresh()
    gate = ViewerGate(verifier, revocations, StoredStudy(), log)  # type: ignore[arg-type]
    principal = gate.principal(minted.token)
    path = f"/dicom-web/studies/{STUDY}/series/1.2.3/instances/1.2.3.4/frames/1"
    assert gate.decide(principal, "GET", path, {}).allowed
    os.close(log_spool._fd)  # the spool's disk fails (full, gone): the next read cannot be recorded
    refused = gate.decide(principal, "GET", path, {})
    assert not refused.allowed and "access audit" in refused.reason
    assert not gate.decide(principal, "GET", path, {}).allowed
    assert len(errors) == 1 and "viewer reads are refused" in errors[0]  # logged once, not once per frame
