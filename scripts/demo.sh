#!/usr/bin/env bash
# Sets everything up (./scripts/setup.sh) and runs the demo sweep on the embedded default data set:
# synthetic COCO-format data, CPU training, the local machine as an emulated board.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
py=python; [[ -z "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]] && py=.venv/bin/python
exec "$py" -m orchestrator sweep examples/kd.yaml "$@"
