#!/bin/bash
# GPU side of scripts/gpu/pack.sh: resume a GNN run in runs/gpu (kept while the machine
# stays warm; otherwise started from .gpu/start.pt), train MINUTES, then write the state
# in pieces under $OUT (the device tool returns files of at most 16 MiB).
#
#   bash scripts/gpu/train.sh MINUTES [more train-gnn options, e.g. --lr 1.5e-5]
set -euo pipefail
MIN=${1:?usage: train.sh MINUTES [train-gnn options]}; shift
OUTDIR=${OUT:-/tmp/gpu_out}
mkdir -p "$OUTDIR"
T0=$(date +%s)
if [ ! -e /tmp/site/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target /tmp/site .gpu/wheels/*.whl
  mkdir -p /tmp/site/chimerax && ln -sfn "$PWD/src" /tmp/site/chimerax/modelangelo
  touch /tmp/site/.done
fi
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
if [ ! -e /tmp/data/.done ]; then
  mkdir -p /tmp/data/structures
  tar xJf .gpu/structures.tar.xz -C /tmp/data
  find /tmp/data/s -name '*.cif' -print0 | xargs -0 -P 16 -n 8 gzip -1
  mv /tmp/data/s/*.cif.gz /tmp/data/structures/
  touch /tmp/data/.done
fi
echo "set-up $(( $(date +%s) - T0 )) s, $(ls /tmp/data/structures | wc -l) structures"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
mkdir -p runs/gpu
[ -e runs/gpu/checkpoint.pt ] || cp .gpu/start.pt runs/gpu/checkpoint.pt
# Later options override these (argparse keeps the last).
python3 -m chimerax.modelangelo train-gnn --run-dir runs/gpu --device cuda --threads 4 \
  --data-workers 15 --steps 1000000 --minutes "$MIN" --validate-every 1000 \
  --checkpoint-every 500 --val-maps 16 --cnn-nodes-prob 0.4 --cnn-like-prob 0.3 --lr 5e-5 --ema-decay 0.999 \
  --data-root /tmp/data "$@" 2>&1 | tee -a runs/gpu/train.out | grep -v '^{"step"' || true
python3 scripts/gpu/assemble.py --split runs/gpu/checkpoint.pt "$OUTDIR"
cp runs/gpu/log.jsonl runs/gpu/commands.txt "$OUTDIR"/ 2>/dev/null || true
echo "total $(( $(date +%s) - T0 )) s"
