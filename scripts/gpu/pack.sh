#!/bin/bash
# Pack what a GNN training run needs on a lent GPU machine into .gpu/ (git-ignored).
#
#   scripts/gpu/pack.sh RUN_DIR        # e.g. checkpoints/gnn6
#
# .gpu/start.pt         the run's state with its weight average as the weights and a fresh
#                       optimiser (a full checkpoint is too big to send: 64 MiB per call)
# .gpu/structures.tar.xz  the train and val split structures, uncompressed mmCIF in xz
# .gpu/wheels/          gemmi, mrcfile, fair-esm, pyhmmer for that machine's Python 3.12
# The GPU side is scripts/gpu/train.sh; bring the state back with scripts/gpu/assemble.py.
# DEVELOPING.md ("Training on a lent GPU") has the whole recipe.
set -euo pipefail
RUN_DIR=${1:?usage: scripts/gpu/pack.sh RUN_DIR}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${MODELANGELO_DATA:-$REPO/../shared/data}
PY=$REPO/.venv/bin/python
OUT=$REPO/.gpu
mkdir -p "$OUT/wheels"
grep -qx '/.gpu/' "$REPO/.gitignore" || { echo "add /.gpu/ to .gitignore first" >&2; exit 1; }

"$PY" "$REPO/scripts/gpu/assemble.py" --slim "$RUN_DIR" "$OUT/start.pt"

if [ ! -s "$OUT/structures.tar.xz" ]; then
  tmp=$(mktemp -d)
  mkdir "$tmp/s"
  for name in $(grep -hv '^#' "$REPO"/src/training/splits/{train,val}.txt); do
    zcat "$DATA/structures/$name.cif.gz" > "$tmp/s/$name.cif"
  done
  tar cf - -C "$tmp" s | xz -9 -T0 > "$OUT/structures.tar.xz"
  rm -rf "$tmp"
fi

"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$OUT/wheels" \
  gemmi==0.7.5 mrcfile==1.5.4 fair-esm==2.0.0 pyhmmer==0.12.3
du -sh "$OUT"/*
