"""Speed and memory of the two networks on synthetic inputs of fixed size (shipped weights).

    .venv/bin/python benchmarks/speed.py      # prints and writes benchmarks/speed.md

* CNN: a 200^3-voxel map at 1.5 A (target: under 60 s on 2 CPU cores; memory bounded
  by tile batching).
* GNN: 2,000 nodes (target: under 1 s per 100 residues per recycle; peak memory under
  6 GB).
Each measurement runs in its own subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "speed.md"


def cnn_case(edge: int) -> dict:
    import torch

    from chimerax.modelangelo.inference import pick_peaks, predict_ca
    from chimerax.modelangelo.mapio import MapGrid
    from chimerax.modelangelo.model.loading import load_cnn

    rng = np.random.default_rng(0)
    grid = MapGrid(rng.normal(size=(edge,) * 3).astype(np.float32), np.full(3, 1.5), np.zeros(3))
    model, cfg, _ = load_cnn(torch.device("cpu"))
    t0 = time.perf_counter()
    pred = predict_ca(model, grid, cfg, device=torch.device("cpu"))
    pick_peaks(pred, cfg)
    return {"what": f"CNN {edge}^3 voxels", "seconds": round(time.perf_counter() - t0, 1)}


def gnn_case(n_nodes: int) -> dict:
    import torch

    from chimerax.modelangelo.mapio import MapGrid
    from chimerax.modelangelo.model.loading import load_gnn
    from chimerax.modelangelo.training.simulate import load_training_protein

    loaded = load_gnn(torch.device("cpu"))
    if loaded is None:
        return {"what": f"GNN {n_nodes} nodes", "error": "no GNN weights shipped"}
    model, cfg = loaded
    p = load_training_protein("db55_1A2K_b")
    copies = int(np.ceil(n_nodes / len(p)))
    nodes = np.concatenate([p.ca + np.array([70.0 * i, 0, 0]) for i in range(copies)])[:n_nodes]
    origin = nodes.min(0) - 10
    shape = tuple((np.ceil((nodes.max(0) + 10 - origin) / 1.5).astype(int) + 1)[::-1])
    grid = MapGrid(np.random.default_rng(0).normal(size=shape).astype(np.float32),
                   np.full(3, 1.5), origin)
    seqs = list(p.chain_sequences().values())
    t0 = time.perf_counter()
    model.predict_map(nodes, grid, seqs, device=torch.device("cpu"))
    dt = time.perf_counter() - t0
    passes = cfg.recycles + 1
    return {"what": f"GNN {n_nodes} nodes, {passes} passes", "seconds": round(dt, 1),
            "s_per_100_per_pass": round(dt / (n_nodes / 100) / passes, 3)}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--case":
        import torch

        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
        kind, size = sys.argv[2].split(":")
        res = cnn_case(int(size)) if kind == "cnn" else gnn_case(int(size))
        res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(res))
        return 0
    rows = []
    for case in ("cnn:200", "gnn:2000"):
        proc = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True,
                              text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        rows.append(json.loads(line[-1]) if line else {"what": case, "error": proc.stderr[-300:]})
        print(rows[-1], flush=True)
    from run import machine  # benchmarks/run.py, beside this script

    md = [f"# Speed and memory ({time.strftime('%Y-%m-%d')}, {machine()}, CPU only)", "", "| case | seconds | per 100 residues per pass "
          "| peak RSS (MB) | target |", "|---|---|---|---|---|"]
    targets = {"cnn": "< 60 s", "gnn": "< 1 s per 100 residues per pass, < 6 GB"}
    for r in rows:
        md.append(f"| {r['what']} | {r.get('seconds', r.get('error', '-'))} | "
                  f"{r.get('s_per_100_per_pass', '-')} | {r.get('peak_rss_mb', '-')} | "
                  f"{targets['cnn' if r['what'].startswith('CNN') else 'gnn']} |")
    OUT.write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
