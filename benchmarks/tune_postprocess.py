"""Tune chain-linking and pruning thresholds on simulated maps of the validation split.

    .venv/bin/python benchmarks/tune_postprocess.py    # prints, writes benchmarks/tuning.md
    .venv/bin/python benchmarks/tune_postprocess.py --peaks 0.1 0.05 --maps-per-resolution 5
                                                       # whole builds per CNN peak threshold

CNN nodes and the GNN prediction are computed once per map with the shipped weights;
then ``build_models`` runs for every combination in :data:`GRID` (``PostprocessConfig``
fields) and the unpruned/pruned models are evaluated against the simulated map's own
structure. Only validation maps are used, never the real maps or the test split.
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
# PostprocessConfig field -> values tried (all combinations)
# The grid of 2026-11-24 (max_peptide_bond 2.5/3.0, unpruned_min_chain_length 1/3,
# hmm_evalue 1e-3/1e-2, prune_min_aligned_fraction 0.3/0.5, prune_min_identity 0/0.3) chose
# 2.5, 1, 1e-2, 0.5 and 0 (git history of tuning.md); this one tunes gap filling. Tried
# once on top of it (2026-11-25, not kept): leaving nodes below a confidence of 10-60 out
# of linking, and edge_cost_weight 0.5/1/2, moved pruned sequence recall by at most
# 0.3 points (60: -1.4), so neither is a setting. Tried 2026-11-25 (session 6, step-12,900
# weights, same 8 maps): hmm_prob_weight (0.3,0.7)/(0.5,0.9)/(0.7,1.0)/(0.9,0.9) x
# hmm_gap_open 0.01/0.02/0.05 gave pruned sequence recall 55.2-58.9 % (current 58.1 %),
# precision 99.8-99.9 %: within the noise of 8 maps, settings unchanged.
GRID: dict[str, tuple] = {
    "hmm_evalue": (1e-3, 1e-2),
    "gap_fill_evalue": (0.0, 1e-2, 0.1, 1.0),  # 0: gap filling off
    "reach_slack": (2.0, 4.0),
    "reach_max_separation": (15, 30, 60),
}
HEADERS = {"max_peptide_bond": "max C-N (A)", "unpruned_min_chain_length": "shortest unpruned chain",
           "hmm_evalue": "HMM E-value", "prune_min_aligned_fraction": "min aligned fraction",
           "prune_min_identity": "min identity", "gap_fill_evalue": "gap-fill E-value",
           "reach_slack": "reach slack (A)", "reach_max_separation": "reach max separation"}
RESOLUTIONS = (2.5, 3.0, 3.5, 4.0)


def make_cases(cnn, cnn_cfg, n_per_resolution: int, cfg) -> list[tuple]:
    """``(resolution, structure, sequences, normalised grid, CA prediction)`` per map:
    ``n_per_resolution`` 30 A zones of validation-split structures at each resolution
    (the first two per resolution are the same whatever the count)."""
    from chimerax.modelangelo.inference import predict_ca
    from chimerax.modelangelo.mapio import normalise
    from chimerax.modelangelo.sequences import SequenceRecord
    from chimerax.modelangelo.training.simulate import load_training_protein, simulate_map
    from chimerax.modelangelo.training.splits import load_split
    from chimerax.modelangelo.training.train_cnn import local_protein

    rng = np.random.default_rng(77)
    names = load_split("val")
    cases = []
    for res in RESOLUTIONS * n_per_resolution:
        protein = load_training_protein(names[int(rng.integers(len(names)))])
        sub = local_protein(protein, protein.ca[int(rng.integers(len(protein)))], 30.0)
        sim = simulate_map(sub, rng, cfg.simulation, resolution=res)
        grid = normalise(sim.grid)
        seqs = [SequenceRecord(f"s{i}", s) for i, s in enumerate(protein.chain_sequences().values())]
        cases.append((res, sim.protein, seqs, grid, predict_ca(cnn, grid, cnn_cfg,
                                                                device=torch.device("cpu"))))
        print(f"{res} A: {len(sim.protein)} residues", file=sys.stderr)
    return cases


def model_figures(built, target) -> tuple[float, float, float, float, float]:
    """(unpruned recall, unpruned precision, pruned sequence recall, pruned precision,
    pruned recall) of one build against the map's own structure."""
    from chimerax.modelangelo.evaluate import evaluate_models

    u = evaluate_models(built.unpruned, target) if len(built.unpruned) else None
    p = evaluate_models(built.pruned, target) if built.pruned is not None and len(
        built.pruned) else None
    return (u.residue_recall if u else 0.0, u.precision if u else 0.0,
            p.sequence_recall if p else 0.0, (p.precision or 0.0) if p else 1.0,
            p.residue_recall if p else 0.0)


FIGURES = ("unpruned_recall", "unpruned_precision", "pruned_sequence_recall",
           "pruned_precision", "pruned_recall")
FIGURE_COLUMNS = (" | unpruned recall | unpruned precision | pruned recall | pruned sequence "
                  "recall | pruned precision |")


def figure_cells(r: dict) -> str:
    return (f"{100 * r['unpruned_recall']:.1f} | {100 * r['unpruned_precision']:.1f} | "
            f"{100 * r['pruned_recall']:.1f} | {100 * r['pruned_sequence_recall']:.1f} | "
            f"{100 * r['pruned_precision']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    import argparse

    from chimerax.modelangelo.config import Config
    from chimerax.modelangelo.inference import pick_peaks
    from chimerax.modelangelo.model.loading import load_cnn, load_gnn
    from chimerax.modelangelo.postprocess import build_models

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peaks", type=float, nargs="+", metavar="THRESHOLD",
                    help="instead of the post-processing grid, build whole models with the "
                         "CNN's peaks at each of these thresholds (benchmarks/tuning_peaks.md)")
    ap.add_argument("--maps-per-resolution", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    cfg = Config()
    cpu = torch.device("cpu")
    cnn, cnn_cfg, _ = load_cnn(cpu)
    loaded = load_gnn(cpu)
    if loaded is None:
        print("no GNN weights shipped", file=sys.stderr)
        return 1
    gnn, _ = loaded
    cases = make_cases(cnn, cnn_cfg, args.maps_per_resolution, cfg)
    head = (f"{len(cases)} maps at {', '.join(map(str, RESOLUTIONS))} A (val split, 30 A zones), "
            "shipped CNN and GNN weights")
    rows = []
    if args.peaks:
        for thr in args.peaks:
            peak_cfg = dataclasses.replace(cnn_cfg, peak_threshold=thr)
            figs, n_nodes = [], 0
            for _, target, seqs, grid, ca_pred in cases:
                nodes, _ = pick_peaks(ca_pred, peak_cfg)
                n_nodes += len(nodes)
                pred = gnn.predict_map(nodes, grid, seqs, device=cpu)
                figs.append(model_figures(build_models(pred, seqs, cfg.postprocess), target))
            rows.append({"peak_threshold": thr, "nodes": n_nodes,
                         **dict(zip(FIGURES, map(float, np.mean(figs, axis=0))))})
            print(json.dumps(rows[-1]), file=sys.stderr)
        md = [f"# CNN peak threshold by whole builds on simulated validation maps "
              f"({time.strftime('%Y-%m-%d')})", "",
              f"{head} (shipped peak threshold {cnn_cfg.peak_threshold:g}, minimum distance "
              f"{cnn_cfg.peak_min_distance:g} A); post-processing as in `PostprocessConfig`.", "",
              "| peak threshold | nodes" + FIGURE_COLUMNS, "|" + "---|" * 7]
        md += [f"| {r['peak_threshold']:g} | {r['nodes']} | " + figure_cells(r) for r in rows]
        out = REPO / "benchmarks" / "tuning_peaks.md"
    else:
        preds = []
        for _, _, seqs, grid, ca_pred in cases:
            nodes, _ = pick_peaks(ca_pred, cnn_cfg)
            preds.append(gnn.predict_map(nodes, grid, seqs, device=cpu))
        for values in itertools.product(*GRID.values()):
            settings = dict(zip(GRID, values))
            pc = dataclasses.replace(cfg.postprocess, **settings)
            figs = [model_figures(build_models(pred, seqs, pc), target)
                    for (_, target, seqs, _, _), pred in zip(cases, preds)]
            rows.append({**settings, **dict(zip(FIGURES, map(float, np.mean(figs, axis=0))))})
            print(json.dumps(rows[-1]), file=sys.stderr)
        md = [f"# Post-processing thresholds on simulated validation maps ({time.strftime('%Y-%m-%d')})",
              "", f"{head}; other settings as in `PostprocessConfig`.", "",
              "| " + " | ".join(HEADERS[k] for k in GRID) + FIGURE_COLUMNS,
              "|" + "---|" * (len(GRID) + 5)]
        md += ["| " + " | ".join(f"{r[k]:g}" for k in GRID) + " | " + figure_cells(r) for r in rows]
        out = REPO / "benchmarks" / "tuning.md"
    out.write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
