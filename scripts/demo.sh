#!/usr/bin/env bash
# Set up Pulmo and start the web platform with demo content, on this machine:
#   - installs what `pulmo serve` needs into .venv (no system packages, no browser, nothing else);
#   - starts `pulmo serve --demo` on http://127.0.0.1:8000 with its data in ./pulmo-data: the first
#     start makes synthetic chest CTs (Pulmo's own phantom, marked SYNTHETIC everywhere) and three
#     made-up patients, and prints how to sign in (user admin; the password is $PULMO_ADMIN_PASSWORD,
#     or generated and printed once).
# Extra arguments go to `pulmo serve` (e.g. --port 8080, --host 0.0.0.0, --workers 2).
# Triage from the command line with the published model: scripts/triage_demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PULMO_SKIP_APT=${PULMO_SKIP_APT:-1} PULMO_EXTRAS=${PULMO_EXTRAS:-} bash scripts/setup.sh
. .venv/bin/activate
exec pulmo serve --demo --data-dir "${PULMO_DATA_DIR:-pulmo-data}" "$@"
