"""Orthanc's own HTTPS on Debian bookworm needs a two-line OpenSSL 3 shim; this builds it.

Orthanc 1.10.1 serves HTTP with Debian's civetweb 1.15, which loads OpenSSL at run time
(``dlopen("libssl.so")``, ``dlopen("libcrypto.so")``) and looks up ``SSL_get_peer_certificate``. OpenSSL 3
no longer exports that name (it became a macro for ``SSL_get1_peer_certificate``, the same function), so
with ``SslEnabled`` the first HTTPS request calls a null pointer and Orthanc dies with SIGSEGV (checked
here: ``gdb`` shows a civetweb worker jumping to address 0). The fix: a folder on Orthanc's
``LD_LIBRARY_PATH`` holding a ``libssl.so`` that exports the old name and depends on the real
``libssl.so.3`` (civetweb's look-ups through it find every other function there), and ``libcrypto.so``
pointing at ``libcrypto.so.3`` (the unversioned names also come only from ``libssl-dev`` otherwise).
The Docker image builds the same folder (docker/Dockerfile); README "HTTPS" explains it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = """\
/* civetweb 1.15 looks this name up; OpenSSL 3 calls it SSL_get1_peer_certificate (same semantics). */
typedef struct ssl_st SSL;
typedef struct x509_st X509;
X509 *SSL_get1_peer_certificate(const SSL *s);
X509 *SSL_get_peer_certificate(const SSL *s) { return SSL_get1_peer_certificate(s); }
"""
LIBCRYPTO = Path("/usr/lib/x86_64-linux-gnu/libcrypto.so.3")


def compat_dir(folder: Path) -> Path:
    """The folder to put on Orthanc's ``LD_LIBRARY_PATH`` (built once; needs a C compiler)."""
    library = folder / "libssl.so"
    if library.exists() and (folder / "libcrypto.so").exists():
        return folder
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("EHR_TLS=1 needs a C compiler (cc) once, to build Orthanc's OpenSSL 3 shim "
                           "(README \"HTTPS\")")
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    source = folder / "ssl_compat.c"
    source.write_text(SOURCE)
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(source),
                    "-Wl,--no-as-needed", "-l:libssl.so.3"], check=True, capture_output=True, text=True)
    crypto = folder / "libcrypto.so"
    crypto.unlink(missing_ok=True)
    crypto.symlink_to(_libcrypto())
    return folder


def _libcrypto() -> Path:
    for candidate in (LIBCRYPTO, Path("/lib/x86_64-linux-gnu/libcrypto.so.3"), Path("/usr/lib/libcrypto.so.3")):
        if candidate.exists():
            return candidate
    raise RuntimeError("libcrypto.so.3 (OpenSSL 3) not found")


if __name__ == "__main__":  # the Docker image: python3 -m ehr_stack.civetweb_tls <folder>
    import sys

    print(compat_dir(Path(sys.argv[1])))
