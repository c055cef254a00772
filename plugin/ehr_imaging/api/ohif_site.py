"""The OHIF viewer's static site under ``/ohif/``, served from Orthanc's port (same origin as DICOMweb).

Orthanc's ``ServeFolders`` has no ``index.html`` fallback for the single-page app's routes
(``/ohif/viewer``), hence this small file server: path -> file inside the prepared dist (never outside
it), content type, cache headers, and the app configuration generated here rather than taken from the
dist. Independent of ``orthanc``: ``plugin.py`` registers it and writes the ``Response`` back.

Speed (issue 12, item 6: the viewer from cold): each file is read once and kept in memory (the dist is ~27 MB)
with its gzip variant, the ``<name>.gz`` the install step made beside it (``ehr_stack.ohif``), used only when
it decompresses to exactly the file; it is sent when the request's ``Accept-Encoding`` allows it. Every answer
carries a strong ETag (``If-None-Match`` -> 304); hashed names are immutable, the rest revalidated.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import access
from ..core.access import is_canonical
from .router import Response, error_response

PREFIX = access.VIEWER_APP_PREFIX.rstrip("/")
# Where the viewer's data source points: queries to the scoped QIDO root (narrowed to the token's studies),
# retrievals straight to Orthanc's DICOMweb behind the filter.
QIDO_ROOT = access.SCOPED_QIDO_ROOT.rstrip("/")
WADO_ROOT = access.DICOMWEB_ROOT.rstrip("/")
WADO_URI_ROOT = access.WADO_URI_ROOT
APP_CONFIG = "/app-config.js"
READ_METHODS = frozenset({"GET", "HEAD"})

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",  # module scripts are refused with any other type
    ".mjs": "application/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".wasm": "application/wasm",  # WebAssembly.instantiateStreaming needs it
    ".json": "application/json",
    ".jsonc": "application/json",
    ".webapp": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
}
# Webpack's content-hashed names (``app.bundle.0f6159c501addfe9.js``, ``a34f9d1faa5f3315.woff2``) never change
# content; everything else (index.html, app.bundle.css, the app config) is revalidated on every load.
_HASHED = re.compile(r"(?:^|\.)[0-9a-f]{16}\.(?:js|wasm|woff2)$")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# The viewer URL carries the token: never send it on in a Referer.
_COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
# The precompressed variant of ``name`` is ``name + GZIP_SUFFIX`` in the same directory (never served by its name).
GZIP_SUFFIX = ".gz"


def app_config(qido_root: str = QIDO_ROOT, wado_root: str = WADO_ROOT, wado_uri_root: str = WADO_URI_ROOT) -> str:
    """``/ohif/app-config.js``: one DICOMweb data source on this origin, no study list, no onboarding tour.

    Adapted from the configuration checked with OHIF 3.13.2 against Orthanc 1.10.1's DICOMweb 1.7.
    """
    config: dict[str, Any] = {
        "name": "ehr-imaging",
        "routerBasename": PREFIX,
        "extensions": [],
        "modes": [],
        "customizationService": {"ohif.tours": {"$set": []}},  # the onboarding tour popup
        "showStudyList": False,  # a viewer token opens given studies; there is no list to browse
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        # OHIF's error page shows the error's details for "always", "production" or no value in its production
        # build; "dev" hides them there (the console keeps them). Checked in the 3.13.2 bundle (isProduction true).
        "showErrorDetails": "dev",
        "defaultDataSourceName": "orthanc",
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "orthanc",
            "configuration": {
                "friendlyName": "ehr-imaging (Orthanc DICOMweb)",
                "name": "orthanc",
                "qidoRoot": qido_root,
                "wadoRoot": wado_root,
                "wadoUriRoot": wado_uri_root,
                "qidoSupportsIncludeField": False,
                "supportsReject": False,
                "imageRendering": "wadors",
                "thumbnailRendering": "wadors",
                "enableStudyLazyLoad": True,
                "supportsFuzzyMatching": False,
                "supportsWildcard": True,
                "dicomUploadEnabled": False,
                "staticWado": False,
                "singlepart": "bulkdata,video",
                "bulkDataURI": {"enabled": True},
                "omitQuotationForMultipartRequest": True,
            },
        }],
    }
    # The roots are paths on this origin; OHIF wants absolute URLs, which only the browser knows.
    return (
        "/* Generated by the ehr-imaging plugin (api/ohif_site.py): OHIF's configuration. */\n"
        f"window.config = {json.dumps(config, indent=2)};\n"
        "(function (source) {\n"
        "  ['qidoRoot', 'wadoRoot', 'wadoUriRoot'].forEach(function (key) {\n"
        "    source[key] = window.location.origin + source[key];\n"
        "  });\n"
        "})(window.config.dataSources[0].configuration);\n"
    )


@dataclass(frozen=True)
class Asset:
    """One file as served: its bytes, the gzip variant if any, validators and headers."""

    body: bytes
    gzipped: bytes | None
    content_type: str
    cache_control: str
    etag: str
    stamp: tuple[int, ...] = ()  # the source's and the variant's (mtime_ns, size) when read: reread on change

    @property
    def gzip_etag(self) -> str:
        return self.etag[:-1] + '-gzip"'


def make_asset(body: bytes, gzipped: bytes | None, suffix: str, cache_control: str,
               stamp: tuple[int, ...] = ()) -> Asset:
    return Asset(body, gzipped, CONTENT_TYPES.get(suffix.lower(), "application/octet-stream"), cache_control,
                 '"' + hashlib.sha256(body).hexdigest()[:32] + '"', stamp)


class ViewerApp:
    """Answers ``GET``/``HEAD`` ``/ohif`` and ``/ohif/...`` from the prepared dist in ``root``.

    ``precompressed`` False (Orthanc's own ``HttpCompressionEnabled``: it would compress the answer again)
    serves every file as it is."""

    def __init__(self, root: str | Path, precompressed: bool = True) -> None:
        self.root = Path(root).resolve() if str(root).strip() else None
        self.precompressed = precompressed
        # Generated, never taken from the dist (nor from a precompressed copy of the dist's).
        self._config = make_asset(app_config().encode(), None, ".js", REVALIDATE)
        self._assets: dict[Path, Asset] = {}  # a whole entry replaced at once: safe across Orthanc's threads

    @property
    def installed(self) -> bool:
        return self.root is not None and (self.root / "index.html").is_file()

    def answer(self, method: str, path: str, headers: Mapping[str, str] | None = None) -> Response:
        """The answer to ``method path``; ``headers`` (the request's) negotiate encoding and revalidation."""
        if method.upper() not in READ_METHODS:
            return error_response(405, f"method {method} not allowed", {"Allow": "GET, HEAD"})
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            return error_response(404, f"no route {path}")
        if not self.installed:
            return error_response(404, "the OHIF viewer is not installed (EhrImaging.ViewerAppDir)")
        relative = path[len(PREFIX):]
        if not is_canonical(path):
            return error_response(404, f"no file {path}")
        if relative == APP_CONFIG:
            return file_response(self._config, headers or {})
        file = self.resolve(relative)
        if file is None and _looks_like_a_file(relative):  # a missing asset must not get index.html (a JS error)
            return error_response(404, f"no file {path}")
        assert self.root is not None
        return file_response(self.asset(file or self.root / "index.html"), headers or {})

    def asset(self, file: Path) -> Asset:
        """``file`` (inside the dist) as served, from memory unless it or its variant changed on disk."""
        assert self.root is not None
        variant = file.with_name(file.name + GZIP_SUFFIX)
        stamp = _stamp(file) + (_stamp(variant) if self.precompressed else ())
        cached = self._assets.get(file)
        if cached is not None and cached.stamp == stamp:
            return cached
        body = file.read_bytes()
        gzipped = None
        if self.precompressed and variant.resolve().is_relative_to(self.root):
            gzipped = verified_variant(variant, body)
        asset = make_asset(body, gzipped, file.suffix, _cache_control(file.name), stamp)
        self._assets[file] = asset
        return asset

    def resolve(self, relative: str) -> Path | None:
        """The file ``relative`` names inside the dist, or None: no dot segments, nothing outside ``root``."""
        assert self.root is not None
        segments = [s for s in relative.split("/") if s]
        if not segments or not is_canonical(relative) or segments[-1].endswith(GZIP_SUFFIX):
            return None
        candidate = self.root.joinpath(*segments).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate


def file_response(asset: Asset, request_headers: Mapping[str, str]) -> Response:
    """200 with the gzip variant when the request accepts it (``Content-Encoding``; the body's length is the
    Content-Length Orthanc sends), else the file as it is; 304 when ``If-None-Match`` names either."""
    headers = {name.lower(): value for name, value in request_headers.items()}
    use_gzip = asset.gzipped is not None and accepts_gzip(headers.get("accept-encoding", ""))
    etag = asset.gzip_etag if use_gzip else asset.etag
    answer_headers = {**_COMMON_HEADERS, "Cache-Control": asset.cache_control}
    if asset.gzipped is not None:
        answer_headers["Vary"] = "Accept-Encoding"
    matched = matching_etag(headers.get("if-none-match", ""), (etag, asset.etag, asset.gzip_etag))
    if matched is not None:
        return Response(304, b"", asset.content_type, {**answer_headers, "ETag": matched})
    answer_headers["ETag"] = etag
    if use_gzip:
        assert asset.gzipped is not None
        return Response(200, asset.gzipped, asset.content_type, {**answer_headers, "Content-Encoding": "gzip"})
    return Response(200, asset.body, asset.content_type, answer_headers)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip: ``gzip`` (or ``x-gzip``, or else ``*``) with q > 0."""
    quality: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if coding:
            quality[coding.lower()] = q
    for coding in ("gzip", "x-gzip", "*"):
        if coding in quality:
            return quality[coding] > 0
    return False


def matching_etag(if_none_match: str, etags: tuple[str, ...]) -> str | None:
    """The first of ``etags`` that ``If-None-Match`` names (weak comparison, as the header wants), or None."""
    named = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",") if tag.strip()}
    if "*" in named:
        return etags[0]
    return next((tag for tag in etags if tag in named), None)


def verified_variant(variant: Path, body: bytes) -> bytes | None:
    """The bytes of the gzip file ``variant`` if it decompresses to exactly ``body`` and is smaller, else None
    (missing, stale, corrupt: the file is then served as it is)."""
    try:
        gzipped = variant.read_bytes()
        if len(gzipped) < len(body) and gzip.decompress(gzipped) == body:
            return gzipped
    except (OSError, EOFError, zlib.error):
        pass
    return None


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)
    return (stat.st_mtime_ns, stat.st_size)


def _cache_control(name: str) -> str:
    return IMMUTABLE if _HASHED.search(name) else REVALIDATE


def _looks_like_a_file(relative: str) -> bool:
    last = relative.rstrip("/").rsplit("/", 1)[-1]
    return "." in last
