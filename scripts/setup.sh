#!/usr/bin/env bash
# Sets up the Python environment EdgeSweep runs in; safe to run again (it skips what is done).
#
# - Inside an active virtualenv/conda env it installs there (so a GPU user's CUDA torch is kept);
#   otherwise it creates ./.venv.
# - With no torch present it installs the CPU wheel torch==2.13.0 first: an unpinned torch pulls a
#   multi-GB CUDA build from the registry.
# - TFLite conversion (litert-torch) has x86_64 wheels only; elsewhere that extra is skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]]; then
  py=python
else
  [[ -x .venv/bin/python ]] || "${PYTHON:-python3}" -m venv .venv
  py=.venv/bin/python
fi

extras="train,dev"
[[ "$(uname -m)" == "x86_64" ]] && extras+=",tflite"
stamp=".venv-installed.$(cat pyproject.toml | sha256sum | cut -c1-12).$extras"
if [[ -f "$stamp" ]] && "$py" -c "import torch, ray, mlflow, optuna" 2>/dev/null; then
  exit 0
fi

echo "[setup] installing EdgeSweep into $("$py" -c 'import sys; print(sys.prefix)') (extras: $extras)"
"$py" -m pip install --quiet --upgrade pip
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "[setup] no torch found: installing the CPU wheel torch==2.13.0"
  "$py" -m pip install --quiet "torch==2.13.0"
else
  echo "[setup] keeping the installed torch $("$py" -c 'import torch; print(torch.__version__)')"
fi
"$py" -m pip install --quiet -e ".[$extras]"
rm -f .venv-installed.*
touch "$stamp"
echo "[setup] done"
