"""Chain linking on a real structure's backbone (3J9S), shuffled, with noisy edge predictions."""

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from chimerax.modelangelo.chains import (
    break_cycles,
    find_duplicates,
    link_ca_only,
    link_chains,
)
from chimerax.modelangelo.config import PostprocessConfig
from chimerax.modelangelo.protein import load_protein

DEPOSITED = Path("/work/shared/data/real_maps/emd_6272/3j9s_deposited.cif")


@pytest.fixture(scope="module")
def backbone():
    """True backbone (N, CA, C) [397, 3, 3] of 3J9S chain A (one unbroken chain)."""
    p = load_protein(DEPOSITED)
    assert p.atom_mask[:, :3].all() and len(p.chain_names) == 1
    return p.atom_positions[:, :3].astype(np.float64)


def shuffled_graph(bb, rng, *, k=12, coord_noise=0.15, logit_noise=0.7, bonded_logit=3.0,
                   true_link=None):
    """Shuffle nodes; k-NN edges whose logits say "bonded" for sequence neighbours.

    Returns (backbone, edge_index, edge_logits, perm) with perm[new] = old index.
    ``true_link(old_i, old_j)`` says which pairs are bonded (default: |i - j| == 1).
    """
    n = len(bb)
    noisy = bb + rng.normal(0, coord_noise, bb.shape)
    perm = rng.permutation(n)
    shuffled = noisy[perm]
    _, nb = cKDTree(shuffled[:, 1]).query(shuffled[:, 1], k + 1)
    nb = nb[:, 1:]
    old_i, old_j = perm[:, None], perm[nb]
    bonded = (np.abs(old_i - old_j) == 1) if true_link is None else true_link(old_i, old_j)
    logits = np.where(bonded, bonded_logit, -3.0) + rng.normal(0, logit_noise, bonded.shape)
    return shuffled, nb, logits, perm


def as_old(chains, perm):
    return [perm[c] for c in chains]


def test_recovers_order_and_direction_of_a_real_chain(backbone):
    rng = np.random.default_rng(1)
    bb, nb, logits, perm = shuffled_graph(backbone, rng)
    chains = as_old(link_chains(bb, nb, logits, PostprocessConfig()), perm)
    assert len(chains) == 1
    np.testing.assert_array_equal(chains[0], np.arange(len(backbone)))


def test_noisy_edges_break_only_where_the_bond_prediction_fails(backbone):
    """Heavy logit noise: false edges above 0.5 must not be used; missed bonds split."""
    rng = np.random.default_rng(2)
    bb, nb, logits, perm = shuffled_graph(backbone, rng, logit_noise=2.0, bonded_logit=1.5)
    n = len(backbone)
    # Which true bonds remain visible (either row predicts p >= 0.5)?
    visible = np.zeros(n - 1, bool)
    for new_i in range(n):
        for slot, new_j in enumerate(nb[new_i]):
            a, b = perm[new_i], perm[new_j]
            if abs(a - b) == 1 and logits[new_i, slot] >= 0:
                visible[min(a, b)] = True
    false_pos = sum(int(abs(perm[i] - perm[j]) != 1 and logits[i, s] >= 0)
                    for i in range(n) for s, j in enumerate(nb[i]))
    assert false_pos > 50 and (~visible).sum() >= 2  # the test really is noisy
    chains = as_old(link_chains(bb, nb, logits, PostprocessConfig()), perm)
    for c in chains:  # every chain is a run of consecutive residues, N -> C
        assert np.all(np.diff(c) == 1)
    assert len(chains) == 1 + (~visible).sum()
    assert sorted(np.concatenate(chains).tolist()) == list(range(n))


def test_long_peptide_bond_splits_the_chain(backbone):
    moved = backbone.copy()
    bond = moved[200, 0] - moved[199, 2]
    moved[200:] += 1.5 * bond / np.linalg.norm(bond)  # C(199)-N(200) now ~2.8 A
    gap = np.linalg.norm(moved[199, 2] - moved[200, 0])
    cfg = PostprocessConfig()
    assert gap > cfg.max_peptide_bond
    rng = np.random.default_rng(3)
    bb, nb, logits, perm = shuffled_graph(moved, rng, coord_noise=0.05)
    chains = as_old(link_chains(bb, nb, logits, cfg), perm)
    assert len(chains) == 2
    np.testing.assert_array_equal(chains[0], np.arange(200))  # longest first
    np.testing.assert_array_equal(chains[1], np.arange(200, len(backbone)))


def test_direction_comes_from_the_geometry(backbone):
    """Reversing every backbone's N and C reverses the chain."""
    rng = np.random.default_rng(4)
    sub = backbone[:60]
    bb, nb, logits, perm = shuffled_graph(sub, rng)
    forward = as_old(link_chains(bb, nb, logits, PostprocessConfig()), perm)
    swapped = bb[:, ::-1].copy()  # (C, CA, N): every peptide now "points" the other way
    backward = as_old(link_chains(swapped, nb, logits, PostprocessConfig()), perm)
    np.testing.assert_array_equal(forward[0], np.arange(60))
    np.testing.assert_array_equal(backward[0], np.arange(60)[::-1])


def test_duplicated_nodes_keep_the_more_confident_copy(backbone):
    sub = backbone[:80]
    rng = np.random.default_rng(5)
    dup_of = np.array([10, 40, 41])
    both = np.concatenate([sub, sub[dup_of] + rng.normal(0, 0.2, (3, 3, 3))])  # 80, 81, 82
    confidence = np.full(len(both), 50.0)
    confidence[[80, 81]] = 90.0  # copies of 10 and 40 are better; 41's copy is worse
    confidence[82] = 10.0
    n = len(both)

    def true_link(i, j):
        orig = np.concatenate([np.arange(80), dup_of])
        return np.abs(orig[i] - orig[j]) == 1

    bb, nb, logits, perm = shuffled_graph(both, rng, true_link=true_link, coord_noise=0.05)
    conf = confidence[perm]
    chains = as_old(link_chains(bb, nb, logits, PostprocessConfig(), confidence=conf), perm)
    assert len(chains) == 1
    expected = np.arange(80)
    expected[10], expected[40] = 80, 81
    np.testing.assert_array_equal(chains[0], expected)
    keep = find_duplicates(both[:, 1], confidence, 1.0)
    assert keep.sum() == 80 and not keep[[10, 40, 82]].any()
    assert n == 83


def test_branch_takes_the_better_geometry(backbone):
    """Node 20 has two candidate successors: the true 21 and a decoy close to it."""
    sub = backbone[:40].copy()
    decoy = sub[21] + np.array([1.3, 0.0, 0.0])  # 1.3 A away: not a duplicate, worse bond
    both = np.concatenate([sub, decoy[None]])
    edge_index = np.full((41, 3), -1)
    edge_logits = np.full((41, 3), 4.0)
    for i in range(39):
        edge_index[i, 0] = i + 1
    edge_index[20, 1] = 40
    edge_index[40, 0] = 22  # decoy also "continues" to 22
    chains = link_chains(both, edge_index, edge_logits, PostprocessConfig())
    np.testing.assert_array_equal(chains[0], np.arange(40))
    assert [len(c) for c in chains] == [40, 1]


def test_edges_below_threshold_are_ignored(backbone):
    sub = backbone[:10]
    edge_index = np.stack([np.r_[np.arange(1, 10), -1]], axis=1)
    edge_logits = np.full((10, 1), 3.0)
    edge_logits[4, 0] = -0.1  # p(4-5) just below 0.5
    chains = link_chains(sub, edge_index, edge_logits, PostprocessConfig())
    assert [c.tolist() for c in chains] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]  # ties: first node


def test_cycle_is_opened_at_its_weakest_link():
    succ = np.array([1, 2, 3, 0, -1])
    costs = {(0, 1): 1.3, (1, 2): 1.4, (2, 3): 2.2, (3, 0): 1.35}
    out = break_cycles(succ, costs)
    assert out.tolist() == [1, 2, -1, 0, -1]


def test_ca_only_fallback_builds_paths(backbone):
    ca = backbone[:120, 1]
    rng = np.random.default_rng(6)
    perm = rng.permutation(len(ca))
    chains = as_old(link_ca_only(ca[perm], PostprocessConfig()), perm)
    assert sorted(np.concatenate(chains).tolist()) == list(range(120))
    # Direction is unknown, but most links are true sequence neighbours.
    links = sum(len(c) - 1 for c in chains)
    true_links = sum(int(np.sum(np.abs(np.diff(c)) == 1)) for c in chains)
    assert true_links >= 0.85 * links and links >= 100
    assert all(len(set(c.tolist())) == len(c) for c in chains)


def test_empty_and_unlinked_input():
    cfg = PostprocessConfig()
    assert link_chains(np.zeros((0, 3, 3)), np.zeros((0, 4), int), np.zeros((0, 4)), cfg) == []
    bb = np.zeros((3, 3, 3))
    bb[:, 1] = [[0, 0, 0], [10, 0, 0], [20, 0, 0]]
    chains = link_chains(bb, np.full((3, 2), -1), np.zeros((3, 2)), cfg)
    assert sorted(c.tolist() for c in chains) == [[0], [1], [2]]


def test_learned_direction_logits_enter_the_cost(backbone):
    """With ``next_logits`` saying the decoy (not 21) follows 20, the decoy wins the branch."""
    sub = backbone[:40].copy()
    decoy = sub[21] + np.array([0.6, 0.0, 0.0])
    both = np.concatenate([sub, decoy[None]])
    edge_index = np.full((41, 3), -1)
    edge_logits = np.full((41, 3), 4.0)
    for i in range(39):
        edge_index[i, 0] = i + 1
    edge_index[20, 1] = 40
    cfg = PostprocessConfig(duplicate_distance=0.5)
    plain = link_chains(both, edge_index, edge_logits, cfg)
    next_logits = np.full((41, 3), 4.0)
    next_logits[20, 0], next_logits[20, 1] = -6.0, 6.0  # 21 is not next of 20; 40 is
    steered = link_chains(both, edge_index, edge_logits, cfg, next_logits=next_logits)
    assert plain[0][:22].tolist() == list(range(22))  # geometry alone: 20 -> 21
    assert [20, 40] in [c[i:i + 2].tolist() for c in steered for i in range(len(c) - 1)]
