"""Pure upload rules: ZIP members and limits, offline declarations, checksums."""

from __future__ import annotations

import hashlib
import io
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any
from unittest import mock

import pydicom
import pytest
from pydicom.data import get_testdata_file

from ehr_imaging.api.router import status_of
from ehr_imaging.app import uploading
from ehr_imaging.core.upload_rules import (
    FAIL,
    READ,
    SKIP,
    DeclarationError,
    OfflineDeclaration,
    ZipMember,
    archive_problem,
    classify_member,
    content_problem,
    directory_entries,
    directory_problem,
    entries_problem,
    is_safe_member_name,
    parse_declaration,
    uid_mismatches,
)
from tests.zip_factory import crafted_zip

MB = 1024 * 1024


@pytest.mark.parametrize(("name", "action"), [
    ("IMAGES/IM000001", READ),  # DICOMDIR media: no extension, nested folders
    ("study/1/0001.dcm", READ),
    ("DICOMDIR", SKIP),
    ("CD/dicomdir", SKIP),
    ("IMAGES/", SKIP),
    ("__MACOSX/IMAGES/._IM1", SKIP),
    ("IMAGES/._IM1", SKIP),
    (".DS_Store", SKIP),
    ("../../etc/passwd", FAIL),
    ("/etc/passwd", FAIL),
    ("C:/Windows/x.dcm", FAIL),
    ("a\\..\\..\\b.dcm", FAIL),
    ("bad\x01name", FAIL),
    ("README.TXT", READ),  # read, then reported as not DICOM
])
def test_members_are_classified_by_name(name: str, action: str) -> None:
    assert classify_member(ZipMember(name, 10)).action == action


def test_encrypted_and_symlinked_members_are_refused() -> None:
    assert classify_member(ZipMember("a.dcm", 10, flag_bits=0x1)).reason == "encrypted member"
    symlink = ZipMember("a.dcm", 10, external_attr=(0o120777 << 16))
    assert classify_member(symlink).reason == "symbolic link in archive"
    assert classify_member(ZipMember("a.dcm", 10, external_attr=(0o100644 << 16))).action == READ


def test_a_directory_flag_wins_over_the_name() -> None:
    assert classify_member(ZipMember("IMAGES", 0, is_dir=True)).action == SKIP


@pytest.mark.parametrize("name", ["a/../b", "..", "/x", "\\x", "D:x"])
def test_unsafe_names(name: str) -> None:
    assert not is_safe_member_name(name)


def test_archive_limits_count_only_the_files_that_would_be_read() -> None:
    members = [ZipMember(f"IM{i}", MB) for i in range(3)] + [ZipMember("DICOMDIR", 50 * MB), ZipMember("D/", 0,
                                                                                                         is_dir=True)]
    limits: dict[str, Any] = {"max_files": 3, "max_file_bytes": 2 * MB, "max_total_bytes": 3 * MB}
    assert archive_problem(members, **limits) is None
    assert "at most 3" in (archive_problem([*members, ZipMember("IM9", 1)], **limits) or "")
    assert archive_problem([ZipMember("IM9", 2 * MB + 1)], **limits) == "IM9: file larger than 2 MB"
    assert "expands to more than 3 MB" in (archive_problem([ZipMember("a", 2 * MB), ZipMember("b", 2 * MB)],
                                                           **limits) or "")


def test_a_zip_bomb_is_refused_from_its_directory_alone() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("IM1", b"\0" * (20 * MB))  # 20 MB of zeros: ~20 KB compressed
    assert len(buffer.getvalue()) < MB
    members = [uploading.zip_member(info) for info in zipfile.ZipFile(buffer).infolist()]
    assert archive_problem(members, max_files=10, max_file_bytes=100 * MB, max_total_bytes=10 * MB) == \
        "archive expands to more than 10 MB"


def test_members_are_read_one_by_one_and_bad_ones_reported() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("DICOMDIR", b"index")
        archive.writestr("IMAGES/", b"")
        archive.writestr("IMAGES/IM1", b"one")
        archive.writestr("../evil", b"x")
        archive.writestr("IMAGES/BIG", b"y" * 20)
    archive = zipfile.ZipFile(buffer)
    read = list(uploading.read_members(archive, archive.infolist(), max_file_bytes=10))
    assert read == [("IMAGES/IM1", b"one", None), ("../evil", None, "unsafe path in archive"),
                    ("IMAGES/BIG", None, "file larger than 0 MB")]


def test_a_corrupt_member_is_reported_not_raised() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("IM1", b"abc" * 1000)
    data = bytearray(buffer.getvalue())
    data[40:60] = b"\xff" * 20  # inside the member's content (its local header is 33 bytes): a CRC error
    archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
    [(name, content, error)] = list(uploading.read_members(archive, archive.infolist(), max_file_bytes=MB))
    assert (name, content) == ("IM1", None)
    assert error is not None and error.startswith("unreadable archive member")


DECLARATION = {"sop_instance_uid": "1.2.3.4", "series_instance_uid": "1.2.3", "study_instance_uid": "1.2",
               "size": 1048, "sha256": "AB" * 32}


def test_a_declaration_is_parsed_and_normalized() -> None:
    declared = parse_declaration({**DECLARATION, "file_name": " chest.dcm "}, max_size=MB)
    assert declared == OfflineDeclaration("1.2.3.4", "1.2.3", "1.2", 1048, "ab" * 32, file_name="chest.dcm")


@pytest.mark.parametrize(("change", "field"), [
    ({"sop_instance_uid": "1.02.3"}, "sop_instance_uid"),
    ({"study_instance_uid": "1." + "2" * 64}, "study_instance_uid"),
    ({"series_instance_uid": None}, "series_instance_uid"),
    ({"size": 0}, "size"),
    ({"size": True}, "size"),
    ({"size": "12"}, "size"),
    ({"sha256": "xyz"}, "sha256"),
    ({"sha256": "a" * 63}, "sha256"),
    ({"order_id": 12}, "order_id"),
])
def test_bad_declarations_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(DeclarationError, match=f"^{field}:"):
        parse_declaration({**DECLARATION, **change}, max_size=MB)


def test_a_declared_size_above_the_limit_is_an_overflow() -> None:
    with pytest.raises(OverflowError):
        parse_declaration({**DECLARATION, "size": MB + 1}, max_size=MB)
    with pytest.raises(DeclarationError):
        parse_declaration([DECLARATION], max_size=MB)


def test_checksums_are_verified_size_first() -> None:
    data = b"DICM" * 300
    digest, size = uploading.sha256_and_size(io.BytesIO(data))
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))
    declared = OfflineDeclaration("1.2.3.4", "1.2.3", "1.2", len(data), digest)
    assert content_problem(declared, size=size, sha256=digest.upper()) is None
    assert content_problem(declared, size=size - 1, sha256=digest) == \
        f"size mismatch: declared {len(data)} bytes, received {len(data) - 1}"
    assert content_problem(declared, size=size, sha256="0" * 64) == \
        "sha256 mismatch: the bytes received are not the declared file"


def test_uid_mismatches_are_listed() -> None:
    declared = OfflineDeclaration("1.2.3.4", "1.2.3", "1.2", 1, "a" * 64)
    found = {"StudyInstanceUID": "1.2", "SeriesInstanceUID": "9.9", "SOPInstanceUID": "1.2.3.5"}
    assert uid_mismatches(declared, found) == ["SeriesInstanceUID", "SOPInstanceUID"]
    assert uid_mismatches(declared, {"StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.2.3",
                                     "SOPInstanceUID": "1.2.3.4"}) == []


def test_check_dicom_wants_the_three_uids() -> None:
    with pytest.raises(uploading.UploadRejected) as refused:
        uploading.check_dicom(b"not dicom at all")
    assert status_of(refused.value.error) == 400  # not DICOM: the request cannot be read as sent (issue 11)


@pytest.mark.parametrize("keyword", ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_check_dicom_refuses_a_nul_inside_an_identifying_value(keyword: str) -> None:
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    buffer = io.BytesIO()
    ds.save_as(buffer)
    assert uploading.check_dicom(buffer.getvalue())  # as it is: accepted (trailing NUL padding is no NUL inside)
    setattr(ds, keyword, "1.2.3\x004")
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(uploading.UploadRejected) as refused:
        uploading.check_dicom(buffer.getvalue())
    assert (status_of(refused.value.error), refused.value.detail) == (400, f"{keyword} holds a NUL character")


def test_check_dicom_refuses_an_identifying_value_it_cannot_convert_instead_of_raising() -> None:
    """Seed 20261203, channel "header-scan", mutant 502 (from MR_small_bigendian.dcm): a PatientID of the unknown
    VR 'L ' and a length of 19,535, cut short. Values over 16 KB are left unread by the check, so this one was
    first converted when the identity was read, and its NotImplementedError left the check (an upload's 500).
    And an empty value of an unknown VR (pydicom leaves it unconverted) is refused like a non-empty one."""
    from tests.fuzz.dicom_mutator import default_sources, mutant

    whole = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    head = b"\x10\x00\x20\x00LO"  # (0010,0020) PatientID, LO, then its 2-byte length
    at = whole.index(head)
    length = struct.unpack_from("<H", whole, at + 6)[0]
    empty_unknown = whole[:at] + b"\x10\x00\x20\x00L \x00\x00" + whole[at + 8 + length:]
    for data in (mutant(default_sources(), 20261203, "header-scan", 502).data, empty_unknown):
        with pytest.raises(uploading.UploadRejected) as refused:
            uploading.check_dicom(data)
        assert status_of(refused.value.error) == 400
        assert refused.value.detail.startswith(("incomplete DICOM file", "not a readable DICOM file")), \
            refused.value.detail


def _zip(entries: int, comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(entries):
            archive.writestr(f"d/{n}", b"")
        archive.comment = comment
    return buffer.getvalue()


def _services(max_files: int = 500) -> Any:
    services = mock.MagicMock()
    services.settings.MaxFilesPerUpload = max_files
    services.settings.MaxFileSizeMb = 512
    services.settings.MaxZipUncompressedMb = 8192
    return services


def _refusal(data: bytes, max_files: int = 500) -> str:
    """open_archive's 413, checked to come before zipfile parses the directory."""
    never = AssertionError("zipfile parsed it")
    with mock.patch("ehr_imaging.app.uploading.archives.zipfile.ZipFile", side_effect=never), \
            pytest.raises(uploading.UploadRejected) as refused:
        uploading.open_archive(_services(max_files), io.BytesIO(data))
    assert status_of(refused.value.error) == 413
    return refused.value.detail


def test_the_end_record_bounds_the_directory_by_its_count_and_its_size() -> None:
    assert directory_problem(3, 300, max_files=500) is None
    assert directory_problem(300_000, 20_000_000, max_files=500) is not None  # a small ZIP declaring a flood
    assert directory_problem(10, 65 * MB, max_files=500) is not None
    # Understated count: 3,000 entries (4 × 500 + 1,000) of at most ~1 KB each on average, whatever is declared.
    assert directory_problem(1, 3000 * 1070, max_files=500) is None
    assert "too large" in (directory_problem(1, 3000 * 1070 + 1, max_files=500) or "")
    assert directory_problem(1, 60 * MB, max_files=100_000) is None  # a large limit: only the 64 MB cap
    assert directory_problem(1, 65 * MB, max_files=100_000) is not None


def test_directory_entries_are_counted_as_zipfile_walks_them() -> None:
    for count in (0, 1, 3, 700):
        data = _zip(count, comment=b"x" * 100)
        archive = zipfile.ZipFile(io.BytesIO(data))
        start = data.rindex(b"PK\x05\x06")
        size = struct.unpack_from("<I", data, start + 12)[0]
        assert directory_entries(data[start - size:start], stop_after=10_000) == len(archive.infolist()) == count
    directory = crafted_zip(5000)[:-22]
    assert directory_entries(directory, stop_after=10_000) == 5000
    assert directory_entries(directory, stop_after=100) == 101  # stops once past the limit
    assert directory_entries(directory[:-2], stop_after=10_000) == 4999  # a truncated entry: zipfile stops too
    assert directory_entries(b"PK\x01\x03" + directory[4:], stop_after=10_000) == 0
    assert entries_problem(3000, 1, max_files=500) is None
    assert "declares 1" in (entries_problem(3001, 1, max_files=500) or "")


def test_an_understated_count_is_refused_before_zipfile_parses_the_directory() -> None:
    """The review: 1 entry declared in front of a 63 MB directory of 1.4 M entries took 17 s and 600 MB
    inside zipfile before the 413. Now the size is refused from the end record, and a directory within the
    size bound is counted without zipfile (ZipFile is patched to fail the test if it is reached)."""
    assert "too large" in _refusal(crafted_zip(200_000))
    assert "holds more than 3000 entries (its end record declares 1)" in _refusal(crafted_zip(60_000))
    assert "holds more than 3000" in _refusal(crafted_zip(60_000, zip64=True))
    assert "declares 70000 entries" in _refusal(_zip(70_000))  # an honest ZIP64 count
    assert "holds more than 1400" in _refusal(crafted_zip(1401, declared=10), max_files=100)


def test_the_end_record_is_the_one_zipfile_uses() -> None:
    """zipfile takes the ZIP64 record whenever a locator precedes the classic end record, whatever the classic
    record says; a check reading the classic record's small numbers (no 0xFFFF markers) looked elsewhere."""
    data = bytearray(crafted_zip(1_400_000, declared=1, zip64=True))
    struct.pack_into("<HHLL", data, len(data) - 22 + 8, 1, 1, 100, 0)  # the classic record: 1 entry, 100 bytes
    end = getattr(zipfile, "_EndRecData")(io.BytesIO(bytes(data)))  # noqa: B009
    assert end[5] == 1_400_000 * 47  # zipfile would parse the ZIP64 size
    assert "too large" in _refusal(bytes(data))


def test_refusing_a_flood_costs_milliseconds_and_no_memory(tmp_path: Path) -> None:
    """Measured: before the fix, open_archive on crafted_zip(1_400_000) (63 MB) took 8.1 s and 516 MB of RSS
    here, crafted_zip(60_000) (2.7 MB) 0.27 s and 30 MB; after: under 5 ms and 3 MB."""
    flood = tmp_path / "flood.zip"
    flood.write_bytes(crafted_zip(1_400_000))
    for path in (flood, None):
        tracemalloc.start()
        began = time.perf_counter()
        with (path.open("rb") if path else io.BytesIO(crafted_zip(60_000))) as stream, \
                pytest.raises(uploading.UploadRejected):
            uploading.open_archive(_services(), stream)
        took = time.perf_counter() - began
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert took < 0.5 and peak < 8 * MB, (path, took, peak)


def test_real_archives_still_open() -> None:
    long_names = io.BytesIO()
    with zipfile.ZipFile(long_names, "w") as archive:
        for n in range(500):
            archive.writestr("DICOM/" + "PATIENT/" * 25 + f"IM{n:06d}", b"x")  # 200-character paths
        archive.comment = b"c" * 1000
    for data in (_zip(3), _zip(500), long_names.getvalue()):
        with uploading.open_archive(_services(), io.BytesIO(data))[0] as opened:
            assert opened.infolist()
    assert "archive holds 2999 files" in uploading_refusal(_zip(2999))  # past the directory check: zipfile counts


def uploading_refusal(data: bytes) -> str:
    with pytest.raises(uploading.UploadRejected) as refused:
        uploading.open_archive(_services(), io.BytesIO(data))
    return refused.value.detail


def test_study_holds_count_nested_holds_per_study() -> None:
    from ehr_imaging.core.holds import StudyHolds

    holds = StudyHolds()
    holds.hold("a")
    holds.hold("a")
    holds.release("a")
    assert holds.is_held("a") and not holds.is_held("b")
    holds.release("a")
    assert not holds.is_held("a")


def test_study_holds_answer_for_other_nodes_as_last_read_but_publish_only_their_own() -> None:
    from ehr_imaging.core.holds import StudyHolds

    holds = StudyHolds()
    holds.hold("here")
    holds.held_elsewhere(["there", "here"])
    assert holds.is_held("there") and holds.is_held("here")
    assert holds.held_here() == {"here"}  # what this node publishes: never another node's holds echoed back
    holds.held_elsewhere([])  # the other node's upload ended
    holds.release("here")
    assert not holds.is_held("there") and not holds.is_held("here") and holds.held_here() == set()
