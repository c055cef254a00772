"""Small, valid photos and documents for the upload-image tests, made without Pillow: a PNG written with zlib,
a JPEG taken from one of pydicom's bundled test files (its baseline frame is a complete JFIF image), a
minimal PDF with a real cross-reference table."""

from __future__ import annotations

import struct
import zlib

import pydicom
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames


def png(width: int = 8, height: int = 6) -> bytes:
    """An RGB PNG (8 bits a sample) with a gradient, every chunk with its CRC."""
    rows = b"".join(b"\x00" + b"".join(bytes([(x * 31) % 256, (y * 41) % 256, 128]) for x in range(width))
                    for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares these dimensions (its pixel data is not there: refused before decoding)."""
    small = png(1, 1)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return small[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF) + small[33:]


def jpeg() -> bytes:
    """A 100 x 100 RGB baseline JPEG (JFIF), from pydicom's SC_rgb_jpeg_dcmtk.dcm."""
    path = get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")
    assert path is not None
    frame = next(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=1))
    return frame[:frame.rindex(b"\xff\xd9") + 2]  # without the fragment's even-length padding


def pdf(text: str = "Consent form") -> bytes:
    """A one-page PDF 1.4 with a cross-reference table whose offsets are right."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
               b" /Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
