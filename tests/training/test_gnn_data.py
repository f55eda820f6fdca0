"""GNN training examples: shapes, noise, targets, false positives, CNN nodes, determinism."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from chimerax.modelangelo import geometry as geo
from chimerax.modelangelo import residue_constants as rc
from chimerax.modelangelo.config import CNNConfig, Config, SimulationConfig
from chimerax.modelangelo.protein import load_protein
from chimerax.modelangelo.training.gnn_data import (
    GNNDataConfig,
    chain_predecessors,
    edge_targets,
    make_example,
    tokenize_sequences,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
torch.set_num_threads(1)

# No missing chains/segments, so every crop residue keeps its density and target.
NO_DROP = dataclasses.replace(SimulationConfig(), drop_chain_prob=0.0, drop_segment_prob=0.0)


@pytest.fixture(scope="module")
def protein():
    return load_protein(DATA / "structures" / "db55_1A2K_b.cif.gz")  # chains C (196), A, B (124)


@pytest.fixture(scope="module")
def cfg():
    c = Config()
    c.simulation = NO_DROP
    return c


@pytest.fixture(scope="module")
def noise_example(protein, cfg):
    dcfg = GNNDataConfig(crop_nodes=250, no_sequence_prob=0.0)
    return make_example(protein, np.random.default_rng(7), cfg, dcfg, mode="noise")


def test_shapes_and_dtypes(noise_example):
    ex = noise_example
    m = len(ex)
    assert m == 250  # every crop residue is a node (nothing dropped)
    assert ex.node_xyz.shape == (m, 3) and ex.node_xyz.dtype == np.float32
    assert ex.init_rotations.shape == (m, 3, 3)
    assert geo.is_rotation(torch.from_numpy(ex.init_rotations))
    assert ex.atom_positions.shape == (m, 37, 3) and ex.atom_mask.shape == (m, 37)
    assert ex.torsions.shape == (m, 7, 2) and ex.torsion_mask.shape == (m, 7)
    for a in (ex.target_mask, ex.residue_index, ex.aatype, ex.prev_node, ex.next_node,
              ex.seq_position):
        assert a.shape == (m,)
    assert ex.target_mask.all() and ex.mode == "noise"
    assert ex.grid.data.ndim == 3 and np.allclose(ex.grid.voxel_size, 1.5)
    # The map holds every node (with some margin) and is normalised (solvent ~ 0).
    ijk = ex.grid.xyz_to_ijk(ex.node_xyz)
    assert np.all(ijk > 2) and np.all(ijk < np.array(ex.grid.data.shape[::-1]) - 3)
    assert abs(float(np.median(ex.grid.data))) < 0.1


def test_noise_is_the_papers(noise_example):
    ex = noise_example
    e = ex.node_xyz - ex.atom_positions[:, rc.CA_IDX]  # [M, 3]
    # e ~ N(0, 1/sqrt(3)) per coordinate: E|e| ~ 0.92 A, RMS |e| = 1 A.
    assert np.std(e) == pytest.approx(1 / math.sqrt(3), abs=0.05)
    assert np.linalg.norm(e, axis=1).mean() == pytest.approx(0.92, abs=0.07)
    assert np.abs(e.mean(0)).max() < 0.12


def test_targets_match_the_protein(noise_example):
    ex = noise_example
    p = ex.protein
    r = ex.residue_index
    np.testing.assert_array_equal(ex.atom_positions, p.atom_positions[r])
    np.testing.assert_array_equal(ex.atom_mask, p.atom_mask[r])
    np.testing.assert_array_equal(ex.aatype, p.aatype[r])
    assert len(np.unique(r)) == len(r)
    # Sequence positions point at the node's own residue type in the full sequences.
    seq = "".join(ex.sequences)
    letters = "".join(seq[i] for i in ex.seq_position)
    assert letters == rc.sequence_from_aatype(ex.aatype)
    # Full chain sequences (not the crop's): each is one of the structure's chains.
    full = set(load_protein(DATA / "structures" / "db55_1A2K_b.cif.gz").chain_sequences().values())
    assert set(ex.sequences) <= full and len(set(ex.sequences)) == len(ex.sequences)
    assert ex.seq_tokens.shape == (len(ex.sequences), max(map(len, ex.sequences)) + 2)


def test_chain_neighbour_targets(noise_example):
    ex = noise_example
    has_prev = ex.prev_node >= 0
    assert 0.7 * len(ex) < has_prev.sum() < len(ex)  # crops cut chains in places
    assert has_prev.sum() == (ex.next_node >= 0).sum()
    i = np.flatnonzero(has_prev)
    j = ex.prev_node[i]
    np.testing.assert_array_equal(ex.next_node[j], i)
    cn = np.linalg.norm(ex.atom_positions[j, rc.C_IDX] - ex.atom_positions[i, rc.N_IDX], axis=1)
    assert cn.max() < 2.0
    assert np.all(ex.protein.chain_index[ex.residue_index[i]]
                  == ex.protein.chain_index[ex.residue_index[j]])
    # Every residue whose predecessor is in the crop has it as prev_node.
    prev_row = chain_predecessors(ex.protein)
    node_of = {int(r): n for n, r in enumerate(ex.residue_index)}
    for n, r in enumerate(ex.residue_index):
        expect = node_of.get(int(prev_row[r]), -1) if prev_row[r] >= 0 else -1
        assert ex.prev_node[n] == expect


def test_torsion_targets_rebuild_the_side_chains(noise_example):
    ex = noise_example
    pos = torch.from_numpy(ex.atom_positions)
    rot, trans = geo.frames_from_backbone(pos[:, rc.N_IDX], pos[:, rc.CA_IDX], pos[:, rc.C_IDX])
    atoms, mask = geo.atom37_from_frames(rot, trans, torch.from_numpy(ex.aatype),
                                         torch.from_numpy(ex.torsions))
    both = mask.numpy() & ex.atom_mask
    err = np.linalg.norm(atoms.numpy() - ex.atom_positions, axis=-1)[both]
    assert np.sqrt(np.mean(err**2)) < 0.35  # ideal geometry vs deposited: small
    # phi needs the previous residue: defined exactly where a chain predecessor exists
    # in the simulated structure (context included), so at least where prev_node is set.
    assert ex.torsion_mask[ex.prev_node >= 0, 1].all()


def test_false_positives_are_masked_and_far_from_residues(protein, cfg):
    dcfg = GNNDataConfig(crop_nodes=200, miss_fraction_range=(0.05, 0.05),
                         fp_fraction_range=(0.1, 0.1))
    ex = make_example(protein, np.random.default_rng(3), cfg, dcfg, mode="cnn-like")
    fp = ~ex.target_mask
    assert 10 <= fp.sum() <= 20
    assert 170 <= ex.target_mask.sum() < 200  # misses
    assert np.all(ex.residue_index[fp] == -1) and np.all(ex.aatype[fp] == rc.UNK_INDEX)
    assert not ex.atom_mask[fp].any() and not ex.torsion_mask[fp].any()
    assert np.all(ex.prev_node[fp] == -1) and np.all(ex.next_node[fp] == -1)
    assert np.all(ex.seq_position[fp] == -1)
    fp_idx = set(np.flatnonzero(fp).tolist())
    assert not (set(ex.prev_node.tolist()) | set(ex.next_node.tolist())) & fp_idx
    d = np.linalg.norm(ex.node_xyz[fp][:, None] - ex.protein.ca[None], axis=-1)
    assert d.min() >= 3.0
    # Missed residues leave gaps in the chain-neighbour targets.
    assert (ex.prev_node[ex.target_mask] == -1).sum() > 5


def test_same_seed_same_example(protein, cfg):
    dcfg = GNNDataConfig(crop_nodes=80)
    a = make_example(protein, np.random.default_rng(11), cfg, dcfg)
    b = make_example(protein, np.random.default_rng(11), cfg, dcfg)
    c = make_example(protein, np.random.default_rng(12), cfg, dcfg)
    for name in ("node_xyz", "init_rotations", "target_mask", "atom_positions", "prev_node",
                 "seq_position"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.grid.data, b.grid.data)
    assert a.sequences == b.sequences and a.mode == b.mode
    assert len(a) != len(c) or not np.array_equal(a.node_xyz, c.node_xyz)


def test_no_sequence_mode(protein, cfg):
    dcfg = GNNDataConfig(crop_nodes=50, no_sequence_prob=1.0)
    ex = make_example(protein, np.random.default_rng(1), cfg, dcfg, mode="noise")
    assert ex.sequences == [] and np.all(ex.seq_position == -1)
    assert ex.seq_tokens.shape[0] == 0


class DensityAsLogit(nn.Module):
    """Stand-in CA 'CNN': the CA logit is 4x the density, offsets 0 (peaks on atoms)."""

    def forward(self, x):  # [B, 1, D, H, W]
        return torch.cat([4 * x, torch.zeros_like(x).expand(-1, 3, -1, -1, -1)], dim=1)


def test_cnn_nodes_are_matched_to_true_cas(protein, cfg):
    cnn = (DensityAsLogit(), CNNConfig(crop_size=32, tile_stride=24, peak_threshold=0.6))
    dcfg = GNNDataConfig(crop_nodes=120)
    ex = make_example(protein, np.random.default_rng(5), cfg, dcfg, cnn=cnn, mode="cnn")
    assert ex.mode == "cnn"
    t = ex.target_mask
    assert t.sum() > 20 and (~t).sum() > 0  # density peaks: some on CAs, many elsewhere
    d = np.linalg.norm(ex.node_xyz[t] - ex.atom_positions[t, rc.CA_IDX], axis=1)
    assert d.max() <= 3.0
    assert len(np.unique(ex.residue_index[t])) == t.sum()  # one-to-one
    assert ex.params["cnn_matched_crop"] == t.sum()
    with pytest.raises(ValueError):
        make_example(protein, np.random.default_rng(5), cfg, dcfg, mode="cnn")


def test_edge_targets():
    edge_index = torch.tensor([[1, 2], [0, 2], [1, 0]])
    prev = torch.tensor([-1, 0, 1])
    nxt = torch.tensor([1, 2, -1])
    nb, is_next = edge_targets(edge_index, prev, nxt)
    np.testing.assert_array_equal(nb.numpy(), [[1, 0], [1, 1], [1, 0]])
    np.testing.assert_array_equal(is_next.numpy(), [[1, 0], [0, 1], [0, 0]])


def test_tokens_match_the_encoder():
    from chimerax.modelangelo.model.esm_encoder import ESMEncoder

    enc = ESMEncoder.small(1, 16, 2)
    seqs = ["ACDXW", "MKU", "GGGGGGGG"]
    assert torch.equal(tokenize_sequences(seqs), enc.tokenize(seqs))
