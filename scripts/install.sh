#!/usr/bin/env bash
# Installs what is missing, and nothing else: the Debian packages (Orthanc and its plugins, dcmtk,
# PostgreSQL if absent) and the project's virtual environment. Safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${EHR_VENV:-.venv}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# chromium: the browser end-to-end tests drive (Debian's build; no browser download at test time).
# orthanc-gdcm: GDCM's decoder, so that Orthanc renders JPEG 2000 and palette-colour images (README "Rendering").
packages=(orthanc orthanc-python orthanc-dicomweb orthanc-postgresql orthanc-gdcm dcmtk chromium)
missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PostgreSQL refuses to run as root: the stack runs it as the postgres user.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

# Orthanc embeds Debian's Python 3.11: the venv must be a 3.11 so that compiled wheels load there.
pick_python() {
  for candidate in /usr/bin/python3.11 python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "no CPython 3.11 with venv found (apt-get install python3.11-venv)" >&2; return 1
}

stamp="$VENV/.requirements.sha256"
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python=$(pick_python)
  echo "preparing the virtual environment $VENV with $python"
  "$python" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  "$VENV/bin/python" -c 'import pydicom, sqlalchemy, psycopg, jwt, pytest' # fail loudly if pip did
  echo "$want" > "$stamp"
fi

# Playwright (library only) for the browser tests, pinned by tests/e2e/package-lock.json.
if [ ! -d tests/e2e/node_modules/playwright-core ]; then
  if ! command -v npm >/dev/null; then
    echo "npm not found: install Node.js (apt-get install nodejs npm) for the browser tests" >&2; exit 1
  fi
  (cd tests/e2e && npm ci --no-audit --no-fund --silent)
fi

# The OHIF viewer the plugin serves under /ohif/: the pinned @ohif/app from the npm registry, checked
# and prepared for the sub-path (scripts/ehr_stack/ohif.py); skipped when already in var/ohif/.
PYTHONPATH=scripts "$VENV/bin/python" -m ehr_stack.ohif
