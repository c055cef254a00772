"""``core.zipstream``: a valid ZIP, written member by member, each file read only when its turn comes."""

from __future__ import annotations

import io
import zipfile

from ehr_imaging.core.zipstream import safe_member_name, zip_stream


def test_a_streamed_zip_is_valid_and_reads_lazily() -> None:
    reads: list[str] = []

    def reader(name: str, size: int) -> tuple[str, object]:
        def read() -> bytes:
            reads.append(name)
            return name.encode() * size
        return name, read

    members = [reader(f"s/{n}.dcm", 1000 * (n + 1)) for n in range(5)]
    stream = zip_stream(members)  # type: ignore[arg-type]
    first = next(stream)
    assert reads == ["s/0.dcm"] and first  # only the first file has been read and sent
    data = first + b"".join(stream)
    assert reads == [name for name, _ in members]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == [name for name, _ in members]
        assert archive.read("s/3.dcm") == b"s/3.dcm" * 4000


def test_an_empty_study_is_an_empty_zip() -> None:
    with zipfile.ZipFile(io.BytesIO(b"".join(zip_stream([])))) as archive:
        assert archive.namelist() == []


def test_member_names_cannot_escape_or_smuggle_separators() -> None:
    assert safe_member_name("1 CT ../../etc", "2-1.2.3.dcm") == "1 CT .._.._etc/2-1.2.3.dcm"
    assert safe_member_name("..", "a/b\\c\x00.dcm") == "_/a_b_c_.dcm"
    assert safe_member_name("", " ") == "_/_"
