#!/usr/bin/env bash
# Sets up the Python environment EdgeSweep runs in; safe to run again (it skips what is done).
#
# - Inside an active virtualenv/conda env it installs there (so a GPU user's CUDA torch is kept);
#   otherwise it creates ./.venv.
# - With no torch present it installs torch==2.13.0 first. Where a CPU wheel of that version is
#   offered (the machines this project is developed on), that is what pip takes; from the public
#   PyPI on Linux x86_64 the same pin is the CUDA build (several GB). CPU-only machines elsewhere:
#   EDGESWEEP_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu ./scripts/setup.sh
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
  if [[ -n "${EDGESWEEP_TORCH_INDEX_URL:-}" ]]; then
    echo "[setup] no torch found: installing torch==2.13.0 from $EDGESWEEP_TORCH_INDEX_URL"
    "$py" -m pip install --quiet "torch==2.13.0" --index-url "$EDGESWEEP_TORCH_INDEX_URL"
  else
    echo "[setup] no torch found: installing torch==2.13.0 (a CPU wheel where one is offered, see above)"
    "$py" -m pip install --quiet "torch==2.13.0"
  fi
else
  echo "[setup] keeping the installed torch $("$py" -c 'import torch; print(torch.__version__)')"
fi
"$py" -m pip install --quiet -e ".[$extras]"
rm -f .venv-installed.*
touch "$stamp"
echo "[setup] done"
