"""ZIP archives for upload tests: a study's files as a CD export would pack them (``files_zip``), and archives
crafted byte by byte: central directories that lie about their size or count (zip bombs, ZIP64 end records), to
test that the limits apply before ``zipfile`` parses anything."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path


def files_zip(files: list[Path], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    """The files in a ZIP, each as ``IMG/<name>``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for path in files:
            archive.writestr(f"IMG/{path.name}", path.read_bytes())
    return buffer.getvalue()


def crafted_zip(entries: int, *, declared: int = 1, zip64: bool = False, name: bytes = b"a") -> bytes:
    """A ZIP whose central directory holds ``entries`` minimal entries (46 bytes + name) while its end record
    declares ``declared``: what zipfile parses is the directory's bytes, not the count. With ``zip64`` the
    understating count and the real size are in a ZIP64 end record, and the classic one says 0xFFFF."""
    entry = struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0,
                        0, 0, 0) + name
    directory = entry * entries
    if not zip64:
        return directory + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, declared, declared, len(directory), 0, 0)
    record_at = len(directory)
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, declared, declared, len(directory), 0)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, record_at, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return directory + record + locator + end
