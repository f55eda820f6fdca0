"""Benchmark harness: build and evaluate simulated test maps and the real maps.

    .venv/bin/python benchmarks/run.py            # full table -> benchmarks/results.md/.json
    .venv/bin/python benchmarks/run.py --quick    # one small real map, figures printed only
    .venv/bin/python benchmarks/run.py --only db55_1RLB_b@3.0,emd_2566   # these cases, printed only

Each case runs in its own subprocess so its peak memory (max RSS) is its own. Per case it
records: CNN C-alpha detection figures (recall within 2 and 3 A, precision), the built
models' residue recall, sequence recall, precision and backbone RMSD (pruned and
unpruned), GNN residue-type accuracy over matched residues, confidence correlation,
wall time per stage and peak memory. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MODELANGELO_DATA", REPO.parent / "shared" / "data"))
RESULTS_MD = REPO / "benchmarks" / "results.md"
RESULTS_JSON = REPO / "benchmarks" / "results.json"
SIM_RESOLUTIONS = (2.5, 3.0, 3.5, 4.0)
SIM_MAPS_PER_RESOLUTION = 2
# More maps at 3.0 A, where the simulated targets are set: with two, one protein (1EER_b,
# 35.7 % residue types against 47.5 % for its partner) swung the figure. Added after the
# first eight cases, which keep their proteins and seeds (session 8).
SIM_EXTRA_AT_3A = 4
SIM_MAX_RESIDUES = 700
REAL_MAPS = {
    "emd_6272": ("emd_6272.mrc", "3j9s.fasta", "3j9s_deposited.cif", 2.6),
    "emd_2566": ("emd_2566.mrc", "3j6b.fasta", "3j6b_deposited.cif", 3.2),
    "emd_30342": ("emd_30342.mrc", "7cec.fasta", "7cec_deposited.cif", 3.9),
}


def machine() -> str:
    """Architecture, CPU model and CPU count: timings only compare on the same machine."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{platform.machine()}, {model + ', ' if model else ''}{os.cpu_count()} CPUs"


# ----------------------------------------------------------------------------- cases


def real_cases(names=None) -> list[dict]:
    cases = []
    for name, (mrc, fasta, cif, res) in REAL_MAPS.items():
        if names and name not in names:
            continue
        folder = DATA / "real_maps" / name
        cases.append({"kind": "real", "name": name, "map": str(folder / mrc),
                      "fasta": str(folder / fasta), "deposited": str(folder / cif),
                      "resolution": res})
    return cases


def simulated_cases() -> list[dict]:
    from chimerax.modelangelo.training.splits import load_split

    manifest = {e["name"]: e for e in json.loads((DATA / "structures_manifest.json").read_text())}
    names = [n for n in load_split("test") if manifest[n]["n_residues"] <= SIM_MAX_RESIDUES]
    plan = [(res, 1000 + 10 * ri + j) for ri, res in enumerate(SIM_RESOLUTIONS)
            for j in range(SIM_MAPS_PER_RESOLUTION)]
    plan += [(3.0, 1100 + j) for j in range(SIM_EXTRA_AT_3A)]  # (resolution, seed)
    cases = []
    for i, (res, seed) in enumerate(plan):
        name = names[i % len(names)]
        cases.append({"kind": "simulated", "name": f"{name}@{res}", "structure": name,
                      "resolution": res, "seed": seed})
    return cases


# ----------------------------------------------------------------------------- one case


def _real_inputs(case: dict, work: Path):
    from chimerax.modelangelo.mapio import read_map
    from chimerax.modelangelo.protein import load_protein
    from chimerax.modelangelo.sequences import read_fasta

    return read_map(case["map"]), read_fasta(case["fasta"]), load_protein(case["deposited"])


def _simulated_inputs(case: dict, work: Path):
    from chimerax.modelangelo.config import Config
    from chimerax.modelangelo.sequences import SequenceRecord
    from chimerax.modelangelo.training.simulate import load_training_protein, simulate_map

    protein = load_training_protein(case["structure"], DATA)
    rng = np.random.default_rng(case["seed"])
    sim = simulate_map(protein, rng, Config().simulation, resolution=case["resolution"])
    manifest = {e["name"]: e for e in json.loads((DATA / "structures_manifest.json").read_text())}
    seqs = [SequenceRecord(name=f"{case['structure']}_{cid}", sequence=s)
            for cid, s in manifest[case["structure"]]["chains"].items()]
    return sim.grid, seqs, sim.protein


def run_case(case: dict) -> dict:
    """Build one map and evaluate it (runs inside the per-case subprocess)."""
    import torch

    from chimerax.modelangelo.config import Config
    from chimerax.modelangelo.evaluate import evaluate_models, evaluate_points
    from chimerax.modelangelo.inference import pick_peaks, predict_ca
    from chimerax.modelangelo.mapio import interpolate, normalise, resample
    from chimerax.modelangelo.model.loading import load_cnn
    from chimerax.modelangelo.pipeline import run_build
    from chimerax.modelangelo.protein import load_protein

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    cfg = Config()
    out: dict = {"case": case}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        grid, seqs, deposited = (_real_inputs if case["kind"] == "real" else _simulated_inputs)(case, work)
        out["n_deposited"] = len(deposited)
        out["map_voxels"] = list(grid.data.shape)

        # CNN stage on its own, for the detection targets.
        t0 = time.perf_counter()
        g = normalise(resample(grid, voxel_size=cfg.map.voxel_size))
        cnn, cnn_cfg, _ = load_cnn(torch.device("cpu"))
        pred = predict_ca(cnn, g, cnn_cfg, device=torch.device("cpu"))
        points, _ = pick_peaks(pred, cnn_cfg)
        out["cnn_seconds"] = round(time.perf_counter() - t0, 2)
        out["working_voxels"] = list(g.data.shape)
        pe = evaluate_points(points, deposited.ca, radius=3.0)
        out["cnn"] = pe.to_dict()
        # Points away from the deposited model: in density (unmodelled parts) or not.
        from scipy.spatial import cKDTree

        far = cKDTree(deposited.ca).query(points)[0] > 3.0 if len(points) else np.zeros(0, bool)
        level = np.percentile(interpolate(g, deposited.ca), 10)
        in_density = interpolate(g, points[far]) >= level if far.any() else np.zeros(0, bool)
        out["cnn"]["far_points"] = int(far.sum())
        out["cnn"]["far_points_in_density"] = int(in_density.sum())
        out["gnn"] = gnn_figures(g, points, seqs, deposited)

        # Whole build.
        t0 = time.perf_counter()
        result = run_build(grid, seqs, work / "out", "model", device="cpu")
        out["build_seconds"] = round(time.perf_counter() - t0, 2)
        out["stage_seconds"] = result.summary["timings_s"]
        out["warnings"] = result.warnings
        if result.pruned_path is None and seqs:
            # nothing matched a sequence: an empty pruned model recalls nothing
            out["pruned"] = {"n_predicted": 0, "n_matched": 0, "residue_recall": 0.0,
                             "sequence_recall": 0.0, "precision": None}
        for label, path in (("unpruned", result.unpruned_path), ("pruned", result.pruned_path)):
            if path is None:
                continue
            ev = evaluate_models(load_protein(path), deposited)
            out[label] = {k: ev.to_dict()[k] for k in (
                "n_predicted", "n_matched", "residue_recall", "precision", "sequence_recall",
                "sequence_match", "backbone_rmsd", "ca_rmsd", "confidence_correlation")}
        if case["kind"] == "real":
            out["search"] = identification(grid, seqs, work)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def gnn_figures(grid, points, seqs, deposited) -> dict | None:
    """The graph network on the CNN's points (on the map sharpened as ``run_build`` does),
    before any sequence alignment: residue-type
    accuracy (argmax), N/CA/C backbone RMSD and confidence correlation over the nodes
    matched one-to-one to deposited CAs within 3 A."""
    import torch

    from chimerax.modelangelo import residue_constants as rc
    from chimerax.modelangelo.config import Config
    from chimerax.modelangelo.evaluate import match_points, pearson
    from chimerax.modelangelo.model.loading import load_gnn
    from chimerax.modelangelo.pipeline import graph_network_map

    loaded = load_gnn(torch.device("cpu"))
    if loaded is None or len(points) == 0:
        return None
    grid, _ = graph_network_map(grid, Config().map)
    pred = loaded[0].predict_map(points, grid, seqs or None, device=torch.device("cpu"))
    dep_i, node_i, _ = match_points(deposited.ca.astype(np.float64),
                                    pred.translations.astype(np.float64), 3.0)
    if len(dep_i) == 0:
        return None
    known = deposited.aatype[dep_i] < rc.NUM_RESTYPES
    correct = pred.aa_logits[node_i].argmax(-1) == deposited.aatype[dep_i]
    slots = [rc.ATOM_ORDER[a] for a in ("N", "CA", "C")]
    dep_bb = deposited.atom_positions[dep_i][:, slots]  # [M, 3, 3]
    ok = deposited.atom_mask[dep_i][:, slots].all(axis=1)
    d2 = ((pred.backbone[node_i] - dep_bb) ** 2).sum(-1)[ok]  # [M', 3]
    ca_err = np.linalg.norm(pred.translations[node_i] - deposited.ca[dep_i], axis=-1)
    # backbone read in the wrong direction: predicted N->C against the deposited one
    dots = np.einsum("ij,ij->i", pred.backbone[node_i, 2] - pred.backbone[node_i, 0],
                     dep_bb[:, 2] - dep_bb[:, 0])[ok]
    return {"n_matched": int(len(dep_i)), "aa_accuracy": float(correct[known].mean()),
            "reversed": float((dots < 0).mean()) if dots.size else None,
            "backbone_rmsd": float(np.sqrt(d2.mean())) if d2.size else None,
            "confidence_correlation": pearson(pred.confidence[node_i].astype(np.float64),
                                              -ca_err)}


def search_database() -> list:
    """Every sequence of the training structures plus the real maps' FASTA records."""
    from chimerax.modelangelo.sequences import SequenceRecord, read_fasta

    db = [SequenceRecord(f"{e['name']}_{cid}", seq)
          for e in json.loads((DATA / "structures_manifest.json").read_text())
          for cid, seq in e["chains"].items()]
    for name, (_, fasta, _, _) in REAL_MAPS.items():
        db += read_fasta(DATA / "real_maps" / name / fasta)
    return db


def identification(grid, seqs, work: Path) -> dict:
    """No-sequence build, then ``search`` against the database: is the map's own sequence
    ranked first for every built chain longer than 50 residues?"""
    from chimerax.modelangelo.alignment import read_hmms, search_profiles
    from chimerax.modelangelo.pipeline import run_build

    result = run_build(grid, None, work / "noseq", "model", device="cpu")
    hmms = read_hmms(work / "noseq" / "hmm_profiles")
    long_hmms = [h for h in hmms if h.M > 50]
    hits = search_profiles(long_hmms, search_database(), top=1) if long_hmms else []
    truth = {s.name for s in seqs}
    right = sum(1 for h in hits if h and h[0].name in truth)
    return {"chains": result.summary["chains_unpruned"], "chains_over_50": len(long_hmms),
            "right_first": right}


# ----------------------------------------------------------------------------- report


def _fmt(x, pct=False, nd=2):
    if x is None:
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.{nd}f}"


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `benchmarks/run.py` on {meta['date']} ({meta['machine']}, "
        f"{meta['threads']} torch threads, CPU). Weights: {meta['weights']}.",
        "",
        "CNN: recall = deposited CA with a detected point within 2 A / 3 A; precision = points "
        "within 3 A of a deposited CA; 'far in density' = points > 3 A from the model that sit on "
        "density at least as strong as the 10th percentile at deposited CAs (unmodelled density "
        "on real maps). Models: residue recall / precision / sequence recall over one-to-one CA "
        "matches within 3 A; GNN aa / GNN bb = the graph network's own residue types (argmax, "
        "before any sequence alignment) and N/CA/C RMSD at its nodes matched to deposited CAs; "
        "GNN rev = share of those nodes whose N->C points against the deposited residue's; "
        "seq match = residue-type accuracy of the built model over matched residues; bb RMSD over "
        "N, CA, C, O of matched residues (both of the pruned model, or of the unpruned one where "
        "the pruned model is empty); conf r = Pearson correlation of confidence and -CA error; "
        "search = built chains > 50 residues (no-sequence build) whose first `modelangelo search` "
        "hit, against all 1,615 training chains plus the real maps' sequences, is the map's own "
        "sequence.",
        "",
        "| map | res (A) | residues | CNN rec 2A | CNN rec 3A | CNN prec | far in density | "
        "GNN aa | GNN bb | GNN rev | unpruned rec | unpruned prec | pruned rec | pruned seq rec | "
        "pruned prec | seq match | bb RMSD | conf r | search | CNN s | build s | peak MB |",
        "|" + "---|" * 22,
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['case']['name']} | error: {r['error'][:80]} |" + " |" * 20)
            continue
        c, u, p = r["cnn"], r.get("unpruned", {}), r.get("pruned", {})
        gn = r.get("gnn") or {}
        built = p if p.get("n_predicted") else u  # seq match and RMSD of the model shown
        lines.append(
            f"| {r['case']['name']} | {r['case']['resolution']} | {r['n_deposited']} | "
            f"{_fmt(c['recall_2a'], True)} | {_fmt(c['recall_3a'], True)} | "
            f"{_fmt(c['precision'], True)} | {c['far_points_in_density']}/{c['far_points']} | "
            f"{_fmt(gn.get('aa_accuracy'), True)} | {_fmt(gn.get('backbone_rmsd'))} | "
            f"{_fmt(gn.get('reversed'), True)} | "
            f"{_fmt(u.get('residue_recall'), True)} | {_fmt(u.get('precision'), True)} | "
            f"{_fmt(p.get('residue_recall'), True)} | {_fmt(p.get('sequence_recall'), True)} | "
            f"{_fmt(p.get('precision'), True)} | {_fmt(built.get('sequence_match'), True)} | "
            f"{_fmt(built.get('backbone_rmsd'))} | {_fmt(u.get('confidence_correlation'))} | "
            f"{_search_cell(r)} | {r['cnn_seconds']} | {r['build_seconds']} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def _search_cell(r: dict) -> str:
    s = r.get("search")
    return "-" if s is None else f"{s['right_first']}/{s['chains_over_50']}"


def run_all(cases: list[dict], threads: int) -> list[dict]:
    results = []
    for case in cases:
        print(f"== {case['name']}", file=sys.stderr, flush=True)
        env = dict(os.environ, BENCH_THREADS=str(threads))
        proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)],
                              capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            err = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            print(f"   failed: {err}", file=sys.stderr)
            results.append({"case": case, "error": err})
            continue
        res = json.loads(lines[-1])
        print(f"   {json.dumps({k: res[k] for k in ('cnn', 'build_seconds') if k in res})}",
              file=sys.stderr)
        results.append(res)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one small real map; print, write nothing")
    ap.add_argument("--real-only", action="store_true", help="skip the simulated test maps")
    ap.add_argument("--only", metavar="NAMES",
                    help="comma-separated case names (e.g. db55_1RLB_b@3.0,emd_2566); print, "
                         "write nothing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    if args.quick:
        cases = real_cases(["emd_2566"])
    else:
        cases = real_cases() + ([] if args.real_only else simulated_cases())
    if args.only:
        wanted = args.only.split(",")
        cases = [c for c in cases if c["name"] in wanted]
        if len(cases) != len(wanted):
            ap.error(f"--only: unknown case among {wanted}")
    results = run_all(cases, args.threads)
    from chimerax.modelangelo.model.weights import load_weights, shipped_path

    weights = []
    for name in ("cnn", "gnn"):
        path = shipped_path(name)
        if path.exists():
            rec = load_weights(path).get("record", {})
            weights.append(f"{name} ({rec.get('steps', '?')} steps)")
        else:
            weights.append(f"{name} (none)")
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
            "threads": args.threads, "weights": ", ".join(weights)}
    md = markdown(results, meta)
    print(md)
    if not (args.quick or args.only):
        RESULTS_MD.write_text(md + _targets_section(results))
        RESULTS_JSON.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0 if all("error" not in r for r in results) else 1


def _targets_section(results: list[dict]) -> str:
    """Targets from the issues, checked against the table (said plainly: met / missed)."""
    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    real = [r for r in results if r["case"]["kind"] == "real" and "error" not in r]
    sim3 = [r for r in results if r["case"]["kind"] == "simulated" and r["case"]["resolution"] == 3.0
            and "error" not in r]
    rows = []

    def row(what, value, target, higher=True, pct=True):
        if value is None:
            rows.append(f"| {what} | - | {target} | not measured |")
            return
        ok = value >= target if higher else value <= target
        shown = f"{100 * value:.1f} %" if pct else f"{value:.2f}"
        tshown = f"{100 * target:.0f} %" if pct else f"{target}"
        rows.append(f"| {what} | {shown} | {'>=' if higher else '<='} {tshown} | "
                    f"{'met' if ok else 'MISSED'} |")

    row("CNN, simulated 3.0 A: deposited CA with a point within 2 A",
        mean([r["cnn"]["recall_2a"] for r in sim3]), 0.95)
    row("CNN, simulated 3.0 A: points within 3 A of a deposited CA",
        mean([r["cnn"]["precision"] for r in sim3]), 0.90)
    row("CNN, real maps: deposited CA within 3 A", mean([r["cnn"]["recall_3a"] for r in real]), 0.90)
    row("CNN, real maps: precision", mean([r["cnn"]["precision"] for r in real]), 0.80)
    row("GNN, simulated 3.0 A: residue-type accuracy before alignment (matched nodes)",
        mean([(r.get("gnn") or {}).get("aa_accuracy") for r in sim3]), 0.60)
    row("GNN, simulated 3.0 A: backbone RMSD (A)",
        mean([(r.get("gnn") or {}).get("backbone_rmsd") for r in sim3]), 1.0, higher=False, pct=False)
    row("GNN, real maps: residue-type accuracy before alignment (matched nodes)",
        mean([(r.get("gnn") or {}).get("aa_accuracy") for r in real]), 0.60)
    row("GNN, real maps: backbone RMSD (A)",
        mean([(r.get("gnn") or {}).get("backbone_rmsd") for r in real]), 1.0, higher=False, pct=False)
    row("Real maps: pruned residue recall", mean([r.get("pruned", {}).get("residue_recall") for r in real]), 0.85)
    row("Real maps: pruned sequence recall", mean([r.get("pruned", {}).get("sequence_recall") for r in real]), 0.75)
    row("Real maps: pruned precision", mean([r.get("pruned", {}).get("precision") for r in real]), 0.95)
    row("Real maps: unpruned residue recall", mean([r.get("unpruned", {}).get("residue_recall") for r in real]), 0.90)
    row("Simulated 3.0 A: pruned sequence recall",
        mean([r.get("pruned", {}).get("sequence_recall") for r in sim3]), 0.85)
    searched = [r["search"] for r in real if "search" in r]
    n_long = sum(x["chains_over_50"] for x in searched)
    n_right = sum(x["right_first"] for x in searched)
    status = "not measured" if not searched else (
        "met" if n_long and n_right == n_long else "MISSED")
    rows.append(f"| Real maps, no sequence: search ranks the map's sequence first (chains > 50 "
                f"residues) | {n_right}/{n_long} | all | {status} |")
    return ("\n## Targets\n\n| target | measured | goal | status |\n|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


if __name__ == "__main__":
    sys.exit(main())
