"""ZIP archives read member by member from the spooled file, bounded before ``zipfile`` parses them."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from ...core import errors
from ...core.upload_rules import FAIL, READ, ZipMember, archive_problem, central_directory_problem, classify_member
from ...services import Services
from .batch import MB, Batch, UploadRejected

UNREADABLE, TOO_LARGE = "unreadable archive member", "file larger than"

# --- ZIP archives --------------------------------------------------------------------------------------


@dataclass
class Archive:
    """A ZIP whose directory was read and checked; the members are read later, one at a time."""

    members: list[zipfile.ZipInfo]
    readable: int  # members that are not skipped
    uncompressed_bytes: int


def open_archive(services: Services, stream: IO[bytes]) -> tuple[zipfile.ZipFile, Archive]:
    """Read the central directory and apply the limits (413) before any member is read."""
    settings = services.settings
    problem = _directory_problem(stream, settings.MaxFilesPerUpload)
    if problem is not None:
        raise UploadRejected(errors.TooLarge, problem)
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UploadRejected(errors.Invalid, f"not a readable ZIP archive ({exc})") from None
    infos = archive.infolist()
    members = [zip_member(info) for info in infos]
    problem = archive_problem(members, max_files=settings.MaxFilesPerUpload, max_file_bytes=settings.MaxFileSizeMb * MB,
                              max_total_bytes=settings.MaxZipUncompressedMb * MB)
    if problem is not None:
        archive.close()
        raise UploadRejected(errors.TooLarge, problem)
    readable = [m for m in members if classify_member(m).action != "skip"]
    return archive, Archive(infos, len(readable), sum(m.file_size for m in readable))


_END_RECORD = getattr(zipfile, "_EndRecData")  # noqa: B009 - zipfile's own end-record reader: what ZipFile uses


def _directory_problem(stream: IO[bytes], max_files: int) -> str | None:
    """The central directory checked before ``zipfile`` parses it (413), or None (no end record: ZipFile's 422)."""
    def read_at(offset: int, size: int) -> bytes:
        stream.seek(offset)
        return stream.read(size)

    try:
        end = _END_RECORD(stream)
        return central_directory_problem(end, read_at, max_files=max_files) if end else None
    except (OSError, zipfile.BadZipFile):
        return None  # ZipFile reports it
    finally:
        stream.seek(0)


def zip_member(info: zipfile.ZipInfo) -> ZipMember:
    return ZipMember(info.filename, info.file_size, info.is_dir(), info.flag_bits, info.external_attr)


def read_members(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo],
                 max_file_bytes: int) -> Iterator[tuple[str, bytes | None, str | None]]:
    """(name, content, None) for each member to read, (name, None, error) for a refused or unreadable one;
    skipped members (directories, DICOMDIR) are left out. One member in memory at a time."""
    for info in infos:
        verdict = classify_member(zip_member(info))
        if verdict.action == FAIL:
            yield info.filename, None, verdict.reason
        elif verdict.action == READ:
            try:
                with archive.open(info) as member:
                    data = member.read(max_file_bytes + 1)  # zipfile never returns more than the declared size
                if len(data) > max_file_bytes:
                    yield info.filename, None, f"{TOO_LARGE} {max_file_bytes // MB} MB"
                else:
                    yield info.filename, data, None
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError, OSError) as exc:
                yield info.filename, None, f"{UNREADABLE} ({type(exc).__name__}: {exc})"


def store_archive(batch: Batch, archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], max_file_bytes: int,
                  progress: Callable[[Batch], None] | None = None) -> None:
    for name, data, error in read_members(archive, infos, max_file_bytes):
        if data is None:
            batch.fail(name, error or UNREADABLE, kind=_member_kind(error or UNREADABLE))
        else:
            batch.add(name, data)
        if progress is not None:
            progress(batch)


def _member_kind(error: str) -> type[errors.DomainError]:
    """What a member refused before it is read would be on its own: an unreadable file is a 400 (as an invalid
    DICOM file), one over the size limit a 413, an unsafe, encrypted or linked member a 422."""
    if error.startswith(UNREADABLE):
        return errors.Malformed
    return errors.TooLarge if error.startswith(TOO_LARGE) else errors.Invalid


def is_large(services: Services, archive: Archive) -> bool:
    settings = services.settings
    return (archive.readable > settings.UploadJobAboveFiles
            or archive.uncompressed_bytes > settings.UploadJobAboveMb * MB)


