"""Simulated vs real maps: ``benchmarks/figures/sim_vs_real.png`` and the numbers behind it.

For each real map in ``<data root>/real_maps`` a map is simulated from its deposited model
(``training.simulate.simulate_map``, no rotation, nothing added or left out, the map's
resolution) with the default simulation settings of one fixed seed. Both are compared on
the 1.5 A working grid that the networks see: the real map resampled with
``mapio.resample``, the simulated one onto the same lattice. The real maps are zones
(zero beyond 4-7 A of the model), so the same zone is applied to the simulated map.

Per map: a central slice of each (same scale after normalising each to unit standard
deviation inside the zone), their radial power spectra (log scale), and numbers printed
to stdout: correlation of the real map with the noise-free simulation, the real map's
noise estimate (residual RMS after the best linear fit of the noise-free simulation,
over the fitted signal's RMS; an upper bound since model error counts as noise), and how
far apart the two spectra are (median |log10 ratio| of the shell powers up to
1 / resolution).

Run: ``.venv/bin/python benchmarks/figure_sim_vs_real.py [--seed 0] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from chimerax.modelangelo.config import SimulationConfig
from chimerax.modelangelo.mapio import MapGrid, read_map, resample, resample_to
from chimerax.modelangelo.protein import load_protein
from chimerax.modelangelo.training.simulate import (
    default_data_root,
    faithful_config,
    simulate_map,
)

MAPS = (  # folder, model, resolution (README table)
    ("emd_6272", "3j9s_deposited.cif", 2.6),
    ("emd_2566", "3j6b_deposited.cif", 3.2),
    ("emd_30342", "7cec_deposited.cif", 3.9),
)
OUT = Path(__file__).resolve().parent / "figures" / "sim_vs_real.png"


def radial_power(data: np.ndarray, voxel: float, n_bins: int = 40) -> tuple[np.ndarray, ...]:
    """Shell-averaged power ``|F|^2`` of ``data``: ``(shell centre s [A^-1], power)``."""
    f = np.abs(np.fft.rfftn(data)) ** 2
    nz, ny, nx = data.shape
    s = np.sqrt(np.fft.fftfreq(nz, voxel)[:, None, None] ** 2
                + np.fft.fftfreq(ny, voxel)[None, :, None] ** 2
                + np.fft.rfftfreq(nx, voxel)[None, None, :] ** 2)
    edges = np.linspace(0, 0.5 / voxel, n_bins + 1)
    idx = np.digitize(s.reshape(-1), edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    power = np.bincount(idx[ok], f.reshape(-1)[ok], n_bins) / np.maximum(
        np.bincount(idx[ok], None, n_bins), 1)
    return 0.5 * (edges[1:] + edges[:-1]), power


def fsc(a: np.ndarray, b: np.ndarray, voxel: float, n_bins: int = 40) -> tuple[np.ndarray, ...]:
    """Fourier shell correlation of two maps: ``(shell centre s, FSC, power of a)``."""
    fa, fb = np.fft.rfftn(a), np.fft.rfftn(b)
    nz, ny, nx = a.shape
    s = np.sqrt(np.fft.fftfreq(nz, voxel)[:, None, None] ** 2
                + np.fft.fftfreq(ny, voxel)[None, :, None] ** 2
                + np.fft.rfftfreq(nx, voxel)[None, None, :] ** 2).reshape(-1)
    edges = np.linspace(0, 0.5 / voxel, n_bins + 1)
    idx = np.digitize(s, edges) - 1
    ok = (idx >= 0) & (idx < n_bins)

    def shell(x):
        return np.bincount(idx[ok], x.reshape(-1)[ok], n_bins)

    cross = shell((fa * np.conj(fb)).real)
    pa, pb = shell(np.abs(fa) ** 2), shell(np.abs(fb) ** 2)
    return 0.5 * (edges[1:] + edges[:-1]), cross / np.sqrt(np.maximum(pa * pb, 1e-30)), pa


def compare(folder: str, model: str, resolution: float, seed: int, root: Path,
            cfg: SimulationConfig, n_draws: int) -> dict:
    real_full = read_map(root / "real_maps" / folder / f"{folder}.mrc")
    protein = load_protein(root / "real_maps" / folder / model)
    real = resample(real_full)  # the 1.5 A working grid
    zone_full = MapGrid((real_full.data != 0).astype(np.float32), real_full.voxel_size,
                        real_full.origin)
    zone = resample(zone_full, method="trilinear").data > 0.5

    def unit(d):
        d = d * zone
        return d / d[zone].std()

    def simulated(c, sd):
        sim = simulate_map(protein, np.random.default_rng(sd), c, resolution=resolution,
                           rotate=False)
        return unit(resample_to(sim.grid, real).data), sim.params

    fcfg = faithful_config(cfg)
    r = unit(real.data)
    noisy, params = simulated(fcfg, seed)
    clean, _ = simulated(dataclasses.replace(fcfg, noise_level_range=(0.0, 0.0)), seed)
    # Real map vs noise-free simulation: correlation, and the noise it implies when the
    # simulation is allowed any per-shell scale (so a blur mismatch does not count as noise).
    cc = float(np.corrcoef(r[zone], clean[zone])[0, 1])
    s, f, p_r = fsc(r, clean, 1.5)
    f = np.clip(f, 0, 1)
    noise_est = float(np.sqrt(((1 - f**2) * p_r)[1:].sum() / (f**2 * p_r)[1:].sum()))
    band = (s > 1 / 25) & (s < 1 / resolution)
    # Spectra: the real map against simulations of n_draws seeds (default settings).
    _, p_real = radial_power(r, 1.5)
    p_sims = np.stack([radial_power(simulated(fcfg, seed + 1000 * i)[0], 1.5)[1]
                       for i in range(n_draws)])
    lo5, med, hi95 = np.percentile(p_sims, [5, 50, 95], axis=0)
    inside = float(np.mean((p_real[band] >= lo5[band]) & (p_real[band] <= hi95[band])))
    spec_dev = float(np.median(np.abs(np.log10(med[band] / p_real[band]))))
    hi = (s > 1 / (resolution + 0.7)) & (s <= 1 / resolution)
    lo = (s > 1 / 10) & (s < 1 / 6)
    tilt_sims = p_sims[:, hi].mean(1) / p_sims[:, lo].mean(1)
    ca = real.xyz_to_ijk(protein.ca).mean(axis=0)
    k = int(round(ca[2]))
    return {
        "folder": folder, "resolution": resolution, "cc_real_vs_clean_sim": cc,
        "real_noise_level_est": noise_est, "example_sim_noise_level": params["noise_level"],
        "spectrum_median_abs_log10_ratio_to_sim_median": spec_dev,
        "fraction_of_shells_inside_sim_5_95": inside,
        "hi_over_lo_power_real": float(p_real[hi].mean() / p_real[lo].mean()),
        "hi_over_lo_power_sims_5_50_95": np.percentile(tilt_sims, [5, 50, 95]).tolist(),
        "slice_k": k, "slices": (r[k], noisy[k]), "spectra": (s, p_real, p_sims[0], lo5, hi95),
        "fsc_real_vs_model": f.tolist(),
        "example_params": {key: params[key] for key in (
            "noise_level", "noise_b", "b_global", "local_b", "atom_b_base")},
    }


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--draws", type=int, default=16, help="simulations per map for the band")
    args = ap.parse_args(argv)
    root = args.data_root or default_data_root()
    cfg = SimulationConfig()
    rows = [compare(f, m, res, args.seed + i, root, cfg, args.draws) for i, (f, m, res) in enumerate(MAPS)]

    fig, axes = plt.subplots(len(rows), 3, figsize=(12, 3.8 * len(rows)))
    for ax_row, row in zip(axes, rows):
        real_sl, sim_sl = row["slices"]
        vmax = max(np.percentile(real_sl, 99.5), np.percentile(sim_sl, 99.5))
        for ax, sl, title in ((ax_row[0], real_sl, "real"), (ax_row[1], sim_sl, "simulated")):
            ax.imshow(sl, cmap="gray", origin="lower", vmin=-0.3 * vmax, vmax=vmax)
            ax.set_title(f"{row['folder']} {title}, {row['resolution']} A, slice z={row['slice_k']}",
                         fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        s, p_real, p_sim, lo5, hi95 = row["spectra"]
        ax = ax_row[2]
        ax.fill_between(s[1:], lo5[1:], hi95[1:], color="tab:orange", alpha=0.25, lw=0,
                        label="simulated, 5-95% of draws")
        ax.semilogy(s[1:], p_sim[1:], label="simulated (slice shown)", color="tab:orange")
        ax.semilogy(s[1:], p_real[1:], label="real", color="k")
        ax.axvline(1 / row["resolution"], color="gray", ls="--", lw=0.8)
        ax.set_xlabel("spatial frequency (1/A)")
        ax.set_ylabel("shell power")
        ax.set_title(f"power spectra (same zone); {row['fraction_of_shells_inside_sim_5_95']:.0%}"
                     f" of shells inside the band", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle("Real maps vs maps simulated from their deposited models (1.5 A grid, "
                 "each map / its SD in the zone)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    summary = [{k: v for k, v in r.items() if k not in ("slices", "spectra", "fsc_real_vs_model")}
               for r in rows]
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
