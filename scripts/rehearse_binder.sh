#!/usr/bin/env bash
# Rehearse the Binder build without Binder: a fresh Python 3.11 venv with binder/environment.yml's packages
# (pip's CPU torch standing in for conda's pytorch-cpu), then binder/postBuild, then every notebook through
# binder/start, as Binder runs them (smoke mode on the tiny model, widget display).
# usage: bash scripts/rehearse_binder.sh [VENV_DIR]   (default /tmp/nbkit-binder-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-/tmp/nbkit-binder-venv}
python3.11 -m venv "$venv"
. "$venv/bin/activate"
pip install -q "torch==2.13.0" pyyaml
mapfile -t pkgs < <(python - <<'PY'
import yaml
env = yaml.safe_load(open("binder/environment.yml"))
for dep in env["dependencies"]:
    if isinstance(dep, dict):
        print("\n".join(dep["pip"]))
PY
)
pip install -q "${pkgs[@]}" ipykernel
bash binder/postBuild
mkdir -p out/binder
for nb in 8gb 16gb 24gb h100; do
  start=$(date +%s)
  bash binder/start python -m papermill "notebooks/$nb.ipynb" "out/binder/$nb.ipynb" --log-output > "out/binder/$nb.log" 2>&1
  echo "$nb: ran in $(( $(date +%s) - start )) s"
done
