#!/usr/bin/env bash
# Sets everything up (./scripts/setup.sh) and runs the demo sweep on the embedded default data set:
# synthetic COCO-format data, CPU training, the local machine as an emulated board.
# Run again, it finishes an interrupted demo (or just prints the finished one's report).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
py=python; [[ -z "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]] && py=.venv/bin/python
resume=()
if [[ -d runs/sweeps/kd-demo/tune ]]; then
  echo "[demo] runs/sweeps/kd-demo holds an earlier demo: finishing it (rm -r runs/sweeps/kd-demo to start over)"
  resume=(--resume)
fi
exec "$py" -m orchestrator sweep examples/kd.yaml "${resume[@]}" "$@"
