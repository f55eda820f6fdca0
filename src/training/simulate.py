"""Simulated cryo-EM maps of atomic models, for training (CNN and GNN).

A map is built in one pass, all randomness drawn from the caller's
``numpy.random.Generator`` (same generator state, same map):

1. Missing density: a whole chain (``drop_chain_prob``) or a stretch of residues
   (``drop_segment_prob``) is removed from the map *and* from the returned target protein.
2. Random rotation about the centre of mass and a random box around the atoms
   (``box_padding`` to ``2 * box_padding`` Angstrom of solvent on each side, drawn per side).
3. Every heavy atom (protein, ligands in ``other_positions``, and unmodelled "ligand
   blobs" that have no target residues) is splatted onto a grid of voxel size drawn from
   ``voxel_size_range`` as a sum of five Gaussians: the element's electron scattering
   factor (International Tables C 4.3.2.2, as tabulated by gemmi) convolved with the
   atom's isotropic B-factor (``B = base + spread * z(deposited B) + step * bonds from
   CA`` plus extra B on Asp/Glu carboxylate oxygens, capped: side chains fade outwards
   as in real maps). A small
   extra blur ``B_min`` keeps the splat band-limited; it is removed again in Fourier space.
   Non-protein atoms further than ``OTHER_ATOM_REACH`` (10 A) from every residue are left
   out (``Protein.select`` keeps all of them).
4. Fourier space: the global B (blurred, or over-sharpened with a negative B), an
   optional anisotropic B along a random axis, and a low-pass with a soft cosine edge at
   ``lowpass_shift / resolution``; nothing beyond the output grid's Nyquist frequency.
5. Local resolution: a second copy blurred by an extra ``local_b`` is blended in with a
   weight that grows with the distance from the centre of mass and with low atom contact
   (surface loops worse than the core).
6. Optional detergent/lipid belt: low, blurred, textured density in a slab around the
   protein (outside it), along a random axis.
7. Coloured Gaussian noise: white noise shaped in Fourier space (a tilt ``noise_b``, and
   either a low-pass a little beyond the signal's or none up to the output Nyquist, as in
   maps that were not low-pass filtered), scaled to ``noise_level`` times the signal's
   standard deviation inside the protein (both measured on the output band).
8. Optionally a solvent mask: soft (dilated envelope) or a hard zone within
   ``zone_radius`` of the atoms, like the EMDB excerpts in ``real_maps/``.
9. Fourier resampling (:func:`..mapio.resample`) to the working voxel size (1.5 A).

The returned :class:`SimulatedMap` holds the map, the protein as it sits in the map
(rotated, residues without density removed) and every drawn parameter.

Training structures are read by :func:`load_training_protein` from
``<data root>/structures/<name>.cif.gz``; the data root is the ``data_root`` argument,
else the environment variable ``MODELANGELO_DATA``, else ``../shared/data`` next to the
repository.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .. import residue_constants as rc
from ..config import SimulationConfig
from ..errors import ModelAngeloError
from ..protein import Protein

if TYPE_CHECKING:  # mapio is imported lazily (only MapGrid construction needs it)
    from ..mapio import MapGrid

# Elements of the atom37 slots (first letter of the PDB atom name: N, C, O, S).
_ATOM37_ELEMENT = [name[0] for name in rc.ATOM_TYPES]
# Bonds from CA of each atom37 slot (the Greek letter of its name: CB 1, CG 2, ... NH 6).
_ATOM37_DEPTH = np.array([" BGDEZH".find(name[1]) if len(name) > 1 and name not in ("CA", "OXT")
                          and name[1] in "BGDEZH" else 0 for name in rc.ATOM_TYPES], np.float64)
# [21, 37]: carboxylate oxygens of Asp (OD1, OD2) and Glu (OE1, OE2), which fade first.
_CARBOXYLATE_O = np.zeros((rc.NUM_RESTYPES + 1, len(rc.ATOM_TYPES)), np.float64)
for _aa, _names in (("D", ("OD1", "OD2")), ("E", ("OE1", "OE2"))):
    for _name in _names:
        _CARBOXYLATE_O[rc.RESTYPE_ORDER[_aa], rc.ATOM_ORDER[_name]] = 1.0
# [21, 37]: side-chain atoms from CD on (3+ bonds from CA) of residues without a rigid
# ring (not Phe, Tyr, Trp, His, Pro): the flexible ends (Lys NZ, Ile CD1, Met SD, Glu OE...).
_FLEXIBLE = np.zeros((rc.NUM_RESTYPES + 1, len(rc.ATOM_TYPES)), np.float64)
for _aa in rc.RESTYPES:
    if _aa not in "FYWHP":
        _FLEXIBLE[rc.RESTYPE_ORDER[_aa]] = _ATOM37_DEPTH >= 3
_WINDOW_SIGMAS = 3.0  # real-space splat window half-width, in Gaussian sigmas
_ATOM_CHUNK = 4096  # atoms splatted per vectorised batch (bounds memory)
_ENVELOPE_SIGMA = 3.0  # A, blur of the atom density that defines "inside the protein"
OTHER_ATOM_REACH = 10.0  # A; ligand/nucleic-acid atoms further from every residue are left out


@dataclass
class SimulatedMap:
    grid: MapGrid  # the map at ``voxel_size`` (cubic voxels)
    protein: Protein  # residues in the map, coordinates in the grid's frame
    resolution: float  # Angstrom
    params: dict[str, Any] = field(default_factory=dict)  # everything drawn, for the record


def faithful_config(cfg: SimulationConfig) -> SimulationConfig:
    """``cfg`` without the augmentations that change what is in the map (missing chains or
    segments, ligand blobs, detergent): a map of exactly the given model."""
    import dataclasses

    return dataclasses.replace(cfg, drop_chain_prob=0.0, drop_segment_prob=0.0,
                               ligand_blob_prob=0.0, detergent_prob=0.0)


# ----------------------------------------------------------------------------- data


def default_data_root() -> Path:
    """``$MODELANGELO_DATA`` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get("MODELANGELO_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]  # src/training/simulate.py -> repo root
    return repo.parent / "shared" / "data"


def load_training_protein(name: str, data_root: str | Path | None = None) -> Protein:
    """The structure ``<data root>/structures/<name>.cif.gz`` (see module docstring)."""
    root = Path(data_root) if data_root is not None else default_data_root()
    path = root / "structures" / f"{name}.cif.gz"
    if not path.exists():
        raise ModelAngeloError(
            f"training structure {path} not found; set MODELANGELO_DATA to the data folder "
            "(the one holding structures/ and structures_manifest.json)"
        )
    from ..protein import load_protein

    return load_protein(path)


# ----------------------------------------------------------------- scattering factors


@cache
def electron_form_factor(element: str) -> tuple[np.ndarray, np.ndarray]:
    """Five-Gaussian electron scattering factor ``(a [5], b [5])`` of an element.

    ``f(s) = sum_g a_g exp(-b_g s^2 / 4)`` with ``s = 1 / d`` (A^-1). Unknown elements
    are treated as carbon.
    """
    import gemmi

    name = element.strip().capitalize() or "C"
    el = gemmi.Element(name)
    if el.atomic_number == 0:
        el = gemmi.Element("C")
    coef = el.c4322
    return np.asarray(coef.a, np.float64), np.asarray(coef.b, np.float64)


def _form_factor_table(elements: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique elements -> index per atom, and stacked ``a [E, 5]``, ``b [E, 5]``."""
    uniq = sorted(set(elements)) or ["C"]
    index = {e: i for i, e in enumerate(uniq)}
    a = np.stack([electron_form_factor(e)[0] for e in uniq])
    b = np.stack([electron_form_factor(e)[1] for e in uniq])
    return np.asarray([index[e] for e in elements], np.int64), a, b


# ---------------------------------------------------------------------- splatting


def splat_atoms(
    xyz: np.ndarray,
    elements: list[str],
    b_iso: np.ndarray,
    shape: tuple[int, int, int],
    origin: np.ndarray,
    voxel: float,
    occupancy: np.ndarray | None = None,
) -> torch.Tensor:
    """Electron density of atoms sampled on a grid ``[nz, ny, nx]`` (float32 tensor).

    Each atom contributes ``occupancy * sum_g a_g (4 pi / Bt)^1.5 exp(-4 pi^2 r^2 / Bt)`` with
    ``Bt = b_g + B_atom``: the real-space form of its scattering factor blurred by its
    B-factor, evaluated exactly at the voxel centres inside a window of
    ``_WINDOW_SIGMAS`` sigmas of its widest Gaussian (separable in x, y, z).
    """
    nz, ny, nx = shape
    out = torch.zeros(nz * ny * nx, dtype=torch.float32)
    if len(xyz) == 0:
        return out.view(nz, ny, nx)
    el_idx, a_tab, b_tab = _form_factor_table(elements)
    bt = b_tab[el_idx] + np.asarray(b_iso, np.float64)[:, None]  # [M, 5]
    amp = a_tab[el_idx] * (4 * math.pi / bt) ** 1.5  # [M, 5]
    if occupancy is not None:
        amp = amp * np.asarray(occupancy, np.float64)[:, None]
    sigma_max = math.sqrt(float(bt.max()) / (8 * math.pi**2))
    r = max(1, int(math.ceil(_WINDOW_SIGMAS * sigma_max / voxel)))
    offs = torch.arange(-r, r + 1, dtype=torch.float64)  # [W]
    u = (np.asarray(xyz, np.float64) - origin) / voxel  # [M, 3] (x, y, z) in voxels
    dims = torch.tensor([nx, ny, nz])
    for lo in range(0, len(u), _ATOM_CHUNK):
        uu = torch.from_numpy(u[lo : lo + _ATOM_CHUNK])  # [m, 3]
        centre = torch.round(uu)
        idx = centre.long()[:, :, None] + offs.long()  # [m, 3, W] voxel index per axis
        d = (centre[:, :, None] + offs - uu[:, :, None]) * voxel  # [m, 3, W] A
        btc = torch.from_numpy(bt[lo : lo + _ATOM_CHUNK])[:, None, :, None]  # [m, 1, 5, 1]
        e = torch.exp(-4 * math.pi**2 * d[:, :, None, :] ** 2 / btc).float()  # [m, 3, 5, W]
        a = torch.from_numpy(amp[lo : lo + _ATOM_CHUNK]).float()  # [m, 5]
        # Outside the grid: zero weight (the box always has padding, so this is rare).
        valid = ((idx >= 0) & (idx < dims[None, :, None])).float()  # [m, 3, W]
        e = e * valid[:, :, None, :]
        ex, ey, ez = e[:, 0], e[:, 1], e[:, 2]  # [m, 5, W]
        vals = torch.einsum("mg,mgk,mgj,mgi->mkji", a, ez, ey, ex)  # [m, W, W, W]
        ix = idx[:, 0].clamp(0, nx - 1)
        iy = idx[:, 1].clamp(0, ny - 1)
        iz = idx[:, 2].clamp(0, nz - 1)
        flat = (
            iz[:, :, None, None] * (ny * nx) + iy[:, None, :, None] * nx + ix[:, None, None, :]
        )  # [m, W, W, W]
        out.index_add_(0, flat.reshape(-1), vals.reshape(-1))
    return out.view(nz, ny, nx)


# ------------------------------------------------------------------------ helpers


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed rotation matrix [3, 3] (from a random unit quaternion)."""
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _fourier_s2(shape: tuple[int, int, int], voxel: float) -> tuple[torch.Tensor, ...]:
    """Squared spatial frequency (A^-2) of an ``rfftn`` of ``shape`` and its axes."""
    nz, ny, nx = shape
    fz = torch.fft.fftfreq(nz, d=voxel)[:, None, None]
    fy = torch.fft.fftfreq(ny, d=voxel)[None, :, None]
    fx = torch.fft.rfftfreq(nx, d=voxel)[None, None, :]
    return fx**2 + fy**2 + fz**2, fx, fy, fz


def cosine_lowpass(s: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    """1 below ``cutoff*(1-width)``, 0 above ``cutoff*(1+width)``, cosine edge between."""
    lo, hi = cutoff * (1 - width), cutoff * (1 + width)
    t = ((s - lo) / max(hi - lo, 1e-9)).clamp(0, 1)
    return 0.5 * (1 + torch.cos(math.pi * t))


def _gauss_filter(s2: torch.Tensor, sigma: float) -> torch.Tensor:
    """Fourier transform of a unit-mass Gaussian of std ``sigma`` (A)."""
    return torch.exp(-2 * math.pi**2 * sigma**2 * s2)


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _good_size(n: int) -> int:
    from scipy.fft import next_fast_len

    return int(next_fast_len(max(int(n), 8), real=True))


def _drop_missing(protein: Protein, rng: np.random.Generator, cfg: SimulationConfig,
                  params: dict) -> Protein:
    """Remove a chain and/or a stretch of residues (missing density, missing target)."""
    keep = np.ones(len(protein), bool)
    dropped_chains: list[str] = []
    n_chains = len(protein.chain_names)
    if n_chains > 1 and rng.random() < cfg.drop_chain_prob:
        ci = int(rng.integers(n_chains))
        keep &= protein.chain_index != ci
        dropped_chains.append(protein.chain_names[ci])
    segment = None
    if rng.random() < cfg.drop_segment_prob and keep.sum() > 40:
        length = int(rng.integers(5, 31))
        kept = np.flatnonzero(keep)
        start = int(rng.integers(len(kept) - length))
        keep[kept[start : start + length]] = False
        segment = (int(kept[start]), length)
    params["dropped_chains"] = dropped_chains
    params["dropped_segment"] = segment  # (first residue index in the input, length)
    return protein if keep.all() else protein.select(keep)


def _ligand_blobs(rng: np.random.Generator, xyz: np.ndarray, com: np.ndarray,
                  n_blobs: int) -> tuple[np.ndarray, list[str]]:
    """Random-walk clusters of 6-40 atoms just outside the protein surface."""
    from scipy.spatial import cKDTree

    tree = cKDTree(xyz)
    pos: list[np.ndarray] = []
    els: list[str] = []
    for _ in range(n_blobs):
        anchor = xyz[int(rng.integers(len(xyz)))]
        out_dir = anchor - com
        out_dir /= np.linalg.norm(out_dir) + 1e-6
        d = out_dir + 0.7 * rng.standard_normal(3)
        p = anchor + 4.0 * d / (np.linalg.norm(d) + 1e-6)
        n_atoms = int(rng.integers(6, 41))
        for _ in range(n_atoms):
            step = rng.standard_normal(3)
            q = p + 1.45 * step / (np.linalg.norm(step) + 1e-6)
            if tree.query(q)[0] >= 2.8:  # no clash with the protein
                p = q
                pos.append(p.copy())
                els.append(str(rng.choice(["C", "C", "C", "C", "O", "N", "P"])))
    return np.asarray(pos, np.float64).reshape(-1, 3), els


# ------------------------------------------------------------------------ simulate


# One random stream per stage of the simulation, seeded from ``_STREAM_SLOTS`` draws of the
# caller's generator: a change to one stage's draws (a new option, another count) leaves
# every other stage's draws as they were, so simulated validation and benchmark maps
# change only where the simulator did. Slots beyond the stages are room for new ones
# (the caller's generator always advances by the same number of draws per map).
_STAGES = ("resolution", "missing", "rotation", "atom_b", "occupancy", "ligands", "box",
           "filter", "detergent", "local_b", "noise", "mask")
_STREAM_SLOTS = 16


def stage_streams(rng: np.random.Generator) -> dict[str, np.random.Generator]:
    """Independent generators, one per simulation stage, from ``rng``."""
    seeds = rng.integers(0, 2**63, size=_STREAM_SLOTS)
    return {name: np.random.default_rng(int(seed)) for name, seed in zip(_STAGES, seeds)}


def simulate_map(
    protein: Protein,
    rng: np.random.Generator,
    cfg: SimulationConfig,
    *,
    voxel_size: float = 1.5,
    resolution: float | None = None,
    box_padding: float = 8.0,
    rotate: bool = True,
) -> SimulatedMap:
    """Simulate a cryo-EM map of ``protein`` (see the module docstring for the steps).

    Deterministic given the state of ``rng`` (each stage draws from its own stream,
    :func:`stage_streams`). ``resolution`` (A) defaults to a draw from
    ``cfg.resolution_range``. The returned protein is the one to use as target: rotated
    into the map's frame, without the residues whose density was left out.
    ``rotate=False`` keeps the model's frame (for maps that should overlay the model).
    """
    from ..mapio import MapGrid, resample

    if len(protein) == 0:
        raise ModelAngeloError("cannot simulate a map of an empty protein")
    params: dict[str, Any] = {}
    streams = stage_streams(rng)
    if resolution is None:
        resolution = _uniform(streams["resolution"], cfg.resolution_range)
    resolution = float(resolution)
    params["resolution"] = resolution

    # 1. Missing density.
    protein = _drop_missing(protein, streams["missing"], cfg, params)

    # 2. Rotation about the centre of mass.
    rot = random_rotation(streams["rotation"]) if rotate else np.eye(3)
    params["rotation"] = rot.tolist()
    mask = protein.atom_mask
    prot_xyz = protein.atom_positions[mask].astype(np.float64)  # [Mp, 3]
    com = prot_xyz.mean(axis=0)
    new_pos = (protein.atom_positions.astype(np.float64) - com) @ rot.T + com
    new_pos[~mask] = 0.0
    other = protein.other_positions.astype(np.float64).reshape(-1, 3)
    other_el = list(protein.other_elements)
    if len(other):
        # Only non-protein atoms near the residues kept (Protein.select keeps them all).
        from scipy.spatial import cKDTree

        near = cKDTree(prot_xyz).query(other, distance_upper_bound=OTHER_ATOM_REACH)[0]
        keep_other = np.isfinite(near)
        other = other[keep_other]
        other_el = [e for e, k in zip(other_el, keep_other) if k]
    params["other_atoms"] = len(other)
    other_rot = (other - com) @ rot.T + com
    target = Protein(
        atom_positions=new_pos.astype(np.float32),
        atom_mask=mask.copy(),
        aatype=protein.aatype.copy(),
        residue_number=protein.residue_number.copy(),
        chain_index=protein.chain_index.copy(),
        chain_names=list(protein.chain_names),
        b_factors=protein.b_factors.copy(),
        other_positions=other_rot.astype(np.float32),
        other_elements=other_el,
    )

    # 3. Atoms and their B-factors.
    prot_xyz = new_pos[mask]  # [Mp, 3]
    atom_slot = np.nonzero(mask)[1]
    elements = [_ATOM37_ELEMENT[j] for j in atom_slot] + other_el
    dep_b = np.concatenate(
        [protein.b_factors[mask].astype(np.float64), np.full(len(other_rot), np.nan)]
    )
    xyz = np.concatenate([prot_xyz, other_rot])
    rng = streams["atom_b"]
    b_base = _uniform(rng, cfg.atom_b_base_range)
    b_spread = _uniform(rng, cfg.atom_b_spread_range)
    finite = dep_b[np.isfinite(dep_b)]
    med = float(np.median(finite)) if len(finite) else 0.0
    scale = float(np.subtract(*np.percentile(finite, [75, 25]))) if len(finite) else 0.0
    z = np.where(np.isfinite(dep_b), (dep_b - med) / max(scale, 1e-3), 0.5)
    if scale < 1e-3:
        z = np.zeros_like(z)
    b_step = _uniform(rng, cfg.sidechain_b_step_range)
    b_carboxylate = _uniform(rng, cfg.carboxylate_b_range)
    b_side = np.concatenate([
        b_step * _ATOM37_DEPTH[atom_slot]
        + b_carboxylate * _CARBOXYLATE_O[protein.aatype[np.nonzero(mask)[0]], atom_slot],
        np.zeros(len(other_rot))])
    b_atom = np.clip(b_base + b_spread * np.clip(z, -1.5, 3.0) + b_side, 0.0, cfg.atom_b_max)
    params.update(atom_b_base=b_base, atom_b_spread=b_spread, sidechain_b_step=b_step,
                  carboxylate_b=b_carboxylate)
    # Partial occupancy: flexible side-chain ends (per residue) and carboxylate oxygens
    # (per map) are partly missing in real maps (disorder, radiation damage).
    res_of_atom = np.nonzero(mask)[0]
    aat_of_atom = protein.aatype[res_of_atom]
    rng = streams["occupancy"]
    occ_low = _uniform(rng, cfg.flexible_occupancy_low_range)
    occ_carboxylate = _uniform(rng, cfg.carboxylate_occupancy_range)
    res_occ = rng.uniform(occ_low, 1.0, len(protein))  # [R]
    occ = np.where(_FLEXIBLE[aat_of_atom, atom_slot] > 0, res_occ[res_of_atom], 1.0)
    occ = occ * np.where(_CARBOXYLATE_O[aat_of_atom, atom_slot] > 0, occ_carboxylate, 1.0)
    occupancy = np.concatenate([occ, np.ones(len(other_rot))])
    params.update(flexible_occupancy_low=occ_low, carboxylate_occupancy=occ_carboxylate)

    n_blobs = 0
    rng = streams["ligands"]
    if rng.random() < cfg.ligand_blob_prob:
        n_blobs = int(rng.integers(1, 5))
        blob_xyz, blob_el = _ligand_blobs(rng, prot_xyz, com, n_blobs)
        blob_b = rng.uniform(b_base, min(b_base + 60.0, cfg.atom_b_max), len(blob_xyz))
        xyz = np.concatenate([xyz, blob_xyz])
        elements += blob_el
        b_atom = np.concatenate([b_atom, blob_b])
        occupancy = np.concatenate([occupancy, np.ones(len(blob_xyz))])
        params["ligand_blob_atoms"] = len(blob_xyz)
    params["ligand_blobs"] = n_blobs

    # Grid: voxel drawn from voxel_size_range, box with random padding per side.
    rng = streams["box"]
    v_draw = _uniform(rng, cfg.voxel_size_range)
    lo = xyz.min(axis=0) - rng.uniform(box_padding, 2 * box_padding, 3)
    hi = xyz.max(axis=0) + rng.uniform(box_padding, 2 * box_padding, 3)
    # Output box: whole number of output voxels; simulation grid spans the same box.
    n_out = np.ceil((hi - lo) / voxel_size).astype(int)  # (x, y, z)
    length = n_out * voxel_size
    n_sim = np.array([_good_size(round(L / v_draw)) for L in length])
    # Cubic simulation voxels: one voxel for all axes, the box grows to whole voxels.
    v_sim = float(np.max(length / n_sim))
    origin = lo.copy()
    shape = (int(n_sim[2]), int(n_sim[1]), int(n_sim[0]))  # (nz, ny, nx)
    params.update(voxel_size_sim=v_sim, sim_shape=shape, origin=origin.tolist())

    # B_min keeps the splat band-limited on the coarse grid (removed in Fourier space).
    b_min = 4.0 * math.log(20.0) * (2 * v_sim) ** 2  # 5% attenuation at Nyquist
    dens = splat_atoms(xyz, elements, b_atom + b_min, shape, origin, v_sim, occupancy)
    ft = torch.fft.rfftn(dens)
    s2, fx, fy, fz = _fourier_s2(shape, v_sim)
    s = torch.sqrt(s2)

    # 4. Global B, anisotropy, resolution low-pass.
    rng = streams["filter"]
    b_global = _uniform(rng, cfg.b_factor_extra_range)
    if rng.random() < cfg.sharpen_prob:
        b_global -= _uniform(rng, cfg.sharpen_b_range)
    edge = float(rng.uniform(0.03, 0.2))
    cutoff = _uniform(rng, cfg.lowpass_shift_range) / resolution
    params.update(b_global=b_global, lowpass_edge=edge, lowpass_cutoff=cutoff)
    log_h = -(b_global - b_min) * s2 / 4
    if rng.random() < cfg.anisotropic_prob:
        axis = rng.standard_normal(3)
        axis /= np.linalg.norm(axis)
        b_aniso = _uniform(rng, cfg.anisotropic_b_range)
        sn = fx * axis[0] + fy * axis[1] + fz * axis[2]
        log_h = log_h - b_aniso * sn**2 / 4
        params.update(aniso_b=b_aniso, aniso_axis=axis.tolist())
    # Nothing beyond the output grid's Nyquist frequency: resampling removes it anyway, and
    # the signal and noise levels are measured on what remains.
    band = (s <= 0.5 / voxel_size).float()
    # Never amplify by more than e^6 (over-sharpening at high frequency).
    h = torch.exp(log_h.clamp(max=6.0)) * cosine_lowpass(s, cutoff, edge) * band

    # Envelope ("inside the protein") from the atom density itself.
    env = torch.fft.irfftn(ft * _gauss_filter(s2, _ENVELOPE_SIGMA), s=shape)
    inside_ref = float(torch.quantile(env.flatten()[:: max(1, env.numel() // 200000)], 0.99))
    occ = (env / max(inside_ref * 0.5, 1e-9)).clamp(0, 1)  # 1 inside, 0 in solvent

    # 6. Detergent / lipid belt.
    rng = streams["detergent"]
    if rng.random() < cfg.detergent_prob:
        ft = ft + _belt(rng, ft, s2, shape, origin, v_sim, com, prot_xyz, occ, params)
    else:
        params["detergent"] = False

    sig_ft = ft * h
    signal = torch.fft.irfftn(sig_ft, s=shape)

    # 5. Local resolution: blend in a copy blurred by local_b, by a smooth weight.
    rng = streams["local_b"]
    local_b = _uniform(rng, cfg.local_b_range)
    params["local_b"] = local_b
    if local_b > 0:
        wfield = _local_weight(rng, shape, origin, v_sim, com, prot_xyz, ft, s2, params)
        blurred = torch.fft.irfftn(sig_ft * torch.exp(-local_b * s2 / 4), s=shape)
        signal = signal + wfield * (blurred - signal)

    # 7. Coloured noise.
    rng = streams["noise"]
    noise_level = _uniform(rng, cfg.noise_level_range)
    noise_b = _uniform(rng, cfg.noise_b_range)
    white = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    nshape = torch.exp((-noise_b * s2 / 4).clamp(max=6.0)) * band
    if rng.random() < cfg.noise_unfiltered_prob:
        noise_cut = None  # real maps that were not low-passed: noise up to Nyquist
    else:
        noise_cut = cutoff * float(rng.uniform(1.0, 1.3))
        nshape = nshape * cosine_lowpass(s, noise_cut, edge)
    noise = torch.fft.irfftn(torch.fft.rfftn(white) * nshape, s=shape)
    inside = occ > 0.5
    sig_sd = float(signal[inside].std()) if bool(inside.any()) else float(signal.std())
    noise = noise * (noise_level * sig_sd / max(float(noise.std()), 1e-12))
    params.update(noise_level=noise_level, noise_b=noise_b, noise_cutoff=noise_cut)
    data = signal + noise

    # 8. Solvent mask: soft (dilated envelope), or a hard zone (as ChimeraX "volume zone":
    # zero beyond a distance from the model's atoms, like the EMDB excerpts in real_maps/).
    rng = streams["mask"]
    masked = bool(rng.random() < cfg.mask_prob)
    params["masked"] = masked
    if masked and rng.random() < cfg.zone_mask_share:
        radius = _uniform(rng, cfg.zone_radius_range)
        data = data * _zone(prot_xyz, shape, origin, v_sim, radius)
        params.update(mask_kind="zone", zone_radius=radius)
    elif masked:
        dilate = float(rng.uniform(2.0, 6.0))
        soft = torch.fft.irfftn(
            torch.fft.rfftn((env > inside_ref * 0.15).float()) * _gauss_filter(s2, dilate),
            s=shape,
        )
        data = data * (soft / 0.3).clamp(0, 1)
        params.update(mask_kind="soft", mask_dilate=dilate)

    grid = MapGrid(
        data=data.numpy().astype(np.float32, copy=False),
        voxel_size=np.full(3, v_sim, np.float32),
        origin=origin.astype(np.float32),
    )
    grid = resample(grid, voxel_size=voxel_size)
    return SimulatedMap(grid=grid, protein=target, resolution=resolution, params=params)


def _zone(xyz: np.ndarray, shape, origin, voxel: float, radius: float) -> torch.Tensor:
    """1 on voxels within ``radius`` (A) of any atom, else 0 (FFT convolution with a ball;
    atoms are rounded to their nearest voxel)."""
    nz, ny, nx = shape
    ind = torch.zeros(shape, dtype=torch.float32)
    ijk = np.round((xyz - origin) / voxel).astype(np.int64)
    ijk = np.clip(ijk, 0, np.array([nx, ny, nz]) - 1)
    ind[ijk[:, 2], ijk[:, 1], ijk[:, 0]] = 1.0
    # Periodic distances from voxel 0 along each axis.
    dz = torch.minimum(torch.arange(nz), nz - torch.arange(nz)).float()[:, None, None]
    dy = torch.minimum(torch.arange(ny), ny - torch.arange(ny)).float()[None, :, None]
    dx = torch.minimum(torch.arange(nx), nx - torch.arange(nx)).float()[None, None, :]
    ball = ((dx**2 + dy**2 + dz**2) * voxel**2 <= radius**2).float()
    conv = torch.fft.irfftn(torch.fft.rfftn(ind) * torch.fft.rfftn(ball), s=shape)
    return (conv > 0.5).float()


def _local_weight(rng, shape, origin, voxel, com, prot_xyz, ft, s2, params) -> torch.Tensor:
    """Weight in [0, 1] of the blurred copy: far from the centre and low contact -> 1."""
    nz, ny, nx = shape
    radius = float(np.percentile(np.linalg.norm(prot_xyz - com, axis=1), 95)) + 1e-6
    z = origin[2] + voxel * torch.arange(nz, dtype=torch.float32)[:, None, None]
    y = origin[1] + voxel * torch.arange(ny, dtype=torch.float32)[None, :, None]
    x = origin[0] + voxel * torch.arange(nx, dtype=torch.float32)[None, None, :]
    r = torch.sqrt((x - com[0]) ** 2 + (y - com[1]) ** 2 + (z - com[2]) ** 2) / radius
    # Contact: atom density at a 6 A scale, relative to its high values.
    contact = torch.fft.irfftn(ft * _gauss_filter(s2, 6.0), s=shape)
    ref = float(torch.quantile(contact.flatten()[:: max(1, contact.numel() // 200000)], 0.99))
    low_contact = 1 - (contact / max(ref, 1e-9)).clamp(0, 1)
    alpha = float(rng.uniform(0.0, 1.0))  # radial share of the weight
    w = (alpha * (r - 0.3) / 0.7 + (1 - alpha) * low_contact).clamp(0, 1)
    params["local_radial_share"] = alpha
    return w


def _belt(rng, ft, s2, shape, origin, voxel, com, prot_xyz, occ, params) -> torch.Tensor:
    """Fourier transform of a detergent/lipid belt: a slab around the protein, outside it."""
    nz, ny, nx = shape
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    proj = (prot_xyz - com) @ axis
    centre = float(rng.uniform(np.percentile(proj, 25), np.percentile(proj, 75)))
    half = float(rng.uniform(12.0, 20.0))
    reach = float(rng.uniform(6.0, 14.0))  # how far the belt extends from the protein
    amp = float(rng.uniform(0.15, 0.45))
    z = origin[2] + voxel * torch.arange(nz, dtype=torch.float32)[:, None, None]
    y = origin[1] + voxel * torch.arange(ny, dtype=torch.float32)[None, :, None]
    x = origin[0] + voxel * torch.arange(nx, dtype=torch.float32)[None, None, :]
    h = (x - com[0]) * axis[0] + (y - com[1]) * axis[1] + (z - com[2]) * axis[2] - centre
    slab = (1 - ((h.abs() - half) / 4.0).clamp(0, 1))  # soft slab edges
    wide = torch.fft.irfftn(ft * _gauss_filter(s2, reach), s=shape)
    ref = float(torch.quantile(wide.flatten()[:: max(1, wide.numel() // 200000)], 0.99))
    near = (wide / max(0.25 * ref, 1e-9)).clamp(0, 1)
    texture = 1 + 0.5 * torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    # Mean atom density inside the protein, per voxel: the belt is a fraction of it.
    dens_inside = float(torch.fft.irfftn(ft, s=shape)[occ > 0.5].mean()) if bool(
        (occ > 0.5).any()) else 0.0
    belt = amp * dens_inside * slab * near * (1 - occ) * texture
    params.update(detergent=True, belt_axis=axis.tolist(), belt_half_width=half,
                  belt_reach=reach, belt_amplitude=amp)
    return torch.fft.rfftn(belt) * _gauss_filter(s2, float(rng.uniform(1.5, 3.0)))
