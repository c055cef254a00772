"""The OHIF site's precompressed variants and validators (issue 12, item 6): the install step's ``precompress``,
``Accept-Encoding`` and ``If-None-Match`` as ``api/ohif_site`` reads them, and what ``ViewerApp`` answers
(HEAD as GET; a variant only when it is the file's; a changed file read again)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from ehr_imaging.api.ohif_site import GZIP_SUFFIX, ViewerApp, accepts_gzip, matching_etag, verified_variant
from ehr_stack import ohif

BUNDLE = "app.bundle.0f6159c501addfe9.js"
CODE = b"".join(b"var a%d = document.getElementById('viewport-%d');\n" % (i, i) for i in range(500))
GZIP = {"accept-encoding": "gzip, deflate"}


@pytest.fixture()
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_bytes(b"<html>" + b"<!-- viewer -->" * 200 + b"</html>")
    (root / BUNDLE).write_bytes(CODE)
    (root / "small.js").write_bytes(b"1")
    (root / "assets" / "logo.png").write_bytes(b"\x89PNG" + os.urandom(4096))
    (root / "random.wasm").write_bytes(os.urandom(4096))  # incompressible: no variant kept
    return root


def test_precompress_writes_a_gzip_beside_each_compressible_file(dist: Path) -> None:
    assert ohif.precompress(dist) == 2
    assert gzip.decompress((dist / (BUNDLE + GZIP_SUFFIX)).read_bytes()) == CODE
    assert (dist / ("index.html" + GZIP_SUFFIX)).is_file()
    for name in ("small.js", "assets/logo.png", "random.wasm"):  # too small, an image, not worth it
        assert not (dist / (name + GZIP_SUFFIX)).exists(), name
    first = (dist / (BUNDLE + GZIP_SUFFIX)).read_bytes()
    assert ohif.precompress(dist) == 0  # up to date: nothing again
    (dist / (BUNDLE + GZIP_SUFFIX)).unlink()
    assert ohif.precompress(dist) == 1 and (dist / (BUNDLE + GZIP_SUFFIX)).read_bytes() == first  # deterministic
    assert not list(dist.rglob("*.tmp"))


def test_precompress_replaces_an_older_variant(dist: Path) -> None:
    variant = dist / (BUNDLE + GZIP_SUFFIX)
    variant.write_bytes(gzip.compress(b"an older build"))
    older = (dist / BUNDLE).stat().st_mtime_ns - 10**9
    os.utime(variant, ns=(older, older))
    ohif.precompress(dist)
    assert gzip.decompress(variant.read_bytes()) == CODE


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("gzip", True), ("gzip, deflate, br, zstd", True), ("GZIP", True), ("x-gzip", True), ("*", True),
        ("br;q=1.0, gzip;q=0.5", True), ("gzip ; q=0.001", True), ("identity, *;q=0.5", True),
        ("", False), ("identity", False), ("br", False), ("deflate", False), ("gzip;q=0", False),
        ("gzip;q=0.0, *", False), ("*;q=0", False), ("gzip;q=nonsense", False), ("gzipx", False),
    ],
)
def test_accept_encoding(value: str, allowed: bool) -> None:
    assert accepts_gzip(value) is allowed


def test_if_none_match() -> None:
    tags = ('"abc-gzip"', '"abc"', '"abc-gzip"')
    assert matching_etag('"abc"', tags) == '"abc"'
    assert matching_etag('W/"abc-gzip"', tags) == '"abc-gzip"'
    assert matching_etag('"x", "abc" , "y"', tags) == '"abc"'
    assert matching_etag("*", tags) == '"abc-gzip"'
    assert matching_etag('"abd"', tags) is None
    assert matching_etag("", tags) is None
    assert matching_etag("abc", tags) is None  # unquoted: not an entity tag


def test_a_variant_is_used_only_when_it_is_the_file(tmp_path: Path) -> None:
    variant = tmp_path / "x.js.gz"
    assert verified_variant(variant, CODE) is None  # missing
    variant.write_bytes(gzip.compress(CODE))
    assert verified_variant(variant, CODE) == variant.read_bytes()
    assert verified_variant(variant, CODE + b";") is None  # stale
    variant.write_bytes(gzip.compress(CODE)[:-20])
    assert verified_variant(variant, CODE) is None  # truncated
    variant.write_bytes(b"not gzip at all")
    assert verified_variant(variant, CODE) is None
    variant.write_bytes(gzip.compress(b"1", compresslevel=0))
    assert verified_variant(variant, b"1") is None  # larger than the file


def test_head_answers_what_get_answers(dist: Path) -> None:
    ohif.precompress(dist)
    app = ViewerApp(dist)
    for request in (GZIP, {}):
        got, head = app.answer("GET", f"/ohif/{BUNDLE}", request), app.answer("HEAD", f"/ohif/{BUNDLE}", request)
        assert (head.status, head.body, head.content_type, head.headers) == (
            got.status, got.body, got.content_type, got.headers)


def test_no_variant_when_orthanc_compresses(dist: Path) -> None:
    ohif.precompress(dist)
    answer = ViewerApp(dist, precompressed=False).answer("GET", f"/ohif/{BUNDLE}", GZIP)
    assert answer.body == CODE and "Content-Encoding" not in answer.headers and "Vary" not in answer.headers


def test_a_file_changed_on_disk_is_read_again_and_its_stale_variant_dropped(dist: Path) -> None:
    ohif.precompress(dist)
    app = ViewerApp(dist)
    before = app.answer("GET", "/ohif/index.html", GZIP)
    assert before.headers["Content-Encoding"] == "gzip"
    (dist / "index.html").write_bytes(b"<html>" + b"<!-- a newer viewer -->" * 200 + b"</html>")
    after = app.answer("GET", "/ohif/index.html", GZIP)
    assert after.body == (dist / "index.html").read_bytes() and "Content-Encoding" not in after.headers
    assert after.headers["ETag"] != before.headers["ETag"]
    assert app.answer("GET", "/ohif/index.html", {**GZIP, "if-none-match": before.headers["ETag"]}).status == 200


def test_request_headers_in_any_case(dist: Path) -> None:
    ohif.precompress(dist)
    app = ViewerApp(dist)
    etag = app.answer("GET", f"/ohif/{BUNDLE}", {"Accept-Encoding": "gzip"}).headers["ETag"]
    assert etag.endswith('-gzip"')
    assert app.answer("GET", f"/ohif/{BUNDLE}", {"Accept-Encoding": "gzip", "If-None-Match": etag}).status == 304
