"""Tune chain-linking thresholds on simulated maps of the validation split.

    .venv/bin/python benchmarks/tune_postprocess.py    # prints, writes benchmarks/tuning.md

CNN nodes and the GNN prediction are computed once per map with the shipped weights;
then ``build_models`` runs for each (max peptide bond, edge probability threshold) pair
and the unpruned/pruned models are evaluated against the simulated map's own structure.
Only validation maps are used, never the real maps or the test split.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BONDS = (2.5, 3.0)
EDGE_THRESHOLDS = (0.3, 0.5)
MIN_UNPRUNED = (1, 3)
RESOLUTIONS = (2.5, 3.0, 3.5, 4.0)


def main() -> int:
    from chimerax.modelangelo.config import Config
    from chimerax.modelangelo.evaluate import evaluate_models
    from chimerax.modelangelo.inference import pick_peaks, predict_ca
    from chimerax.modelangelo.mapio import normalise
    from chimerax.modelangelo.model.loading import load_cnn, load_gnn
    from chimerax.modelangelo.postprocess import build_models
    from chimerax.modelangelo.sequences import SequenceRecord
    from chimerax.modelangelo.training.simulate import load_training_protein, simulate_map
    from chimerax.modelangelo.training.splits import load_split
    from chimerax.modelangelo.training.train_cnn import local_protein

    torch.set_num_threads(1)
    cfg = Config()
    cpu = torch.device("cpu")
    cnn, cnn_cfg, _ = load_cnn(cpu)
    loaded = load_gnn(cpu)
    if loaded is None:
        print("no GNN weights shipped", file=sys.stderr)
        return 1
    gnn, _ = loaded
    rng = np.random.default_rng(77)
    names = load_split("val")
    cases = []
    for res in RESOLUTIONS:
        protein = load_training_protein(names[int(rng.integers(len(names)))])
        sub = local_protein(protein, protein.ca[int(rng.integers(len(protein)))], 30.0)
        sim = simulate_map(sub, rng, cfg.simulation, resolution=res)
        grid = normalise(sim.grid)
        nodes, _ = pick_peaks(predict_ca(cnn, grid, cnn_cfg, device=cpu), cnn_cfg)
        seqs = [SequenceRecord(f"s{i}", s) for i, s in enumerate(protein.chain_sequences().values())]
        pred = gnn.predict_map(nodes, grid, seqs, device=cpu)
        cases.append((res, sim.protein, seqs, pred))
        print(f"{res} A: {len(sim.protein)} residues, {len(nodes)} nodes", file=sys.stderr)
    rows = []
    for bond, edge, min_len in itertools.product(BONDS, EDGE_THRESHOLDS, MIN_UNPRUNED):
        pc = dataclasses.replace(cfg.postprocess, max_peptide_bond=bond, edge_prob_threshold=edge,
                                 unpruned_min_chain_length=min_len)
        figs = []
        for _, target, seqs, pred in cases:
            built = build_models(pred, seqs, pc)
            u = evaluate_models(built.unpruned, target) if len(built.unpruned) else None
            p = evaluate_models(built.pruned, target) if built.pruned is not None and len(
                built.pruned) else None
            figs.append((u.residue_recall if u else 0.0, u.precision if u else 0.0,
                         p.sequence_recall if p else 0.0))
        m = np.mean(figs, axis=0)
        rows.append({"max_peptide_bond": bond, "edge_prob_threshold": edge,
                     "unpruned_min_chain_length": min_len,
                     "unpruned_recall": float(m[0]), "unpruned_precision": float(m[1]),
                     "pruned_sequence_recall": float(m[2])})
        print(json.dumps(rows[-1]), file=sys.stderr)
    md = [f"# Chain-linking thresholds on simulated validation maps ({time.strftime('%Y-%m-%d')})",
          "", f"{len(cases)} maps at {', '.join(map(str, RESOLUTIONS))} A (val split, 30 A "
          "zones), shipped CNN and GNN weights.", "",
          "| max C-N (A) | edge p threshold | shortest unpruned chain | unpruned recall | "
          "unpruned precision | pruned sequence recall |", "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['max_peptide_bond']} | {r['edge_prob_threshold']} | "
                  f"{r['unpruned_min_chain_length']} | "
                  f"{100 * r['unpruned_recall']:.1f} | {100 * r['unpruned_precision']:.1f} | "
                  f"{100 * r['pruned_sequence_recall']:.1f} |")
    (REPO / "benchmarks" / "tuning.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
