"""Pure upload rules: ZIP members and limits, offline declarations, checksums."""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any

import pytest

from ehr_imaging import uploading
from ehr_imaging.core.uploads import (
    FAIL,
    READ,
    SKIP,
    DeclarationError,
    OfflineDeclaration,
    ZipMember,
    archive_problem,
    classify_member,
    content_problem,
    directory_problem,
    is_safe_member_name,
    is_uid,
    parse_declaration,
    uid_mismatches,
    zip_directory_totals,
)

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


@pytest.mark.parametrize(("value", "valid"), [("1.2.840.10008", True), ("0.1", True), ("1..2", False),
                                              ("1.2.", False), ("01.2", False), ("1.2a", False), (12, False)])
def test_uids(value: Any, valid: bool) -> None:
    assert is_uid(value) is valid


def test_check_dicom_wants_the_three_uids() -> None:
    with pytest.raises(uploading.UploadRejected) as refused:
        uploading.check_dicom(b"not dicom at all")
    assert refused.value.status == 422


def _zip(entries: int, comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(entries):
            archive.writestr(f"d/{n}", b"")
        archive.comment = comment
    return buffer.getvalue()


def _totals(data: bytes) -> tuple[int, int] | None:
    tail = data[-65558:]
    return zip_directory_totals(tail, lambda offset, size: data[offset:offset + size])


def test_the_directory_is_sized_from_the_end_records_before_zipfile_reads_it() -> None:
    data = _zip(3, comment=b"x" * 1000)
    entries, size = _totals(data) or (0, 0)
    assert entries == 3 and 0 < size < 300
    assert _totals(b"PK\x03\x04 not an archive") is None
    assert directory_problem(entries, size, max_files=500) is None
    assert directory_problem(300_000, 20_000_000, max_files=500) is not None  # a small ZIP declaring a flood
    assert directory_problem(10, 65 * MB, max_files=500) is not None


def test_zip64_end_records_are_followed() -> None:
    data = _zip(70_000)  # over 65,535 entries: the totals live in the ZIP64 record
    totals = _totals(data)
    assert totals is not None
    entries, size = totals
    assert entries == 70_000 and 70_000 * 46 <= size < len(data)
