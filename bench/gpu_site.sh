#!/usr/bin/env bash
# Packs the Python packages that the lent GPU machines' image lacks (bench/gpu_site.txt: Ray, MLflow,
# Optuna, pydantic, pycocotools, ... for Python 3.12 on x86_64) into .gpu-site/site.tar.xz, which
# bench/gpu_check.sh unpacks there. That machine reaches no registry, and what travels with the
# working tree is 64 MiB in all, so the wheels are installed here into a folder, the parts a
# Python-only local Ray and a local MLflow store never load are cut (Ray's Java jars and dashboard
# build, MLflow's web UI: 70 MB of 430), and the rest is packed with xz (about 49 MB).
#
#   bench/gpu_site.sh            # here, with the registry reachable: about 2 minutes, then carry .gpu-site
#
# .gpu-site/ is ignored through .git/info/exclude (this script adds it), so it travels only when named
# in the device tool's `carry`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dest=.gpu-site
list=bench/gpu_site.txt
py=python3; [[ -x .venv/bin/python ]] && py=.venv/bin/python
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
target=(--python-version 3.12 --implementation cp --only-binary=:all: "${platforms[@]}")

grep -qxF "/$dest/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/$dest/" >>.git/info/exclude; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "[gpu-site] downloading the wheels of $list (cp312, manylinux x86_64)"
"$py" -m pip download -q --no-deps "${target[@]}" -d "$work/wheels" -r "$list"
echo "[gpu-site] installing them into a folder for Python 3.12"
"$py" -m pip install -q --no-deps --no-compile --no-index --find-links "$work/wheels" --target "$work/site" \
  "${target[@]}" -r "$list"
# Never loaded here: Java workers, the dashboard's web build, MLflow's web UI, console scripts, Jupyter extensions.
rm -rf "$work/site/ray/jars" "$work/site/ray/dashboard/client/build" "$work/site/mlflow/server/js" \
  "$work/site/bin" "$work/site/share"
mkdir -p "$dest"
echo "[gpu-site] packing $(du -sh "$work/site" | cut -f1) with xz"
XZ_OPT=${XZ_OPT:--6} tar -cJf "$dest/site.tar.xz.part" -C "$work/site" .
mv "$dest/site.tar.xz.part" "$dest/site.tar.xz"
size=$(stat -c %s "$dest/site.tar.xz")
echo "[gpu-site] $dest/site.tar.xz: $((size / 1048576)) MiB; with the working tree it must stay under 64 MiB"
echo "[gpu-site] on the GPU machine: bench/gpu_check.sh (the device tool's carry: [\"$dest\"])"
