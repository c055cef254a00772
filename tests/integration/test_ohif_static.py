"""The OHIF site's HTTP answers through Orthanc (issue 12, item 6): the install step's gzip variants sent when the
request accepts gzip (identical once decompressed, Content-Length the bytes sent), the file as it is otherwise,
ETags and 304, ``immutable`` on hashed names only, nothing outside the dist, and no double compression
when Orthanc compresses answers itself. A small dist of its own (``ViewerAppDir``), prepared by
``ehr_stack.ohif.precompress`` as the install does.
"""

from __future__ import annotations

import gzip
import http.client
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from ehr_stack import ohif
from ehr_stack.stack import Stack
from tests.conftest import running_stack

pytestmark = pytest.mark.integration

BUNDLE = "app.bundle.0f6159c501addfe9.js"  # a content-hashed name
UNHASHED = "init-service-worker.js"
STALE = "12.bundle.b4688cdbdd856b75.js"  # its .gz is of other bytes: never sent
INDEX = ('<!doctype html><html><head><script>window.PUBLIC_URL="/ohif/"</script>'
         + "<!-- " + "viewer " * 400 + "-->" + f'<script defer src="/ohif/{BUNDLE}"></script></head></html>').encode()
CODE = ("(function(){" + "".join(f"var v{i} = document.querySelector('#viewport-{i}');" for i in range(2000))
        + "})();").encode()
NO_GZIP = {"Accept-Encoding": "identity"}


def make_dist(root: Path) -> Path:
    dist = root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_bytes(INDEX)
    (dist / BUNDLE).write_bytes(CODE)
    (dist / UNHASHED).write_bytes(CODE.replace(b"viewport", b"worker"))
    (dist / "app.bundle.css").write_text("body{margin:0}\n" * 200)
    (dist / "assets" / "logo.png").write_bytes(b"\x89PNG" + bytes(range(256)) * 8)
    (dist / STALE).write_bytes(CODE.replace(b"viewport", b"stale"))
    # The dist's own configuration and a precompressed copy of it: the plugin's generated one must win.
    (dist / "app-config.js").write_text("window.config = {dist: true};" + " " * 2000)
    (root / "secret.txt").write_text("outside the dist")
    (dist / "escape.txt").symlink_to(root / "secret.txt")
    assert ohif.precompress(dist) >= 5
    (dist / (STALE + ".gz")).write_bytes(gzip.compress(b"console.log('an older build');" * 100))
    assert (dist / "app-config.js.gz").is_file() and not (dist / "assets" / "logo.png.gz").exists()
    return dist


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[Stack, Path]]:
    root = Path(tempfile.mkdtemp(prefix="ehr-ohif-static-"))
    dist = make_dist(root)
    try:
        with running_stack("ohif-static", extra_settings={"Timezone": "America/Chicago",
                                                          "ViewerAppDir": str(dist)}) as stack:
            yield stack, dist
    finally:
        shutil.rmtree(root, ignore_errors=True)


def get(stack: Stack, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> requests.Response:
    """The answer as sent: ``raw_body`` is the bytes on the wire, not decoded (requests would gunzip them)."""
    answer = requests.request(method, stack.url + path, headers=headers, timeout=30, stream=True)
    answer.raw_body = answer.raw.read(decode_content=False)  # type: ignore[attr-defined]
    return answer


def test_gzip_when_accepted_and_identical_once_decompressed(site: tuple[Stack, Path]) -> None:
    stack, dist = site
    for accept in ("gzip", "gzip, deflate, br", "br;q=1.0, gzip;q=0.5", "*"):
        answer = get(stack, f"/ohif/{BUNDLE}", {"Accept-Encoding": accept})
        assert answer.status_code == 200, accept
        assert answer.headers["Content-Encoding"] == "gzip"
        assert answer.headers["Vary"] == "Accept-Encoding"
        assert answer.headers["Content-Type"] == "application/javascript; charset=utf-8"
        body: bytes = answer.raw_body  # type: ignore[attr-defined]
        assert int(answer.headers["Content-Length"]) == len(body) < len(CODE) // 4
        assert body == (dist / (BUNDLE + ".gz")).read_bytes()
        assert gzip.decompress(body) == CODE
    page = get(stack, "/ohif/viewer?StudyInstanceUIDs=1.2.3", {"Accept-Encoding": "gzip"})
    assert page.status_code == 200 and page.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(page.raw_body) == INDEX  # type: ignore[attr-defined]


@pytest.mark.parametrize("accept", [None, "identity", "gzip;q=0", "br", "deflate", "*;q=0"])
def test_the_file_as_it_is_otherwise(site: tuple[Stack, Path], accept: str | None) -> None:
    stack, _ = site
    # requests sends "gzip, deflate" unless told otherwise; None drops the header.
    answer = get(stack, f"/ohif/{BUNDLE}", {"Accept-Encoding": accept})  # type: ignore[dict-item]
    assert answer.status_code == 200
    assert "Content-Encoding" not in answer.headers
    assert answer.headers["Vary"] == "Accept-Encoding"  # a cache must not hand this to a gzip client, or back
    assert answer.raw_body == CODE  # type: ignore[attr-defined]
    assert int(answer.headers["Content-Length"]) == len(CODE)


def test_a_stale_variant_and_the_dists_app_config_are_never_sent(site: tuple[Stack, Path]) -> None:
    stack, dist = site
    stale = get(stack, f"/ohif/{STALE}", {"Accept-Encoding": "gzip"})
    assert stale.status_code == 200 and "Content-Encoding" not in stale.headers
    assert stale.raw_body == (dist / STALE).read_bytes()  # type: ignore[attr-defined]
    config = get(stack, "/ohif/app-config.js", {"Accept-Encoding": "gzip"})
    assert config.status_code == 200 and "Content-Encoding" not in config.headers
    assert b"dist: true" not in config.raw_body and b'"routerBasename": "/ohif"' in config.raw_body  # type: ignore[attr-defined]
    assert config.headers["Cache-Control"] == "no-cache" and config.headers["ETag"].startswith('"')


@pytest.mark.parametrize(
    ("path", "cache_control"),
    [
        (f"/ohif/{BUNDLE}", "public, max-age=31536000, immutable"),
        (f"/ohif/{STALE}", "public, max-age=31536000, immutable"),
        ("/ohif/index.html", "no-cache"),
        ("/ohif/viewer", "no-cache"),
        (f"/ohif/{UNHASHED}", "no-cache"),
        ("/ohif/app.bundle.css", "no-cache"),
        ("/ohif/assets/logo.png", "no-cache"),
        ("/ohif/app-config.js", "no-cache"),
    ],
)
def test_immutable_only_on_hashed_names_and_an_etag_on_every_file(site: tuple[Stack, Path], path: str,
                                                                    cache_control: str) -> None:
    stack, _ = site
    answer = get(stack, path)
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == cache_control
    assert answer.headers["ETag"].startswith('"') and answer.headers["ETag"].endswith('"')
    assert answer.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/ohif/index.html", f"/ohif/{BUNDLE}", "/ohif/app-config.js",
                                  "/ohif/assets/logo.png"])
def test_if_none_match_answers_304(site: tuple[Stack, Path], path: str) -> None:
    stack, _ = site
    for accept in ("gzip", "identity"):
        first = get(stack, path, {"Accept-Encoding": accept})
        assert first.status_code == 200
        etag = first.headers["ETag"]
        for condition in (etag, f"W/{etag}", f'"something-else", {etag}', "*"):
            again = get(stack, path, {"Accept-Encoding": accept, "If-None-Match": condition})
            assert again.status_code == 304, condition
            assert again.raw_body == b""  # type: ignore[attr-defined]
            assert again.headers["ETag"] == etag
            assert again.headers["Cache-Control"] == first.headers["Cache-Control"]
        changed = get(stack, path, {"Accept-Encoding": accept, "If-None-Match": '"an-older-build"'})
        assert changed.status_code == 200 and changed.raw_body == first.raw_body  # type: ignore[attr-defined]


def test_the_encodings_have_their_own_etags_and_each_revalidates(site: tuple[Stack, Path]) -> None:
    stack, _ = site
    zipped = get(stack, "/ohif/index.html", {"Accept-Encoding": "gzip"}).headers["ETag"]
    plain = get(stack, "/ohif/index.html", NO_GZIP).headers["ETag"]
    assert zipped != plain
    # A cache holding either representation learns that it is still valid.
    assert get(stack, "/ohif/index.html", {"Accept-Encoding": "gzip", "If-None-Match": plain}).status_code == 304
    assert get(stack, "/ohif/index.html", {**NO_GZIP, "If-None-Match": zipped}).status_code == 304


def test_head_is_answered_by_orthanc_as_before(site: tuple[Stack, Path]) -> None:
    """Orthanc 1.10 routes no HEAD to a plugin's callback: it answers 404 with no body itself, before and
    after the variants (the viewer never sends HEAD; ``ViewerApp`` answers HEAD as GET, tests/unit)."""
    stack, _ = site
    for accept in ("gzip", "identity"):
        head = get(stack, f"/ohif/{BUNDLE}", {"Accept-Encoding": accept}, method="HEAD")
        assert head.status_code == 404
        assert head.raw_body == b""  # type: ignore[attr-defined]


def raw_get(stack: Stack, path: str) -> tuple[int, bytes]:
    """``path`` sent exactly as written (requests would resolve its dot segments first)."""
    address = urlsplit(stack.url)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=30)
    try:
        connection.request("GET", path, headers={"Accept-Encoding": "gzip"})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ohif/escape.txt", 404),  # a symlink out of the dist
        (f"/ohif/{BUNDLE}.gz", 404),  # the variants are not files of the site
        ("/ohif/app-config.js.gz", 404),
        ("/ohif/../secret.txt", 403),  # outside /ohif/: Orthanc's own API, administrators only
        ("/ohif/assets/../../secret.txt", 403),
        ("/ohif/%2e%2e/secret.txt", 403),
        ("/ohif/assets/%2e%2e/%2e%2e/secret.txt", 403),
    ],
)
def test_nothing_outside_the_dist(site: tuple[Stack, Path], path: str, status: int) -> None:
    stack, _ = site
    code, body = raw_get(stack, path)
    assert code == status, body[:300]
    assert b"outside the dist" not in body and b"outside the dist" not in _maybe_gunzip(body)


def _maybe_gunzip(body: bytes) -> bytes:
    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body


def test_orthanc_compressing_itself_gets_the_files_as_they_are(tmp_path: Path) -> None:
    """HttpCompressionEnabled (Orthanc's default, off in this project's configurations): Orthanc gzips answers
    on its own, so the plugin sends no variant; the browser gets gzip once, never a gzip of the gzip file."""
    dist = make_dist(tmp_path)
    with running_stack("ohif-static-orthanc-gzip", orthanc_overrides={"HttpCompressionEnabled": True},
                       extra_settings={"Timezone": "America/Chicago", "ViewerAppDir": str(dist)}) as stack:
        answer = get(stack, f"/ohif/{BUNDLE}", {"Accept-Encoding": "gzip"})
        assert answer.status_code == 200
        assert answer.headers["Content-Encoding"] == "gzip"  # one coding, Orthanc's
        assert gzip.decompress(answer.raw_body) == CODE  # type: ignore[attr-defined]
        # Not the install's variant passed through: Orthanc compressed the file itself.
        assert answer.raw_body != (dist / (BUNDLE + ".gz")).read_bytes()  # type: ignore[attr-defined]
        assert "Vary" not in answer.headers
        plain = get(stack, f"/ohif/{BUNDLE}", NO_GZIP)
        assert plain.status_code == 200 and "Content-Encoding" not in plain.headers
        assert plain.raw_body == CODE  # type: ignore[attr-defined]
