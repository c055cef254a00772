"""The OHIF site under /ohif/: file serving (``api/ohif_site``), its place in the HTTP filter, and the install
step that prepares the pinned dist for the sub-path (``ehr_stack.ohif``)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ehr_imaging.api.ohif_site import IMMUTABLE, QIDO_ROOT, REVALIDATE, WADO_ROOT, WADO_URI_ROOT, ViewerApp, app_config
from ehr_imaging.app.access_log import AccessLog
from ehr_imaging.app.dicomweb_gate import ViewerGate
from ehr_imaging.app.study_hierarchy import StudyHierarchy
from ehr_imaging.app.token_revocations import RevocationList
from ehr_imaging.core.access import Area, classify
from ehr_imaging.core.auth import Authenticator, BasicAuthenticator, TokenVerifier
from ehr_imaging.hooks.http_filter import make_filter
from ehr_stack import ohif

INDEX = b'<html><script>window.PUBLIC_URL="/ohif/"</script></html>'
BUNDLE = "app.bundle.0f6159c501addfe9.js"


@pytest.fixture()
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    (root / "assets" / "images").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / BUNDLE).write_text("console.log(1)")
    (root / "app.bundle.css").write_text("body{}")
    (root / "0ddf166f7a343eda.wasm").write_bytes(b"\0asm")
    (root / "a34f9d1faa5f3315.woff2").write_bytes(b"wOF2")
    (root / "assets" / "images" / "CT-Bone.png").write_bytes(b"\x89PNG")
    (root / "app-config.js").write_text("window.config = {dist: true};")  # the plugin's own must win
    (tmp_path / "secret.txt").write_text("outside the dist")
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    return root


@pytest.mark.parametrize("path", ["/ohif", "/ohif/", "/ohif/viewer", "/ohif/viewer/dicomweb", "/ohif/local"])
def test_single_page_routes_get_index_html(dist: Path, path: str) -> None:
    answer = ViewerApp(dist).answer("GET", path)
    assert (answer.status, answer.body) == (200, INDEX)
    assert answer.content_type == "text/html; charset=utf-8"
    assert answer.headers["Cache-Control"] == REVALIDATE
    assert answer.headers["Referrer-Policy"] == "no-referrer"  # the viewer URL carries a token


@pytest.mark.parametrize(
    ("path", "content_type", "cache"),
    [
        (f"/ohif/{BUNDLE}", "application/javascript; charset=utf-8", IMMUTABLE),
        ("/ohif/app.bundle.css", "text/css; charset=utf-8", REVALIDATE),  # not content-hashed
        ("/ohif/0ddf166f7a343eda.wasm", "application/wasm", IMMUTABLE),
        ("/ohif/a34f9d1faa5f3315.woff2", "font/woff2", IMMUTABLE),
        ("/ohif/assets/images/CT-Bone.png", "image/png", REVALIDATE),
        ("/ohif/index.html", "text/html; charset=utf-8", REVALIDATE),
    ],
)
def test_files_with_their_type_and_cache_policy(dist: Path, path: str, content_type: str, cache: str) -> None:
    answer = ViewerApp(dist).answer("GET", path)
    assert answer.status == 200
    assert answer.body == (dist / path.removeprefix("/ohif/")).read_bytes()
    assert answer.content_type == content_type
    assert answer.headers["Cache-Control"] == cache
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/ohif/missing.bundle.0123456789abcdef.js",  # a missing asset is a 404, never index.html
        "/ohif/assets/nope.png",
        "/ohif/../secret.txt",
        "/ohif/assets/../../secret.txt",
        "/ohif/assets/%2e%2e/%2e%2e/secret.txt",
        "/ohif//etc/passwd",
        "/ohif/..\\secret.txt",
        "/ohif/index.html\x00.png",
        "/ohif/escape.txt",  # a symlink out of the dist
        "/ohif/./index.html",
        "/ohifx/index.html",
    ],
)
def test_nothing_outside_the_dist_and_no_fallback_for_files(dist: Path, path: str) -> None:
    answer = ViewerApp(dist).answer("GET", path)
    assert answer.status == 404
    assert b"outside the dist" not in answer.body
    assert json.loads(answer.body)["detail"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_reads_only(dist: Path, method: str) -> None:
    answer = ViewerApp(dist).answer(method, "/ohif/index.html")
    assert answer.status == 405 and answer.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("root", ["", "   "])
def test_not_installed_answers_404_json(root: str) -> None:
    app = ViewerApp(root)
    assert not app.installed
    for path in ("/ohif/viewer", "/ohif/app-config.js", "/ohif/index.html"):
        answer = app.answer("GET", path)
        assert answer.status == 404
        assert json.loads(answer.body) == {"detail": "the OHIF viewer is not installed (EhrImaging.ViewerAppDir)"}


def test_a_directory_without_index_html_is_not_installed(tmp_path: Path) -> None:
    assert ViewerApp(tmp_path / "nowhere").answer("GET", "/ohif/viewer").status == 404
    assert ViewerApp(tmp_path).answer("GET", "/ohif/viewer").status == 404


def _config_object(script: str) -> dict[str, Any]:
    match = re.search(r"window\.config = (\{.*?\});\n", script, re.DOTALL)
    assert match is not None
    config: dict[str, Any] = json.loads(match.group(1))
    return config


def test_the_app_config_is_the_plugins(dist: Path) -> None:
    answer = ViewerApp(dist).answer("GET", "/ohif/app-config.js")
    assert answer.status == 200 and answer.content_type.startswith("application/javascript")
    assert answer.headers["Cache-Control"] == REVALIDATE
    assert b"dist: true" not in answer.body
    config = _config_object(answer.body.decode())
    assert config["routerBasename"] == "/ohif"
    assert config["showStudyList"] is False
    assert config["customizationService"] == {"ohif.tours": {"$set": []}}
    assert config["defaultDataSourceName"] == "orthanc"
    (source,) = config["dataSources"]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    roots = [source["configuration"][key] for key in ("qidoRoot", "wadoRoot", "wadoUriRoot")]
    assert roots == [QIDO_ROOT, WADO_ROOT, WADO_URI_ROOT]
    assert (QIDO_ROOT, WADO_ROOT, WADO_URI_ROOT) == ("/ehr-imaging/dicom-web", "/dicom-web", "/wado")


def test_the_app_config_hides_error_details_from_users(dist: Path) -> None:
    """The review: ``showErrorDetails: "always"`` showed every user an error's stack (paths, UIDs in messages)."""
    config = _config_object(ViewerApp(dist).answer("GET", "/ohif/app-config.js").body.decode())
    assert config["showErrorDetails"] == "dev"  # missing or null would show them too


@pytest.mark.skipif(not ohif.is_installed(ohif.viewer_dir()), reason="make install prepares the viewer")
def test_the_installed_viewer_shows_details_for_dev_only_outside_production() -> None:
    """What "dev" means in the pinned OHIF build: its error boundary shows details for "dev" only when not a
    production build, and this build is one."""
    bundle = (ohif.viewer_dir() / BUNDLE).read_text(encoding="utf-8")
    assert "const isProduction = \"production\" === 'production';" in bundle
    assert ("showErrorDetails == null || showErrorDetails === ErrorBoundary_ShowErrorDetails.always ||"
            " showErrorDetails === ErrorBoundary_ShowErrorDetails.dev && !isProduction") in bundle


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_app_config_runs_and_makes_the_roots_absolute_on_this_origin() -> None:
    script = app_config(qido_root="/api/v1/dicom/qido")
    program = ("const window = {location: {origin: 'https://pacs.example:8042'}};\n" + script
               + "\nconsole.log(JSON.stringify(window.config.dataSources[0].configuration));")
    result = subprocess.run(["node", "-e", program], capture_output=True, text=True, timeout=30, check=True)
    settings = json.loads(result.stdout)
    assert settings["qidoRoot"] == "https://pacs.example:8042/api/v1/dicom/qido"
    assert settings["wadoRoot"] == "https://pacs.example:8042/dicom-web"
    assert settings["wadoUriRoot"] == "https://pacs.example:8042/wado"


# --- the HTTP filter: the viewer's files are public, reads only; nothing else opens ---------------------

@pytest.mark.parametrize("uri", ["/ohif", "/ohif/", "/ohif/viewer?StudyInstanceUIDs=1.2&token=x",
                                 f"/ohif/{BUNDLE}", "/ohif/assets/images/CT-Bone.png"])
def test_viewer_paths(uri: str) -> None:
    assert classify(uri) is Area.VIEWER_APP


@pytest.mark.parametrize("uri", ["/ohifx", "/ohif/../system", "/ohif/./index.html", "/ohif//x", "/ohif/..",
                                 "/ohif\\..\\system", "/x/ohif/index.html", "/OHIF/index.html", "/tools/find"])
def test_look_alikes_stay_admin_only(uri: str) -> None:
    assert classify(uri) is Area.ADMIN_ONLY


def _filter() -> object:
    authenticator = Authenticator(users=TokenVerifier(issuer="i", audience="a", secret="s" * 32),
                                  admins=BasicAuthenticator({"admin": "pw"}), sessions=None)
    viewers = TokenVerifier(issuer="i", audience="viewer", secret="s" * 32)
    gate = ViewerGate(viewers, RevocationList(dict), StudyHierarchy(None), AccessLog(lambda counts: None))  # type: ignore[arg-type]
    return make_filter(authenticator, gate, lambda message: None, body_refusal=lambda method, path, caller: None,
                       max_body_bytes=1024)


@pytest.mark.parametrize(
    ("uri", "method", "allowed"),
    [
        ("/ohif/viewer", 1, True),  # Orthanc's OrthancPluginHttpMethod: GET = 1
        (f"/ohif/{BUNDLE}", 1, True),
        ("/ohif/index.html", 2, False),  # POST
        ("/ohif/index.html", 3, False),  # PUT
        ("/ohif/index.html", 4, False),  # DELETE
        ("/ohif/../system", 1, False),
        ("/ohifx", 1, False),
        ("/dicom-web/studies", 1, False),
        ("/wado?requestType=WADO", 1, False),
    ],
)
def test_the_filter_opens_the_viewer_files_only(uri: str, method: int, allowed: bool) -> None:
    http_filter = _filter()
    assert http_filter(uri, method, "127.0.0.1", {}, {}) is allowed  # type: ignore[operator]


# --- the install step -----------------------------------------------------------------------------------

def test_integrity_is_checked(tmp_path: Path) -> None:
    tarball = tmp_path / "ohif-app.tgz"
    tarball.write_bytes(b"not the pinned package")
    with pytest.raises(ohif.PrepareError, match="not the pinned"):
        ohif.check_integrity(tarball)
    good = "sha512-" + base64.b64encode(hashlib.sha512(b"not the pinned package").digest()).decode()
    ohif.check_integrity(tarball, good)


def test_a_build_that_differs_from_the_pinned_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script>window.PUBLIC_URL="/"</script><script src="/app.js"></script>')
    with pytest.raises(ohif.PrepareError, match="PUBLIC_URL"):
        ohif.rewrite_for_sub_path(tmp_path)


def test_install_skips_a_prepared_directory(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("prepared")
    assert ohif.install(tmp_path, npm="/nonexistent/npm") is False


@pytest.mark.skipif(not ohif.is_installed(ohif.viewer_dir()), reason="make install prepares the viewer")
def test_the_installed_viewer_is_rewritten_for_the_sub_path() -> None:
    root = ohif.viewer_dir()
    index = (root / "index.html").read_text()
    assert index.count(f'window.PUBLIC_URL="{ohif.SUB_PATH}"') == 2
    assert re.findall(r'(?:href|src)="/(?!ohif/)', index) == []
    bundles = [p.read_text(encoding="utf-8") for p in root.glob("*.js")]
    assert sum(b.count(f'__webpack_require__.p = "{ohif.SUB_PATH}";') for b in bundles) == 8
    assert not any('__webpack_require__.p = "/";' in b for b in bundles)
    css = (root / "app.bundle.css").read_text()
    assert "url(/ohif/" in css and "url(/a" not in css
    for dropped in ohif.DROPPED:
        assert not (root / dropped).exists()
