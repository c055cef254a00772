"""The OHIF viewer the plugin serves: the prebuilt ``dist/`` of the pinned npm package ``@ohif/app``.

``python -m ehr_stack.ohif`` (run by ``scripts/install.sh``) fetches the package with ``npm pack``, checks
it against the pinned integrity, and prepares its ``dist/`` for the sub-path ``/ohif/``: the build
assumes the site root, so the absolute paths in ``index.html``, the webpack public path of the bundles
and the font URLs of the CSS are rewritten. Each rewrite must find exactly the pinned number of places,
so a different build fails loudly instead of serving a half-working viewer. Then every compressible file
gets its gzip variant beside it (``<name>.gz``, level 9, which the plugin sends to browsers that accept gzip).
The result is moved into place last: a present directory is a complete one, and a second run only adds the
variants an older install lacks.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OHIF_VERSION = "3.13.2"
OHIF_INTEGRITY = ("sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==")
SUB_PATH = "/ohif/"
# Never requested by the viewer we configure (the segmentation AI runtime, the microscopy viewer; 156 MB),
# the dist's own configuration (the plugin generates /ohif/app-config.js) and the unregistered service worker.
DROPPED = ("ort", "dicom-microscopy-viewer", "app-config.js", "sw.js")

# What 3.13.2's build contains, counted once when it was pinned: (file glob, old, new, expected count).
_PUBLIC_PATH = '__webpack_require__.p = "/";'
REWRITES: tuple[tuple[str, str, str, int], ...] = (
    ("index.html", 'window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{SUB_PATH}"', 2),
    ("*.js", _PUBLIC_PATH, f'__webpack_require__.p = "{SUB_PATH}";', 8),
    ("*.css", "url(/", f"url({SUB_PATH}", 5),
    ("manifest.json", '"/assets/', f'"{SUB_PATH}assets/', 9),
)
# index.html's root-absolute href="/..." and src="/..." (icons, manifest, app-config.js, the bundle, the CSS).
_INDEX_ASSET = re.compile(r'(href|src)="/(?!/)')
INDEX_ASSETS = 31
# Precompressed at install (issue 12, item 6): the text formats and WebAssembly; images and fonts are compressed
# already. A variant that saves less than MIN_SAVING of a file is not kept (the plugin then sends the file).
GZIP_SUFFIX = ".gz"  # the plugin's api/ohif_site.GZIP_SUFFIX
COMPRESSIBLE = frozenset({".html", ".js", ".mjs", ".css", ".wasm", ".json", ".jsonc", ".webapp", ".map", ".svg",
                          ".ico", ".xml", ".txt"})
MIN_SIZE = 1024
MIN_SAVING = 0.1


class PrepareError(RuntimeError):
    """The package is not the pinned build: refuse to install it."""


def viewer_dir() -> Path:
    """Where the prepared dist lives (git-ignored ``var/``); ``EHR_OHIF_DIR`` overrides it."""
    return Path(os.environ.get("EHR_OHIF_DIR") or REPO / "var" / "ohif" / OHIF_VERSION).resolve()


def is_installed(target: Path) -> bool:
    return (target / "index.html").is_file()


def check_integrity(tarball: Path, integrity: str = OHIF_INTEGRITY) -> None:
    algorithm, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise PrepareError(f"{tarball.name}: {algorithm} {digest} is not the pinned {expected}")


def rewrite_for_sub_path(dist: Path) -> None:
    """Point every root-absolute reference of the build at ``SUB_PATH``; the counts must be the pinned ones."""
    for pattern, old, new, expected in REWRITES:
        found = 0
        for path in sorted(dist.glob(pattern)):
            text = path.read_text(encoding="utf-8")
            if old in text:
                found += text.count(old)
                path.write_text(text.replace(old, new), encoding="utf-8")
        if found != expected:
            raise PrepareError(f"{pattern}: {found} occurrences of {old!r}, the pinned build has {expected}")
    index = dist / "index.html"
    text, count = _INDEX_ASSET.subn(rf'\1="{SUB_PATH}', index.read_text(encoding="utf-8"))
    if count != INDEX_ASSETS:
        raise PrepareError(f"index.html: {count} root-absolute href/src, the pinned build has {INDEX_ASSETS}")
    index.write_text(text, encoding="utf-8")


def precompress(dist: Path) -> int:
    """Write ``<file>.gz`` beside each compressible file of ``dist`` that lacks an up-to-date one (each written
    aside and renamed into place); returns how many were written. Deterministic: no name or time in the header."""
    written = 0
    for path in sorted(p for p in dist.rglob("*") if p.is_file() and p.suffix.lower() in COMPRESSIBLE):
        variant = path.with_name(path.name + GZIP_SUFFIX)
        if variant.is_file() and variant.stat().st_mtime_ns >= path.stat().st_mtime_ns:
            continue
        body = path.read_bytes()
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        if len(body) < MIN_SIZE or len(packed) > len(body) * (1 - MIN_SAVING):
            variant.unlink(missing_ok=True)
            continue
        aside = variant.with_name(f".{variant.name}.tmp")
        aside.write_bytes(packed)
        os.replace(aside, variant)
        written += 1
    return written


def install(target: Path, npm: str = "npm") -> bool:
    """Fetch, check, prepare and move into place; False when ``target`` is already installed."""
    if is_installed(target):
        return False
    if shutil.which(npm) is None:
        raise PrepareError("npm not found: install Node.js (apt-get install nodejs npm) for the OHIF viewer")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ohif-", dir=target.parent) as tmp:
        work = Path(tmp)
        subprocess.run([npm, "pack", f"@ohif/app@{OHIF_VERSION}", "--silent", "--pack-destination", str(work)],
                       check=True, cwd=work, stdout=subprocess.DEVNULL)
        tarball = work / f"ohif-app-{OHIF_VERSION}.tgz"
        check_integrity(tarball)
        with tarfile.open(tarball) as archive:
            # Regular files and directories under package/dist/ only (this Python may lack tarfile's filters).
            members = [m for m in archive.getmembers() if m.name.startswith("package/dist/")
                       and (m.isfile() or m.isdir()) and ".." not in m.name.split("/")]
            archive.extractall(work, members=members)
        dist = work / "package" / "dist"
        for name in DROPPED:
            path = dist / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        rewrite_for_sub_path(dist)
        precompress(dist)
        if target.exists():  # a leftover without index.html: an interrupted earlier run
            shutil.rmtree(target)
        dist.rename(target)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ehr_stack.ohif", description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=None, help="default: $EHR_OHIF_DIR or var/ohif/<version>")
    args = parser.parse_args(argv)
    target = (args.target or viewer_dir()).resolve()
    try:
        installed = install(target)
    except (PrepareError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"OHIF viewer not installed: {exc}") from None
    if installed:
        print(f"OHIF viewer {OHIF_VERSION} prepared for {SUB_PATH} in {target}")
    elif added := precompress(target):  # an install from before the variants
        print(f"OHIF viewer: {added} gzip variants added in {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
