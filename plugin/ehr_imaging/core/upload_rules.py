"""Pure upload rules: which ZIP members to read, archive limits, offline-sync declarations.

No I/O here: the callers (``app/uploading``) hand in what ``zipfile`` and the request say.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .dicom_values import is_conformant_uid

SKIP: Literal["skip"] = "skip"
READ: Literal["read"] = "read"
FAIL: Literal["fail"] = "fail"

# Files of a DICOM medium that are not instances: the DICOMDIR index itself (Orthanc rebuilds its own),
# and what archivers add beside the content.
_SKIPPED_BASENAMES = {"DICOMDIR", ".DS_STORE", "THUMBS.DB", "DESKTOP.INI"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
S_IFMT, S_IFLNK = 0o170000, 0o120000


@dataclass(frozen=True)
class MemberVerdict:
    action: Literal["skip", "read", "fail"]
    reason: str | None = None


@dataclass(frozen=True)
class ZipMember:
    """What the ZIP's central directory says about one member (``zipfile.ZipInfo``, reduced)."""

    name: str
    file_size: int  # uncompressed, as declared; zipfile never returns more than this
    is_dir: bool = False
    flag_bits: int = 0
    external_attr: int = 0


def is_safe_member_name(name: str) -> bool:
    """No absolute paths, drive letters, parent references or control characters. Members are never
    written to disk, but such a name is a crafted archive: it is reported, not read."""
    if not name or "\x00" in name or any(ord(c) < 32 for c in name):
        return False
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or re.match(r"[A-Za-z]:", normalized):
        return False
    return ".." not in normalized.split("/")


def classify_member(member: ZipMember) -> MemberVerdict:
    """Skip directories and the medium's index files; refuse unsafe, encrypted or linked members; read
    everything else (DICOMDIR media name their files without extensions, in nested folders)."""
    if member.is_dir or member.name.endswith("/"):
        return MemberVerdict(SKIP, "directory")
    normalized = member.name.replace("\\", "/")
    basename = normalized.rsplit("/", 1)[-1]
    if normalized.startswith("__MACOSX/") or basename.startswith("._"):
        return MemberVerdict(SKIP, "archiver metadata")
    if basename.upper() in _SKIPPED_BASENAMES:
        return MemberVerdict(SKIP, "DICOMDIR index" if basename.upper() == "DICOMDIR" else "not an instance")
    if not is_safe_member_name(member.name):
        return MemberVerdict(FAIL, "unsafe path in archive")
    if member.flag_bits & 0x1:
        return MemberVerdict(FAIL, "encrypted member")
    if (member.external_attr >> 16) & S_IFMT == S_IFLNK:
        return MemberVerdict(FAIL, "symbolic link in archive")
    return MemberVerdict(READ)


def archive_problem(members: list[ZipMember], *, max_files: int, max_file_bytes: int,
                    max_total_bytes: int) -> str | None:
    """Why the whole archive is refused (413) before anything is read, or None. Sizes are the declared
    ones: zipfile stops at the declared size of each member, so a lying header cannot exceed them."""
    files = [m for m in members if classify_member(m).action != SKIP]
    if len(files) > max_files:
        return f"archive holds {len(files)} files; at most {max_files} per upload"
    too_large = next((m for m in files if m.file_size > max_file_bytes), None)
    if too_large is not None:
        return f"{too_large.name}: file larger than {max_file_bytes // (1024 * 1024)} MB"
    if sum(m.file_size for m in files) > max_total_bytes:
        return f"archive expands to more than {max_total_bytes // (1024 * 1024)} MB"
    return None


CENTRAL_ENTRY_BYTES = 46  # the fixed part of a central directory entry; its name, extra field and comment follow
# What one entry of a real archive takes on average, at most: the fixed part, a long path and its extra fields.
ENTRY_BUDGET_BYTES = CENTRAL_ENTRY_BYTES + 1024
MAX_DIRECTORY_BYTES = 64 * 1024 * 1024
_CENTRAL_ENTRY = b"PK\x01\x02"


def max_entries(max_files: int) -> int:
    """Directory entries an archive of ``max_files`` files may have: room for folders and skipped members."""
    return 4 * max_files + 1000


def directory_problem(entries: int, directory_bytes: int, *, max_files: int) -> str | None:
    """Why an archive is refused from its end record alone (413), before its directory is read: more entries
    than the file limit can explain, or a directory larger than that many entries can take. The second bound
    matters because ``zipfile`` ignores the declared count and parses every entry in the directory's bytes
    (each at least 46): a small declared count in front of a large directory cost seconds and hundreds of MB."""
    limit = max_entries(max_files)
    if entries > limit:
        return f"archive directory declares {entries} entries; at most {max_files} files per upload"
    if directory_bytes > min(limit * ENTRY_BUDGET_BYTES, MAX_DIRECTORY_BYTES):
        return f"archive directory of {directory_bytes} bytes is too large; at most {max_files} files per upload"
    return None


def directory_entries(directory: bytes, *, stop_after: int) -> int:
    """How many entries ``zipfile`` would parse from these central directory bytes, counted without parsing
    them: the same walk (46 bytes, then name, extra field and comment lengths) up to the first malformed entry
    (where ``zipfile`` stops with an error too). Counting stops once past ``stop_after``."""
    at = count = 0
    while at < len(directory) and count <= stop_after:
        if len(directory) - at < CENTRAL_ENTRY_BYTES or directory[at:at + 4] != _CENTRAL_ENTRY:
            break
        name, extra, comment = struct.unpack_from("<HHH", directory, at + 28)
        at += CENTRAL_ENTRY_BYTES + name + extra + comment
        count += 1
    return count


def entries_problem(found: int, declared: int, *, max_files: int) -> str | None:
    """Why an archive is refused (413) once its directory's entries are counted."""
    if found > max_entries(max_files):
        return (f"archive directory holds more than {max_entries(max_files)} entries (its end record declares"
                f" {declared}); at most {max_files} files per upload")
    return None


_ZIP64_END = b"PK\x06\x06"


def central_directory_problem(end: Sequence[Any], read_at: Callable[[int, int], bytes], *,
                              max_files: int) -> str | None:
    """Why an archive is refused (413) before ``zipfile`` parses its directory, or None. ``end`` is the end record
    as ``zipfile`` reads it (``zipfile._EndRecData``, ZIP64 values included: signature [0], entries [4], directory
    bytes [5], the record's offset [9]), so both look at the same directory; ``read_at(offset, n)`` reads the
    archive. First the record's count and size, then the entries counted where ``ZipFile`` will parse them
    (``start_dir``), since the declared count can understate them."""
    entries, size, location = int(end[4]), int(end[5]), int(end[9])
    problem = directory_problem(entries, size, max_files=max_files)
    start = location - size - (56 + 20 if end[0] == _ZIP64_END else 0)  # before the ZIP64 record and locator
    if problem is None and start >= 0:
        found = directory_entries(read_at(start, size), stop_after=max_entries(max_files))
        problem = entries_problem(found, entries, max_files=max_files)
    return problem


@dataclass(frozen=True)
class OfflineDeclaration:
    """What an offline client declares before it sends a file (metadata step)."""

    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    size: int
    sha256: str
    patient_id: str | None = None
    order_id: str | None = None
    file_name: str | None = None


class DeclarationError(ValueError):
    pass


def parse_declaration(body: Any, *, max_size: int) -> OfflineDeclaration:
    """Validate the metadata step's JSON. ``DeclarationError`` names the field; a size above ``max_size``
    is an ``OverflowError`` (413)."""
    if not isinstance(body, dict):
        raise DeclarationError("body: must be a JSON object")
    for name in ("sop_instance_uid", "series_instance_uid", "study_instance_uid"):  # new content: PS3.5 in full
        if not is_conformant_uid(body.get(name)):
            raise DeclarationError(f"{name}: must be a DICOM UID"
                                   " (digits and dots, no leading zeros, at most 64 characters)")
    size = body.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise DeclarationError("size: must be a positive integer (bytes)")
    sha256 = body.get("sha256")
    if not isinstance(sha256, str) or _SHA256.fullmatch(sha256.lower()) is None:
        raise DeclarationError("sha256: must be 64 hexadecimal digits")
    optional: dict[str, str | None] = {}
    for name in ("patient_id", "order_id", "file_name"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > 255):
            raise DeclarationError(f"{name}: must be a string of at most 255 characters")
        optional[name] = value.strip() or None if isinstance(value, str) else None
    if size > max_size:
        raise OverflowError(f"size: file larger than {max_size // (1024 * 1024)} MB")
    return OfflineDeclaration(body["sop_instance_uid"], body["series_instance_uid"], body["study_instance_uid"],
                              size, sha256.lower(), **optional)


def content_problem(declared: OfflineDeclaration, *, size: int, sha256: str) -> str | None:
    """Why received bytes are not the declared file (size first: it is the cheaper message to act on)."""
    if size != declared.size:
        return f"size mismatch: declared {declared.size} bytes, received {size}"
    if sha256.lower() != declared.sha256:
        return "sha256 mismatch: the bytes received are not the declared file"
    return None


def uid_mismatches(declared: OfflineDeclaration, found: dict[str, str]) -> list[str]:
    """The declared UIDs the file contradicts (keyword names), in a stable order."""
    expected = {"StudyInstanceUID": declared.study_instance_uid, "SeriesInstanceUID": declared.series_instance_uid,
                "SOPInstanceUID": declared.sop_instance_uid}
    return [keyword for keyword, value in expected.items() if found.get(keyword, "") != value]
