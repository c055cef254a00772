"""A seeded mutator of real DICOM files: truncations, bit flips, bad lengths, bad VRs, huge values, garbage
preambles, zero-length files, swapped and duplicated elements, a wrong transfer syntax.

Each mutant is a pure function of (seed, channel, index) over the same sources (pydicom's test files and the
small sample studies): ``mutant(sources, seed, channel, index)`` gives the same bytes every time, so a failure
is replayed from its seed alone. Each mutant first gets Study, Series and SOP Instance UIDs of its own (same
lengths, so nothing shifts), so every mutant that stays a valid DICOM file is a new instance of a new study.
"""

from __future__ import annotations

import io
import itertools
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement

# Small files with a Part 10 header: explicit and implicit little endian, big endian, JPEG, JPEG-LS, JPEG 2000,
# RLE, structured reports, RT objects, multi-frame (pydicom's own test files).
PYDICOM_SOURCES = (
    "CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtstruct.dcm", "rtdose_1frame.dcm", "SC_rgb_small_odd.dcm",
    "SC_rgb_small_odd_big_endian.dcm", "SC_rgb_rle.dcm", "SC_rgb_rle_2frame.dcm", "JPEG2000.dcm",
    "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jpeg_ls_lossless.dcm", "reportsi.dcm", "test-SR.dcm",
    "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
)
UNDEFINED = 0xFFFFFFFF
SHORT_VRS = (b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH",
             b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US")
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
WRONG_VRS = (b"SQ", b"UN", b"OB", b"OW", b"UT", b"DS", b"IS", b"AT", b"US", b"SL", b"FD", b"UI", b"PN", b"XX",
             b"\x00\x00", b"  ", b"ox", b"\xff\xff")
TRANSFER_SYNTAXES = (b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.1", b"1.2.840.10008.1.2.2", b"1.2.840.10008.1.2.5",
                     b"1.2.840.10008.1.2.1.99", b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.90",
                     b"1.2.840.10008.1.2.4.201", b"1.2.3.4", b"")


@dataclass(frozen=True)
class Header:
    """One element's header in a source file: where it starts, where its length is (2 or 4 bytes) and its VR."""

    offset: int
    vr_offset: int | None  # None: implicit VR
    length_offset: int
    length_size: int
    value_offset: int
    length: int
    little: bool
    sequence: bool = False  # an SQ value: items with headers of their own inside


@dataclass(frozen=True)
class Source:
    name: str
    data: bytes
    dataset_offset: int  # where the dataset starts, after the file meta (what a C-STORE sends)
    uids: tuple[bytes, ...]  # Study, Series and SOP Instance UIDs as written (and the file meta's SOP one if other)
    headers: tuple[Header, ...]
    sop_class: str
    transfer_syntax: str


@dataclass(frozen=True)
class Mutant:
    channel: str
    index: int
    source: str
    kinds: tuple[str, ...]
    data: bytes
    sop_instance_uid: str  # the UID it was given (a mutation may have changed it since)

    @property
    def name(self) -> str:
        return f"{self.channel}-{self.index}.dcm"


def _meta_headers(data: bytes) -> tuple[list[Header], int]:
    """The file meta elements (always explicit VR little endian) and where the dataset starts."""
    headers, pos = [], 132
    while pos + 8 <= len(data) and data[pos:pos + 2] == b"\x02\x00":
        vr = data[pos + 4:pos + 6]
        if vr in LONG_VRS:
            (length,) = struct.unpack_from("<I", data, pos + 8)
            header = Header(pos, pos + 4, pos + 8, 4, pos + 12, length, True)
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            header = Header(pos, pos + 4, pos + 6, 2, pos + 8, length, True)
        headers.append(header)
        pos = header.value_offset + length
    return headers, pos


def load_source(name: str, data: bytes) -> Source | None:
    """A source file and its element headers; None when pydicom cannot read it as a Part 10 file."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        uids = [str(ds[keyword].value).encode() for keyword in
                ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
        meta_sop = str(ds.file_meta.MediaStorageSOPInstanceUID).encode()  # not always the dataset's
        sop_class, syntax = str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)
    except Exception:  # noqa: BLE001 - a source pydicom cannot read is simply not used
        return None
    headers, dataset_offset = _meta_headers(data)
    for element in ds._dict.values():
        if not isinstance(element, RawDataElement) or element.value_tell is None:
            continue
        value = element.value_tell
        if element.is_implicit_VR:
            try:  # implicit VR: the dictionary says; a private element may be anything, so counted as one
                sequence = element.tag.is_private or dictionary_VR(element.tag) == "SQ"
            except KeyError:
                sequence = True
            headers.append(Header(value - 8, None, value - 4, 4, value, element.length, element.is_little_endian,
                                  sequence))
        elif data[value - 8:value - 6] in LONG_VRS:
            headers.append(Header(value - 12, value - 8, value - 4, 4, value, element.length, element.is_little_endian))
        else:
            headers.append(Header(value - 8, value - 4, value - 2, 2, value, element.length, element.is_little_endian))
    if len(set(uids)) != 3:
        return None
    return Source(name, data, dataset_offset, (*uids, *([meta_sop] if meta_sop not in uids else [])),
                  tuple(headers), sop_class, syntax)


def default_sources(sample_files: Sequence[Path] = ()) -> list[Source]:
    """pydicom's test files above plus ``sample_files`` (the small sample studies), those that load."""
    named = [(name, Path(str(get_testdata_file(name))).read_bytes()) for name in PYDICOM_SOURCES]
    named += [(path.name, path.read_bytes()) for path in sample_files]
    return [source for name, data in named if (source := load_source(name, data)) is not None]


# --- mutations: (rng, data, source, floor) -> data; ``floor`` is the first byte a mutation may touch -------------
Mutation = Callable[[random.Random, bytearray, Source, int], bytearray]


def _header(rng: random.Random, source: Source, floor: int, data: bytearray) -> Header | None:
    usable = [h for h in source.headers if h.offset >= floor and h.value_offset <= len(data)]
    return rng.choice(usable) if usable else None


def truncate(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    header = _header(rng, source, floor, data)
    if header is not None and rng.random() < 0.5:  # inside an element's header or just into its value
        cut = header.offset + rng.randrange(0, 16)
    else:
        cut = rng.randrange(floor, max(floor + 1, len(data)))
    return data[:min(cut, len(data))]


def bit_flips(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    if len(data) <= floor:
        return data
    for _ in range(rng.randint(1, 16)):
        header = _header(rng, source, floor, data)
        if header is not None and rng.random() < 0.7:  # mostly where the parser looks: headers, first values
            pos = min(len(data) - 1, header.offset + rng.randrange(0, 24))
        else:
            pos = rng.randrange(floor, len(data))
        data[pos] ^= 1 << rng.randrange(8)
    return data


def bad_length(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    header = _header(rng, source, floor, data)
    if header is None or header.length_offset + header.length_size > len(data):
        return bit_flips(rng, data, source, floor)
    top = 0xFFFF if header.length_size == 2 else 0xFFFFFFFF
    remaining = len(data) - header.value_offset
    length = rng.choice([0, 1, header.length + 1, max(0, header.length - 1), header.length * 2 + 2, top, top - 1,
                         top // 2, remaining + 2, remaining - 1, rng.randrange(top)]) & top
    fmt = ("<" if header.little else ">") + ("H" if header.length_size == 2 else "I")
    struct.pack_into(fmt, data, header.length_offset, length)
    return data


def bad_vr(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    header = _header(rng, source, floor, data)
    if header is None or header.vr_offset is None:
        return bit_flips(rng, data, source, floor)
    data[header.vr_offset:header.vr_offset + 2] = rng.choice(WRONG_VRS)
    return data


def huge_value(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    """A value of up to 1 MiB inside an element (its length made to agree when it has 4 bytes)."""
    header = _header(rng, source, floor, data)
    if header is None:
        return data + bytes(rng.choice([4096, 65536]))
    size = rng.choice([1024, 4096, 65536, 65536, 1 << 20])
    fill = rng.choice([b"9", b"\\", b"\x00", b"A", b"1\\", b"\xff", b"^="])
    value = (fill * (size // len(fill) + 1))[:size]
    pos = min(header.value_offset, len(data))
    data[pos:pos] = value
    if header.length_size == 4 and header.length != 0xFFFFFFFF and rng.random() < 0.8:
        fmt = "<I" if header.little else ">I"
        struct.pack_into(fmt, data, header.length_offset, (header.length + size) & 0xFFFFFFFF)
    return data


def garbage_preamble(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    choice = rng.randrange(5)
    junk = bytes(rng.randrange(256) for _ in range(rng.choice([4, 128, 132, 1000])))
    if choice == 0:
        data[:128] = junk[:128].ljust(128, b"\x00")
    elif choice == 1:
        data[128:132] = rng.choice([b"DICN", b"dicm", b"\x00\x00\x00\x00", b"MCID", junk[:4]])
    elif choice == 2:
        data[0:0] = junk
    elif choice == 3:
        del data[:132]  # no preamble, no DICM: the meta first
    else:
        del data[:rng.randrange(1, 140)]
    return data


def zero_length(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    return data[:floor] if floor else bytearray(rng.choice([b"", b"", b"\x00", b"DICM"]))


def swap_elements(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    """Two neighbouring elements in the wrong order (tags must ascend)."""
    headers = [h for h in source.headers if h.offset >= max(floor, 132)]
    pairs = [(a, b) for a, b in itertools.pairwise(headers)
             if a.value_offset + a.length == b.offset and b.value_offset + b.length <= len(data)
             and a.length != 0xFFFFFFFF and b.length != 0xFFFFFFFF]
    if not pairs:
        return bit_flips(rng, data, source, floor)
    a, b = rng.choice(pairs)
    end = b.value_offset + b.length
    data[a.offset:end] = data[b.offset:end] + data[a.offset:b.offset]
    return data


def duplicate_or_delete(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    if len(data) <= floor + 2:
        return data
    start = rng.randrange(floor, len(data) - 1)
    end = min(len(data), start + rng.choice([2, 8, 64, 512, 4096]))
    if rng.random() < 0.5:
        data[end:end] = data[start:end] * rng.randint(1, 4)
    else:
        del data[start:end]
    return data


def wrong_transfer_syntax(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    """The file meta declares another transfer syntax than the one the dataset is written in."""
    header = next((h for h in source.headers if h.offset < source.dataset_offset
                   and data[h.offset:h.offset + 4] == b"\x02\x00\x10\x00"), None)
    if header is None or floor > header.offset:
        return bit_flips(rng, data, source, floor)
    syntax = rng.choice(TRANSFER_SYNTAXES)
    if len(syntax) > header.length:
        return data
    data[header.value_offset:header.value_offset + header.length] = syntax.ljust(header.length, b"\x00")
    return data


# --- what a C-STORE can carry: the dataset's framing kept (an element's length always agrees with its bytes).
# A dataset whose lengths run past its end makes Orthanc's DICOM layer wait for bytes that never come until its
# DicomScpTimeout, then abort the association: that is DCMTK's, not the plugin's (REST uploads carry those).

def _framed(source: Source, floor: int, data: bytearray) -> list[Header]:
    """Elements of the dataset whose value is plain bytes (not a sequence, not of undefined length)."""
    return [h for h in source.headers if h.offset >= floor and h.length != UNDEFINED and not h.sequence
            and h.value_offset + h.length <= len(data)
            and (h.vr_offset is None or data[h.vr_offset:h.vr_offset + 2] != b"SQ")]


def value_flips(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    """Bits flipped inside values only."""
    headers = [h for h in _framed(source, floor, data) if h.length]
    for _ in range(rng.randint(1, 8) if headers else 0):
        header = rng.choice(headers)
        data[header.value_offset + rng.randrange(header.length)] ^= 1 << rng.randrange(8)
    return data


def vr_same_shape(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    """Another VR with the same header layout (a 2-byte length for a 2-byte one): a type confusion."""
    headers = [h for h in _framed(source, floor, data) if h.vr_offset is not None]
    if not headers:
        return value_flips(rng, data, source, floor)
    header = rng.choice(headers)
    assert header.vr_offset is not None
    shape = list(SHORT_VRS) if header.length_size == 2 else sorted(LONG_VRS - {b"SQ"})
    data[header.vr_offset:header.vr_offset + 2] = rng.choice(shape)
    return data


def long_value(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    """A value made as long as its length field allows (up to 1 MiB), the length updated to agree."""
    headers = _framed(source, floor, data)
    if not headers:
        return data
    header = rng.choice(headers)
    room = (0xFFFE if header.length_size == 2 else 1 << 20) - header.length
    size = min(room, rng.choice([256, 4096, 65534, 1 << 20])) & ~1
    fill = rng.choice([b"9", b"\\", b"A", b"1\\", b"^="])
    data[header.value_offset:header.value_offset] = (fill * (size // len(fill) + 1))[:size]
    fmt = ("<" if header.little else ">") + ("H" if header.length_size == 2 else "I")
    struct.pack_into(fmt, data, header.length_offset, header.length + size)
    return data


def cut_at_element(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    """The dataset ends before one of its elements (the pixel data, a UID, everything after)."""
    headers = [h for h in source.headers if h.offset >= floor]
    return data[:rng.choice(headers).offset] if headers else data


def drop_or_repeat_element(rng: random.Random, data: bytearray, source: Source, floor: int) -> bytearray:
    """One whole element removed, or written twice (a duplicate tag)."""
    headers = _framed(source, floor, data)
    if not headers:
        return data
    header = rng.choice(headers)
    element = data[header.offset:header.value_offset + header.length]
    if rng.random() < 0.5:
        del data[header.offset:header.value_offset + header.length]
    else:
        data[header.offset:header.offset] = element
    return data


MUTATIONS: dict[str, Mutation] = {
    "truncate": truncate, "bit_flips": bit_flips, "bad_length": bad_length, "bad_vr": bad_vr,
    "huge_value": huge_value, "garbage_preamble": garbage_preamble, "zero_length": zero_length,
    "swap_elements": swap_elements, "duplicate_or_delete": duplicate_or_delete,
    "wrong_transfer_syntax": wrong_transfer_syntax, "value_flips": value_flips, "vr_same_shape": vr_same_shape,
    "long_value": long_value, "cut_at_element": cut_at_element, "drop_or_repeat_element": drop_or_repeat_element,
}
# How often each is drawn: the structural ones most; huge values (up to 1 MiB) and empty files now and then.
WEIGHTS = {"truncate": 14, "bit_flips": 22, "bad_length": 18, "bad_vr": 12, "huge_value": 4, "garbage_preamble": 6,
           "zero_length": 2, "swap_elements": 8, "duplicate_or_delete": 10, "wrong_transfer_syntax": 4,
           "value_flips": 3, "vr_same_shape": 3, "long_value": 1, "cut_at_element": 3, "drop_or_repeat_element": 3}
# C-STORE: the framed mutations only; those that move bytes (SHIFTING) at most once and last (the headers'
# offsets are the source's).
FRAMED_WEIGHTS = {"value_flips": 10, "vr_same_shape": 8, "long_value": 3, "cut_at_element": 5,
                  "drop_or_repeat_element": 6, "swap_elements": 5, "zero_length": 1}
SHIFTING = frozenset({"long_value", "cut_at_element", "drop_or_repeat_element", "swap_elements", "zero_length"})


def _fresh_uid(rng: random.Random, length: int) -> bytes:
    digits = max(1, length - 5)
    return ("2.25." + str(rng.randrange(1, 10)) + "".join(str(rng.randrange(10)) for _ in range(digits - 1))).encode()


def mutant(sources: Sequence[Source], seed: int, channel: str, index: int, *, dataset_only: bool = False) -> Mutant:
    """The ``index``-th mutant of ``channel`` for ``seed``: a source with UIDs of its own, then 1-3 mutations
    (only of the dataset when ``dataset_only``: what a C-STORE sends)."""
    rng = random.Random(f"{seed}/{channel}/{index}")
    source = rng.choice(list(sources))
    data = source.data
    new_uids = [_fresh_uid(rng, len(uid)) for uid in source.uids]
    # Longest first: a Series UID may begin the SOP Instance UID.
    for old, new in sorted(zip(source.uids, new_uids, strict=True), key=lambda pair: -len(pair[0])):
        data = data.replace(old, new)
    weights = FRAMED_WEIGHTS if dataset_only else WEIGHTS
    kinds = tuple(rng.choices(list(weights), list(weights.values()), k=rng.choices([1, 2, 3], [6, 3, 1])[0]))
    if dataset_only:  # at most one that moves bytes, applied last
        shifting = [k for k in kinds if k in SHIFTING][:1]
        kinds = tuple(k for k in kinds if k not in SHIFTING) + tuple(shifting)
    floor = source.dataset_offset if dataset_only else 0
    buffer = bytearray(data)
    for kind in kinds:
        buffer = MUTATIONS[kind](rng, buffer, source, floor)
    if bytes(buffer) == data and len(buffer) > floor:  # a mutation that changed nothing: one flipped bit then
        buffer[rng.randrange(floor, len(buffer))] ^= 0x10
    return Mutant(channel, index, source.name, kinds, bytes(buffer), new_uids[2].decode())
