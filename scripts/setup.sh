#!/usr/bin/env bash
# Set up everything Pulmo needs on a fresh Debian machine with Python >= 3.11:
#   - system packages for the tests: R with pROC and survival (reference tests of pulmo.stats),
#     dicom3tools (dciodvfy, DICOM validation), postgresql (the platform's store is tested on a
#     real server started on loopback), chromium (end-to-end tests in a real browser, driven by
#     Playwright without downloading a browser), fonts-noto-cjk (Chinese pages in screenshots),
#     poppler-utils (PDF reports to PNG), orthanc + orthanc-dicomweb (the PACS peer of the DICOM tests);
#   - a virtual environment in .venv with Pulmo and its test + training extras;
#   - with the test extra and npm: s3rver (a real S3-compatible server for the tests) under .cache/node,
#     and the OHIF viewer (scripts/build_ohif.sh) under pulmo/web/ohif.
# Safe to run again: it installs only what is missing.
# Set PULMO_SKIP_APT=1 to skip the system packages (tests that need them then skip).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(r-base-core r-cran-proc r-cran-survival dicom3tools postgresql chromium fonts-noto-cjk poppler-utils orthanc orthanc-dicomweb)
if [ "${PULMO_SKIP_APT:-0}" != "1" ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for p in "${apt_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
# PULMO_EXTRAS: the optional parts to install (default "test,train"; empty: what `pulmo` and
# `pulmo serve` need, nothing more).
EXTRAS=${PULMO_EXTRAS-test,train}
if [[ ",$EXTRAS," == *",train,"* ]]; then
  # torch: the CPU build (training extra only; prediction never imports it).
  python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0" \
    || echo "setup: PyTorch could not be installed; training tests will skip."
fi
python -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
if [[ ",$EXTRAS," == *",test,"* ]] && command -v npm >/dev/null 2>&1 && [ ! -x .cache/node/node_modules/.bin/s3rver ]; then
  # s3rver: a real S3-compatible server for the object-storage tests (test tool only, not shipped)
  npm install --silent --no-audit --no-fund --prefix .cache/node s3rver@3.7.1 >/dev/null 2>&1 \
    || echo "setup: s3rver could not be installed; object-storage tests will skip."
fi
if [[ ",$EXTRAS," == *",test,"* ]] && command -v npm >/dev/null 2>&1 && [ ! -f "${PULMO_OHIF_DIR:-pulmo/web/ohif}/index.html" ]; then
  # the OHIF viewer (optional for users; the tests open Pulmo's studies in it): pinned npm package, checked
  bash scripts/build_ohif.sh >/dev/null 2>&1 || echo "setup: the OHIF viewer could not be installed; its tests will skip."
fi
echo "setup: done (activate with: . .venv/bin/activate)"
