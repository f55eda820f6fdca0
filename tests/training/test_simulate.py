import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from chimerax.modelangelo import residue_constants as rc
from chimerax.modelangelo.config import SimulationConfig
from chimerax.modelangelo.errors import ModelAngeloError
from chimerax.modelangelo.mapio import interpolate
from chimerax.modelangelo.protein import load_protein
from chimerax.modelangelo.training.simulate import (
    electron_form_factor,
    load_training_protein,
    random_rotation,
    simulate_map,
    splat_atoms,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
torch.set_num_threads(1)

# Everything optional switched off: plain density, a little noise, no mask.
QUIET = SimulationConfig(
    noise_level_range=(0.05, 0.05), ligand_blob_prob=0.0, detergent_prob=0.0,
    drop_chain_prob=0.0, drop_segment_prob=0.0, mask_prob=0.0, sharpen_prob=0.0,
    anisotropic_prob=0.0, local_b_range=(0.0, 0.0), b_factor_extra_range=(0.0, 0.0),
    atom_b_base_range=(20.0, 20.0), atom_b_spread_range=(0.0, 0.0),
    sidechain_b_step_range=(0.0, 0.0), carboxylate_b_range=(0.0, 0.0),
    carboxylate_occupancy_range=(1.0, 1.0), flexible_occupancy_low_range=(1.0, 1.0),
)


@pytest.fixture(scope="module")
def complex_1a2k():
    return load_protein(DATA / "structures" / "db55_1A2K_b.cif.gz")


@pytest.fixture(scope="module")
def chain_b(complex_1a2k):
    return complex_1a2k.select(complex_1a2k.chain_index == 2)


def distance_to_atoms(grid, protein):
    """[nz, ny, nx] distance (A) of each voxel to the nearest protein atom."""
    from scipy.spatial import cKDTree

    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    xyz = grid.ijk_to_xyz(np.stack([i, j, k], -1).reshape(-1, 3))
    atoms = protein.atom_positions[protein.atom_mask]
    return cKDTree(atoms).query(xyz)[0].reshape(grid.shape)


def zscore_at(grid, xyz):
    d = grid.data
    return (interpolate(grid, xyz) - d.mean()) / d.std()


def test_deterministic_from_seed(chain_b):
    cfg = SimulationConfig()
    a = simulate_map(chain_b, np.random.default_rng(7), cfg)
    b = simulate_map(chain_b, np.random.default_rng(7), cfg)
    c = simulate_map(chain_b, np.random.default_rng(8), cfg)
    assert np.array_equal(a.grid.data, b.grid.data)
    assert np.array_equal(a.grid.origin, b.grid.origin)
    assert np.array_equal(a.protein.atom_positions, b.protein.atom_positions)
    assert a.params == b.params and a.resolution == b.resolution
    assert a.grid.data.shape != c.grid.data.shape or not np.allclose(a.grid.data, c.grid.data)
    assert np.allclose(a.grid.voxel_size, 1.5)
    assert cfg.resolution_range[0] <= a.resolution <= cfg.resolution_range[1]


def test_stage_draws_do_not_shift_other_stages(chain_b):
    # Anisotropy on/off changes how many numbers the filter stage draws; the stages after
    # it (local B, noise, mask) and before it (rotation, atom B) must draw the same.
    base = dataclasses.replace(QUIET, anisotropic_prob=0.0, local_b_range=(0.0, 150.0),
                               noise_level_range=(0.05, 0.8), mask_prob=0.5)
    a = simulate_map(chain_b, np.random.default_rng(11), base, resolution=3.0)
    b = simulate_map(chain_b, np.random.default_rng(11),
                     dataclasses.replace(base, anisotropic_prob=1.0), resolution=3.0)
    assert "aniso_b" in b.params and "aniso_b" not in a.params
    for key in ("rotation", "local_b", "noise_level", "noise_b", "noise_cutoff", "masked"):
        assert a.params[key] == b.params[key], key
    # ... and a new draw in an early stage leaves the later ones alone too
    c = simulate_map(chain_b, np.random.default_rng(11),
                     dataclasses.replace(base, drop_segment_prob=1.0), resolution=3.0)
    assert len(c.protein) < len(a.protein)
    for key in ("rotation", "b_global", "local_b", "noise_level", "masked"):
        assert a.params[key] == c.params[key], key


def test_ca_on_high_density_after_rotation(chain_b):
    sim = simulate_map(chain_b, np.random.default_rng(0), QUIET, resolution=2.5)
    p = sim.protein
    assert len(p) == len(chain_b)
    # Rotated (coordinates changed), rigidly (distances kept).
    assert not np.allclose(p.ca, chain_b.ca, atol=1.0)
    d_in = np.linalg.norm(chain_b.ca[:, None] - chain_b.ca[None], axis=-1)
    d_out = np.linalg.norm(p.ca[:, None] - p.ca[None], axis=-1)
    assert np.allclose(d_in, d_out, atol=1e-3)
    z_ca = zscore_at(sim.grid, p.ca)
    assert np.median(z_ca) > 2.0
    # The un-rotated coordinates do not fit the map.
    assert np.median(zscore_at(sim.grid, chain_b.ca)) < 1.0
    # Solvent (>= 6 A from every atom) is low.
    grid = sim.grid
    from scipy.spatial import cKDTree

    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    xyz = grid.ijk_to_xyz(np.stack([i, j, k], -1).reshape(-1, 3))
    atoms = p.atom_positions[p.atom_mask]
    far = cKDTree(atoms).query(xyz)[0] > 6.0
    assert far.sum() > 1000
    z = (grid.data - grid.data.mean()) / grid.data.std()
    assert abs(np.median(z.reshape(-1)[far])) < 0.5 < np.median(z_ca) / 4
    # Every residue lies inside the box, away from the edges.
    lo, hi = grid.extent
    assert np.all(atoms > lo + 4) and np.all(atoms < hi - 4)


def radial_power(grid):
    d = grid.data - grid.data.mean()
    f = np.abs(np.fft.rfftn(d)) ** 2
    nz, ny, nx = d.shape
    v = grid.voxel_size[0]
    s = np.sqrt(np.fft.fftfreq(nz, v)[:, None, None] ** 2 + np.fft.fftfreq(ny, v)[None, :, None]
                ** 2 + np.fft.rfftfreq(nx, v)[None, None, :] ** 2)
    return s, f


def band(s, f, lo, hi):
    m = (s >= lo) & (s < hi)
    return f[m].mean()


def test_resolution_sets_the_fall_off(chain_b):
    cfg = dataclasses.replace(QUIET, noise_level_range=(0.0, 0.0))
    ratios = {}
    for res in (2.2, 4.0):
        sim = simulate_map(chain_b, np.random.default_rng(3), cfg, resolution=res)
        s, f = radial_power(sim.grid)
        low = band(s, f, 1 / 12, 1 / 8)
        ratios[res] = band(s, f, 1 / 3.6, 1 / 3.1) / low
        if res == 4.0:
            # Nothing beyond the low-pass edge (at most 1.05 * 1.2 / resolution) but the
            # resampling's own leakage (up to ~1e-6 of the low band, depending on the draws).
            assert band(s, f, 1.27 / res, 1 / 3.0) < 1e-5 * low
            assert band(s, f, 1 / 6, 1 / 4.8) > 1e-3 * low
    assert ratios[2.2] > 100 * ratios[4.0]
    assert ratios[2.2] > 1e-3


def test_noise_follows_noise_level(chain_b):
    def solvent_sd(level):
        cfg = dataclasses.replace(QUIET, noise_level_range=(level, level))
        sim = simulate_map(chain_b, np.random.default_rng(5), cfg, resolution=3.0)
        far = distance_to_atoms(sim.grid, sim.protein) > 6.0
        return sim.grid.data[far].std() / sim.grid.data.std(), sim.params["noise_level"]

    quiet, lvl0 = solvent_sd(0.02)
    loud, lvl1 = solvent_sd(0.6)
    assert (lvl0, lvl1) == (0.02, 0.6)
    assert loud > 5 * quiet


def test_dropped_chain_missing_from_map_and_target(complex_1a2k):
    cfg = dataclasses.replace(QUIET, drop_chain_prob=1.0)
    sim = simulate_map(complex_1a2k, np.random.default_rng(1), cfg, resolution=3.0)
    (dropped,) = sim.params["dropped_chains"]
    assert dropped not in sim.protein.chain_names
    assert len(sim.protein) == int((complex_1a2k.chain_index != complex_1a2k.chain_names.index(
        dropped)).sum())
    # The dropped chain's CAs, moved like the rest, sit on low density.
    rot = np.asarray(sim.params["rotation"])
    full = complex_1a2k.atom_positions[complex_1a2k.atom_mask].astype(np.float64)
    com = full.mean(0)
    sel = complex_1a2k.chain_index == complex_1a2k.chain_names.index(dropped)
    kept_atoms = complex_1a2k.atom_positions[~sel][complex_1a2k.atom_mask[~sel]]
    com = kept_atoms.astype(np.float64).mean(0)
    ca_gone = (complex_1a2k.ca[sel] - com) @ rot.T + com
    z_gone = zscore_at(sim.grid, ca_gone)
    z_kept = zscore_at(sim.grid, sim.protein.ca)
    assert np.median(z_kept) > 2.0
    # Where the dropped chain's atoms were there is no density, except where they touch
    # the kept chains.
    from scipy.spatial import cKDTree

    far_from_kept = cKDTree(sim.protein.atom_positions[sim.protein.atom_mask]).query(
        ca_gone)[0] > 6.0
    assert far_from_kept.sum() > 10
    assert np.median(z_gone[far_from_kept]) < 0.5


def test_blobs_belt_mask_keep_targets(chain_b):
    cfg = dataclasses.replace(QUIET, ligand_blob_prob=1.0, detergent_prob=1.0, mask_prob=1.0,
                              noise_level_range=(0.3, 0.3))
    sim = simulate_map(chain_b, np.random.default_rng(2), cfg, resolution=3.5)
    assert sim.params["ligand_blob_atoms"] > 0 and sim.params["detergent"]
    assert sim.params["masked"]
    assert len(sim.protein) == len(chain_b)
    assert np.median(zscore_at(sim.grid, sim.protein.ca)) > 1.5
    # Masked: the box corners (far from everything) are ~0.
    d = sim.grid.data
    corner = np.abs(d[:3, :3, :3]).max()
    assert corner < 0.02 * d.max()


def test_splat_matches_scattering_factor_integral():
    # One carbon atom: its density integrates to f(0) = sum(a) and peaks at the atom.
    a, _ = electron_form_factor("C")
    v = 0.5
    origin = np.zeros(3)
    dens = splat_atoms(np.array([[10.2, 9.9, 10.0]]), ["C"], np.array([30.0]), (40, 40, 40),
                       origin, v).numpy()
    assert dens.sum() * v**3 == pytest.approx(a.sum(), rel=1e-3)
    k, j, i = np.unravel_index(dens.argmax(), dens.shape)
    assert (i, j, k) == (20, 20, 20)
    # Sulfur scatters more than carbon.
    dens_s = splat_atoms(np.array([[10.0, 10.0, 10.0]]), ["S"], np.array([30.0]), (40, 40, 40),
                         origin, v).numpy()
    assert dens_s.sum() > 1.5 * dens.sum()


def test_random_rotation_is_proper():
    r = random_rotation(np.random.default_rng(0))
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-9) and np.linalg.det(r) == pytest.approx(1)


def test_load_training_protein_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELANGELO_DATA", str(tmp_path))
    with pytest.raises(ModelAngeloError, match="MODELANGELO_DATA"):
        load_training_protein("db55_1A2K_b")
    p = load_training_protein("db55_1A2K_b", DATA)
    assert len(p) == 444


def test_speed_500_residues(complex_1a2k):
    # 1A2K (444 residues) plus chain B again, shifted: ~560 residues, ~4,500 atoms.
    p = complex_1a2k
    rng = np.random.default_rng(0)
    simulate_map(p, rng, SimulationConfig())  # warm-up
    times = []
    for seed in range(5):
        t = time.perf_counter()
        simulate_map(p, np.random.default_rng(seed), SimulationConfig())
        times.append(time.perf_counter() - t)
    n_atoms = int(p.atom_mask.sum())
    print(f"\nsimulate_map: {len(p)} residues, {n_atoms} atoms, median "
          f"{np.median(times):.3f} s (max {max(times):.3f} s) on {torch.get_num_threads()} thread")
    assert rc.CA_IDX == 1


def test_zone_mask_zeroes_far_solvent(chain_b):
    cfg = dataclasses.replace(QUIET, mask_prob=1.0, zone_mask_share=1.0,
                              zone_radius_range=(5.0, 5.0), noise_level_range=(0.5, 0.5))
    sim = simulate_map(chain_b, np.random.default_rng(4), cfg, resolution=3.0)
    assert sim.params["mask_kind"] == "zone" and sim.params["zone_radius"] == 5.0
    from scipy.spatial import cKDTree

    grid = sim.grid
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    xyz = grid.ijk_to_xyz(np.stack([i, j, k], -1).reshape(-1, 3))
    dist = cKDTree(sim.protein.atom_positions[sim.protein.atom_mask]).query(xyz)[0]
    d = np.abs(grid.data.reshape(-1))
    assert d[dist > 8.0].max() < 0.05 * d.max()  # only resampling ripples beyond the zone
    assert np.median(d[(dist > 2.5) & (dist < 3.5)]) > 0.05 * d.max()  # noise inside it


def test_cli_writes_map_in_model_frame(tmp_path):
    from chimerax.modelangelo.cli import main
    from chimerax.modelangelo.mapio import read_map

    model = DATA / "real_maps" / "emd_2566" / "3j6b_deposited.cif"
    out = tmp_path / "sim.mrc"
    args = ["simulate", str(model), "-o", str(out), "--resolution", "3.0", "--seed", "0",
            "--params", str(tmp_path / "p.json")]
    assert main(args) == 0
    grid = read_map(out)
    assert np.allclose(grid.voxel_size, 1.5)
    p = load_protein(model)
    assert np.median(zscore_at(grid, p.ca)) > 2.0  # no rotation: overlays the model
    assert '"resolution": 3.0' in (tmp_path / "p.json").read_text()
    before = out.read_bytes()
    assert main(args[:-2]) == 2  # refuses to overwrite
    assert out.read_bytes() == before


def test_only_nearby_ligand_atoms(complex_1a2k, chain_b):
    assert len(chain_b.other_positions) == len(complex_1a2k.other_positions) > 0
    sim = simulate_map(chain_b, np.random.default_rng(0), QUIET, resolution=3.0)
    p = sim.protein
    assert sim.params["other_atoms"] == len(p.other_positions) == len(p.other_elements)
    if len(p.other_positions):
        from scipy.spatial import cKDTree

        d = cKDTree(p.atom_positions[p.atom_mask]).query(p.other_positions)[0]
        assert d.max() <= 10.0 + 1e-3


def test_side_chains_fade_outwards_as_in_real_maps(chain_b):
    """Extra B per bond from CA: density at CD/CE atoms relative to the backbone drops
    from about what the backbone has to the 0.5-0.7 the EMDB test maps show."""
    def relative_density(step):
        cfg = dataclasses.replace(QUIET, sidechain_b_step_range=(step, step))
        sim = simulate_map(chain_b, np.random.default_rng(0), cfg, resolution=3.0, rotate=False)
        p = sim.protein
        names = np.array(rc.ATOM_TYPES)
        backbone = p.atom_mask & np.isin(names, ["N", "CA", "C", "O"])[None]
        outer = p.atom_mask & np.array([n[1:2] in ("D", "E") for n in names])[None]
        at = lambda m: interpolate(sim.grid, p.atom_positions[m]).mean()  # noqa: E731
        return at(outer) / at(backbone), sim.params["sidechain_b_step"]

    flat, step0 = relative_density(0.0)
    faded, step30 = relative_density(30.0)
    assert (step0, step30) == (0.0, 30.0)
    assert flat > 0.8
    assert 0.45 < faded < 0.75


def test_partial_occupancy_of_flexible_ends_and_carboxylates(chain_b):
    """Occupancy below 1 weakens exactly the atoms it is meant for: Asp/Glu carboxylate
    oxygens and the flexible ends (CD on, no rigid ring), not rings or the backbone."""
    names = np.array(rc.ATOM_TYPES)

    def densities(carboxylate, low):
        cfg = dataclasses.replace(QUIET, carboxylate_occupancy_range=(carboxylate, carboxylate),
                                  flexible_occupancy_low_range=(low, low))
        sim = simulate_map(chain_b, np.random.default_rng(0), cfg, resolution=2.5, rotate=False)
        p = sim.protein
        at = lambda m: float(interpolate(sim.grid, p.atom_positions[m]).mean())  # noqa: E731
        aa = np.array(list(rc.RESTYPES + "X"))[p.aatype][:, None]
        backbone = p.atom_mask & np.isin(names, ["N", "CA", "C"])[None]
        carboxyl = p.atom_mask & (((aa == "D") & np.isin(names, ["OD1", "OD2"])[None])
                                  | ((aa == "E") & np.isin(names, ["OE1", "OE2"])[None]))
        lys_end = p.atom_mask & (aa == "K") & np.isin(names, ["CE", "NZ"])[None]
        ring = p.atom_mask & np.isin(aa, ["F", "Y"]) & np.isin(names, ["CE1", "CE2", "CZ"])[None]
        return {k: at(m) / at(backbone) for k, m in
                (("carboxyl", carboxyl), ("lys", lys_end), ("ring", ring))}

    full = densities(1.0, 1.0)
    weak = densities(0.2, 0.0)
    assert weak["carboxyl"] < 0.6 * full["carboxyl"]
    assert weak["lys"] < 0.8 * full["lys"]
    assert weak["ring"] == pytest.approx(full["ring"], rel=0.1)
