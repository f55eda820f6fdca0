"""``modelangelo simulate``: a simulated cryo-EM map of an atomic model.

The map overlays the model (no rotation) and holds exactly its atoms unless
``--augment`` asks for the training augmentations (missing chains or segments, ligand
blobs, detergent belt, random rotation; the parameters file then says what was done).
Noise, blur, local resolution and masking are drawn as for training from ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="atomic model (mmCIF or PDB, optionally .gz)")
    parser.add_argument("--output", "-o", type=Path, required=True,
                        help="map to write (.mrc, .map or .mrc.gz); never overwritten")
    parser.add_argument("--resolution", "-r", type=float, default=None,
                        help="resolution in A (default: drawn from the training range)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same map)")
    parser.add_argument("--voxel-size", type=float, default=1.5,
                        help="voxel size of the written map, A (default 1.5)")
    parser.add_argument("--noise", type=float, default=None,
                        help="noise RMS / signal RMS (default: drawn from the training range)")
    parser.add_argument("--augment", action="store_true",
                        help="training augmentations: rotation, missing chains/segments, "
                             "ligand blobs, detergent")
    parser.add_argument("--params", type=Path, default=None,
                        help="also write the drawn parameters to this JSON file")


def main(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from ..config import SimulationConfig
    from ..errors import OutputError
    from ..mapio import write_map
    from ..protein import load_protein
    from ..training.simulate import faithful_config, simulate_map

    for path in (args.output, args.params):
        if path is not None and path.exists():
            raise OutputError(f"{path} already exists; choose another name")
    if args.resolution is not None and not 1.0 <= args.resolution <= 30.0:
        raise OutputError(f"resolution {args.resolution} A is outside 1-30 A")
    if not 0.3 <= args.voxel_size <= 10.0:
        raise OutputError(f"voxel size {args.voxel_size} A is outside 0.3-10 A")
    cfg = SimulationConfig()
    if not args.augment:
        cfg = faithful_config(cfg)
    if args.noise is not None:
        if args.noise < 0:
            raise OutputError("--noise must be >= 0")
        cfg = dataclasses.replace(cfg, noise_level_range=(args.noise, args.noise))
    protein = load_protein(args.model)
    sim = simulate_map(protein, np.random.default_rng(args.seed), cfg,
                       voxel_size=args.voxel_size, resolution=args.resolution,
                       rotate=args.augment)
    write_map(args.output, sim.grid)
    nz, ny, nx = sim.grid.data.shape
    print(f"wrote {args.output}: {nx}x{ny}x{nz} voxels of {args.voxel_size:g} A, "
          f"resolution {sim.resolution:.2f} A, {len(sim.protein)} residues", file=sys.stderr)
    if args.params is not None:
        record = {"model": str(args.model), "seed": args.seed, "augment": args.augment,
                  "residues_in_map": len(sim.protein), **sim.params}
        args.params.write_text(json.dumps(record, indent=1, default=_jsonable) + "\n")
    return 0


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
