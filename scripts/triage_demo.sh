#!/usr/bin/env bash
# Set up Pulmo and run the main job: import the published triage model and score
# the example patients (examples/patients.csv, made up), writing out/triage.csv.
#
# The published model's artefact (models.zip) carries no licence, so Pulmo does not
# ship it: point MODELS_ZIP at your copy (default: ../shared/data/triage/published-2020/models.zip).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS_ZIP=${MODELS_ZIP:-../shared/data/triage/published-2020/models.zip}
PULMO_SKIP_APT=${PULMO_SKIP_APT:-1} PULMO_EXTRAS=${PULMO_EXTRAS:-} bash scripts/setup.sh
. .venv/bin/activate
if [ ! -f "$MODELS_ZIP" ]; then
  echo "demo: the published model archive was not found at $MODELS_ZIP." >&2
  echo "demo: set MODELS_ZIP=/path/to/models.zip (the authors' release) and run again." >&2
  exit 2
fi
mkdir -p out
pulmo triage import-model "$MODELS_ZIP" -o out/published.pulmo-triage
pulmo triage predict examples/patients.csv --model out/published.pulmo-triage --explain -o out/triage.csv
python - <<'PY'
import pandas as pd
df = pd.read_csv("out/triage.csv", keep_default_na=False)
cols = ["patient_id", "prob_critical_5d", "prob_critical_30d", "prob_critical_30d_low",
        "prob_critical_30d_high", "risk_group", "imputed"]
with pd.option_context("display.width", 160, "display.max_columns", 20):
    print(df[cols].to_string(index=False))
print("\nFull results: out/triage.csv")
PY
