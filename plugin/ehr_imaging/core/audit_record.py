"""The audit spool's record format (pure): how one audit event is framed on disk, and read back.

A record is ``MAGIC`` (2 bytes), the body's length (u32), the record's sequence number (u64: its stable id
within the spool, increasing by one per record, never reused), a CRC-32 of length + sequence + body (u32),
then the body: JSON ``[kind, payload]``. A record cut short (a process killed mid-write) or damaged (a
flipped bit) fails its length or checksum: the reader skips it, says where and why, and resynchronises on the
next offset where a whole, valid record starts.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

MAGIC = b"EA"
_HEAD = struct.Struct("<IQ")  # body length, sequence number
_CRC = struct.Struct("<I")
HEADER_BYTES = len(MAGIC) + _HEAD.size + _CRC.size
MAX_BODY_BYTES = 1 << 20  # an audit event is small: a longer "length" is damage
# One encoder: json.dumps(..., separators=...) builds a new one per call (4x the cost on the filter's path).
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

ACCESS = "access"  # a viewer request: [token_id, study_uid, subject, epoch, allowed, bytes]
DIMSE = "dimse"  # a dimse_audit row: the DimseEvent's fields, the node, the time


@dataclass(frozen=True)
class Record:
    seq: int
    kind: str
    payload: Any


@dataclass(frozen=True)
class Decoded:
    records: list[Record]
    problems: list[str]  # one line per skipped stretch of bytes: where, how long, why


def encode(seq: int, kind: str, payload: Any) -> bytes:
    body = _JSON.encode([kind, payload]).encode()
    head = _HEAD.pack(len(body), seq)
    return MAGIC + head + _CRC.pack(zlib.crc32(body, zlib.crc32(head))) + body


def _one(data: bytes, at: int) -> tuple[Record, int] | str:
    """The valid record at ``at`` and the offset after it, or why there is none."""
    if len(data) - at < HEADER_BYTES:
        return "truncated header"
    if data[at:at + 2] != MAGIC:
        return "no record start"
    length, seq = _HEAD.unpack_from(data, at + 2)
    if length > MAX_BODY_BYTES:
        return "impossible length"
    start = at + HEADER_BYTES
    if start + length > len(data):
        return "truncated body"
    (crc,) = _CRC.unpack_from(data, at + 2 + _HEAD.size)
    body = data[start:start + length]
    if zlib.crc32(body, zlib.crc32(data[at + 2:at + 2 + _HEAD.size])) != crc:
        return "checksum mismatch"
    try:
        kind, payload = json.loads(body)
    except (ValueError, TypeError):
        return "unreadable body"
    return Record(seq, str(kind), payload), start + length


def decode(data: bytes) -> Decoded:
    """Every valid record of a segment, in file order; damaged stretches skipped and reported."""
    records: list[Record] = []
    problems: list[str] = []
    at = 0
    while at < len(data):
        found = _one(data, at)
        if not isinstance(found, str):
            records.append(found[0])
            at = found[1]
            continue
        reason, bad = found, at
        at = _resync(data, at + 1)
        problems.append(f"{at - bad} bytes skipped at offset {bad} ({reason})")
    return Decoded(records, problems)


def _resync(data: bytes, start: int) -> int:
    """The next offset at or after ``start`` where a whole valid record begins (or the end)."""
    at = data.find(MAGIC, start)
    while at != -1:
        if not isinstance(_one(data, at), str):
            return at
        at = data.find(MAGIC, at + 1)
    return len(data)
