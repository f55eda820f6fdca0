"""Side-chain density relative to C-alpha: real maps vs maps simulated from their models.

    .venv/bin/python benchmarks/sidechain_density.py [--seeds 4]

For each real map of ``benchmarks/run.py`` (``REAL_MAPS``): the mean density (normalised 1.5 A working
grid, as the networks see it) at groups of side-chain atoms of the deposited model, over
the mean density at its C-alpha atoms; then the same for maps simulated from that model at
the map's resolution (``training.simulate.simulate_map`` with the default
``SimulationConfig`` minus the augmentations that change content, no rotation), averaged
over ``--seeds`` maps. This is what ``SimulationConfig``'s side-chain B and occupancy
ranges are calibrated against (see the comments there).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import DATA, REAL_MAPS  # noqa: E402  (benchmarks/run.py: the real maps and their resolutions)

# group -> (residue letters, atom name)
GROUPS: dict[str, list[tuple[str, str]]] = {
    "CB": [(r, "CB") for r in "RNDQEHILKMFSTWYVC"],
    "CG": [(r, "CG") for r in "RNQHLKMFWY"],
    "Asp O": [("D", "OD1"), ("D", "OD2")],
    "Glu O": [("E", "OE1"), ("E", "OE2")],
    "Ile CD1": [("I", "CD1")],
    "Met SD": [("M", "SD")],
    "Lys NZ": [("K", "NZ")],
    "Arg CZ": [("R", "CZ")],
    "Phe CZ": [("F", "CZ")],
    "Tyr OH": [("Y", "OH")],
}


def relative_density(grid, protein) -> list[float]:
    """Mean density at each group's atoms / mean density at the C-alpha atoms."""
    from chimerax.modelangelo import residue_constants as rc
    from chimerax.modelangelo.mapio import interpolate

    ca = float(interpolate(grid, protein.ca).mean())
    out = []
    for members in GROUPS.values():
        values = []
        for letter, atom in members:
            slot = rc.ATOM_ORDER[atom]
            sel = (protein.aatype == rc.RESTYPE_ORDER[letter]) & protein.atom_mask[:, slot]
            if sel.any():
                values.append(interpolate(grid, protein.atom_positions[sel, slot]))
        out.append(float(np.concatenate(values).mean()) / ca if values else float("nan"))
    return out


def main() -> int:
    from chimerax.modelangelo.config import SimulationConfig
    from chimerax.modelangelo.mapio import normalise, read_map, resample
    from chimerax.modelangelo.protein import load_protein
    from chimerax.modelangelo.training.simulate import faithful_config, simulate_map

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="simulated maps per real map")
    args = parser.parse_args()
    cfg = faithful_config(SimulationConfig())
    print("| map | kind | " + " | ".join(GROUPS) + " |")
    print("|---|---|" + "---|" * len(GROUPS))
    for name, (mrc, _, cif, resolution) in sorted(REAL_MAPS.items()):
        folder = DATA / "real_maps" / name
        model = load_protein(folder / cif)
        real = relative_density(normalise(resample(read_map(folder / mrc), 1.5)), model)
        rows = []
        for seed in range(args.seeds):
            sim = simulate_map(model, np.random.default_rng(seed), cfg,
                               resolution=resolution, rotate=False)
            rows.append(relative_density(normalise(resample(sim.grid, 1.5)), sim.protein))
        for kind, values in (("real", real), (f"simulated (mean of {args.seeds})",
                                              np.nanmean(rows, axis=0))):
            print(f"| {name} | {kind} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
