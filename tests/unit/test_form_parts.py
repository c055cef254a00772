"""The API port's multipart fast path (api/form_parts.py) against python-multipart, on the same bodies: what a
request ends up with (form fields, files with their names, types, sizes and bytes) or its refusal is the same,
for plain bodies (which the fast path reads) and for every other shape or breakage (which it hands on)."""

from __future__ import annotations

import io
import mmap
import tempfile
from pathlib import Path
from typing import Any

import pytest
from urllib3 import encode_multipart_formdata

from ehr_imaging.api import form_parts
from ehr_imaging.api.listener import MEMORY_PART_BYTES, _Refusal, _whole, _WsgiApp
from ehr_imaging.api.router import Request

BOUNDARY = "b0undary-1234"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def app(spool: Path) -> _WsgiApp:
    return _WsgiApp(None, max_body_bytes=64 * 1024 * 1024, report=print, spool_dir=str(spool))  # type: ignore[arg-type]


def outcome(request: Request) -> tuple[Any, ...]:
    return (dict(request.form), [(f.field, f.filename, f.content_type, f.size, f.read_bytes(), f.path is not None)
                                 for f in request.files])


def read(spool: Path, body: bytes, *, fast: bool, on_disk: bool = False, content_type: str = CONTENT_TYPE) -> Any:
    """What the listener makes of ``body``: through ``_read_form`` (fast path first) or python-multipart alone."""
    cleanup: list[Any] = []
    request = Request(method="POST", path="/x", headers={"content-type": content_type})
    source: Any = io.BytesIO(body)
    if on_disk:  # as waitress hands a body over 512 KB: its temporary file
        source = tempfile.TemporaryFile()  # noqa: SIM115
        source.write(body)
        source.seek(0)
    listener = app(spool)
    try:
        if fast:
            listener._read_form(request, source, len(body), cleanup)
        else:
            listener._parse_form(request, _whole(source, len(body), cleanup), BOUNDARY.encode(), cleanup)
        return outcome(request)
    except _Refusal as refusal:
        return ("refused", refusal.response.status, refusal.response.body)
    finally:
        request.files.clear()
        from ehr_imaging.api.listener import _discard
        for item in cleanup:
            _discard(item)
        source.close()


def body(fields: list[tuple[str, Any]]) -> bytes:
    encoded, _ = encode_multipart_formdata(fields, boundary=BOUNDARY)
    return encoded


PLAIN = {
    "files": body([("files", ("a.dcm", b"DICM" * 100, "application/dicom")),
                   ("files", ("b.dcm", b"\r\n--" + BOUNDARY.encode()[:-1] + b"x\r\n", "application/dicom")),
                   ("order_id", "ORD-1")]),
    "fields only": body([("order_id", "ORD-2"), ("patient_id", "MRN \u00e9"), ("empty", "")]),
    "no type, no name": b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; name=\"file\"; "
                        b"filename=\"\"\r\n\r\nDATA\r\n--" + BOUNDARY.encode() + b"--\r\nepilogue",
    "empty file": body([("file", ("e.dcm", b"", "application/dicom"))]),
    "large part": body([("file", ("big.zip", b"\x00" * (MEMORY_PART_BYTES + 1), "application/zip")),
                        ("files", ("small", b"x", "application/dicom"))]),
    "quoted name": body([("files", ('we"ird \u00fc.dcm', b"abc", "application/dicom"))]),
}


def variants(whole: bytes) -> list[bytes]:
    """Broken or unusual shapes of a plain body."""
    b = BOUNDARY.encode()
    cut = [whole[:at] for at in range(0, len(whole), max(1, len(whole) // 37))]
    return [
        *cut,
        whole.replace(b, b"other", 1),
        b"\r\n" + whole,
        b"preamble\r\n" + whole,
        whole.replace(b"Content-Disposition", b"content-disposition"),
        whole.replace(b"Content-Disposition: ", b"Content-Disposition:\t "),
        whole.replace(b"Content-Type: application/dicom", b"Content-Transfer-Encoding: base64", 1),
        whole.replace(b"Content-Type: application/dicom", b"X-Other: 1", 1),
        whole.replace(b"Content-Type: application/dicom", b"Content-Type: a\r\nContent-Type: b", 1),
        whole.replace(b'; name="files"', b"", 1),
        whole.replace(b"Content-Disposition: form-data;", b"Content Disposition: form-data;", 1),
        whole.replace(b"\r\n\r\n", b"\n\n", 1),
        whole.replace(b"\r\n\r\n", b"\r\n\r\r\n", 1),
        whole.replace(b"--" + b + b"--", b"--" + b + b"-x"),
        whole.replace(b"--" + b + b"--", b"--" + b),
        whole.replace(b"\r\n--" + b + b"\r\n", b"\r\n--" + b + b"  \r\n", 1),
        whole + b"trailing junk",
    ]


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_bodies_are_split_here_as_python_multipart_reads_them(name: str, tmp_path: Path) -> None:
    whole = PLAIN[name]
    assert form_parts.split(whole, BOUNDARY.encode()) is not None  # the fast path reads it
    expected = read(tmp_path, whole, fast=False)
    assert expected[0] != "refused"
    assert read(tmp_path, whole, fast=True) == expected
    assert read(tmp_path, whole, fast=True, on_disk=True) == expected
    assert list(tmp_path.iterdir()) == []  # no part left on disk


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_every_other_shape_gets_python_multipart_s_answer(name: str, tmp_path: Path) -> None:
    refused = 0
    for broken in variants(PLAIN[name]):
        expected = read(tmp_path, broken, fast=False)
        refused += expected[0] == "refused"
        assert read(tmp_path, broken, fast=True) == expected, broken[:200]
        assert read(tmp_path, broken, fast=True, on_disk=True) == expected, broken[:200]
    assert refused > 0  # the variants do reach python-multipart's refusals
    assert list(tmp_path.iterdir()) == []


def test_a_missing_boundary_and_a_short_body_are_refused_as_before(tmp_path: Path) -> None:
    missing = read(tmp_path, PLAIN["files"], fast=True, content_type="multipart/form-data")
    assert missing[:2] == ("refused", 400)
    assert b"no boundary in Content-Type" in missing[2]
    cleanup: list[Any] = []
    with pytest.raises(_Refusal) as short:
        _whole(io.BytesIO(b"12345"), 10, cleanup)
    assert short.value.response.status == 400


def test_parts_are_views_of_a_mapped_body_and_the_map_is_closed_after(tmp_path: Path) -> None:
    whole = PLAIN["files"]
    with tempfile.TemporaryFile() as spooled:
        spooled.write(whole)
        spooled.seek(0)
        cleanup: list[Any] = []
        mapped = _whole(spooled, len(whole), cleanup)
        assert isinstance(mapped, mmap.mmap) and cleanup == [mapped]
        parts = form_parts.split(mapped, BOUNDARY.encode())
        assert parts is not None
        assert [bytes(p.content) for p in parts] == [b"DICM" * 100, b"\r\n--" + BOUNDARY.encode()[:-1] + b"x\r\n",
                                                     b"ORD-1"]
        assert all(isinstance(p.content, memoryview) and p.content.obj is mapped for p in parts)
        for part in parts:
            part.content.release()
        from ehr_imaging.api.listener import _discard
        _discard(mapped)
        assert mapped.closed
