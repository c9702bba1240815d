#!/usr/bin/env bash
# Sets everything up (./scripts/setup.sh) and runs the test suite; extra arguments go to pytest
# (e.g. `./scripts/test.sh -m slow` for the long end-to-end checks).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
py=python; [[ -z "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]] && py=.venv/bin/python
exec "$py" -m pytest "$@"
