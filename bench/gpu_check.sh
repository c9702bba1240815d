#!/usr/bin/env bash
# The GPU day's check, one script, within 8 minutes on a machine with one CUDA GPU: trainer images/s
# in fp32 and AMP against the CPU's, the trainer pool's per-trial overhead with a real CUDA context,
# and the demo sweep with 4 trials training on the GPU, with its wall time (bench/gpu_check.py).
#
#   bench/gpu_check.sh                  # on the GPU machine (the device tool: carry [".gpu-site"])
#   bench/gpu_check.sh --device cpu --quick   # every part in seconds on a CPU (what the slow test runs)
#
# Each part runs under its own hard limit (seconds; override with the variables): images/s
# GPU_CHECK_IMAGES_S=90, pool overhead GPU_CHECK_POOL_S=120, sweep GPU_CHECK_SWEEP_S=240. Parts print
# their figures as they come and add them to $OUT/gpu_check.json (runs/gpu-check/ without OUT), so a
# part cut off at its limit still leaves what it measured. Python: the project's .venv where it
# imports torch, else the machine's python3 (the GPU image's holds torch). Packages that Python lacks
# come from .gpu-site/site.tar.xz where present (bench/gpu_site.sh packs it); the preflight names any
# still missing, and a part that cannot run is skipped with that reason instead of failing.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
device=cuda
quick=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --device) device=${2:?--device cuda or cpu}; shift 2 ;;
    --quick) quick=(--quick); shift ;;
    *) echo "usage: bench/gpu_check.sh [--device cuda|cpu] [--quick]" >&2; exit 2 ;;
  esac
done
images_s=${GPU_CHECK_IMAGES_S:-90}
pool_s=${GPU_CHECK_POOL_S:-120}
sweep_s=${GPU_CHECK_SWEEP_S:-240}
out=${OUT:-runs/gpu-check}
json=$out/gpu_check.json
mkdir -p "$out" && rm -f "$json"
started=$SECONDS
export PYTHONUNBUFFERED=1

py=
for candidate in .venv/bin/python python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' 2>/dev/null; then py=$candidate; break; fi
done
if [[ -z $py ]]; then
  echo "[gpu-check] no Python here imports torch:"
  for candidate in .venv/bin/python python3; do
    printf '  %s: ' "$candidate"; "$candidate" -c 'import sys, torch' 2>&1 | tail -1 || echo "not found"
  done
  exit 3
fi
echo "[gpu-check] $py: $("$py" -c 'import sys; print(sys.version.split()[0], sys.executable)')"

# The packed packages are built for Python 3.12 (the GPU image's); a Python with all it needs skips them.
needs='import ray, mlflow, optuna, pydantic, pycocotools, onnxslim'
if [[ -f .gpu-site/site.tar.xz ]] && ! "$py" -c "$needs" 2>/dev/null &&
   "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  site=/tmp/edgesweep-gpu-site
  if [[ ! -f $site/.unpacked || .gpu-site/site.tar.xz -nt $site/.unpacked ]]; then
    rm -rf "$site" && mkdir -p "$site"
    t0=$SECONDS
    tar -xJf .gpu-site/site.tar.xz -C "$site" && touch "$site/.unpacked"
    echo "[gpu-check] unpacked .gpu-site/site.tar.xz into $site in $((SECONDS - t0)) s"
  fi
  # Only packages the image lacks are in it, so it may go first on the path.
  export PYTHONPATH=$PWD:$site${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  [[ -f .gpu-site/site.tar.xz ]] || echo "[gpu-check] no .gpu-site/site.tar.xz (bench/gpu_site.sh packs it)"
  echo "[gpu-check] using $py's own packages"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

echo "== preflight"
"$py" bench/gpu_check.py preflight --json "$json"

summary=()
run_part() {  # name, hard limit in seconds, extra arguments
  local name=$1 limit=$2 t0=$SECONDS status rc
  shift 2
  echo "== $name (at most $limit s)"
  timeout --signal=TERM --kill-after=20 "$limit" \
    "$py" bench/gpu_check.py "$name" --device "$device" --json "$json" "${quick[@]}" "$@"
  rc=$?
  case $rc in
    0) status=done ;;
    3) status="skipped (see above)" ;;
    124 | 137) status="cut off at its limit: its figures so far are in the JSON" ;;
    *) status="failed (exit $rc)" ;;
  esac
  summary+=("$(printf '%-18s %-58s %4d s' "$name" "$status" $((SECONDS - t0)))")
}
run_part images-per-second "$images_s"
run_part pool-overhead "$pool_s" --budget $((pool_s * 2 / 3))
run_part sweep "$sweep_s"

echo "== summary: $((SECONDS - started)) s in all, device $device"
printf '  %s\n' "${summary[@]}"
echo "  figures: $json"
