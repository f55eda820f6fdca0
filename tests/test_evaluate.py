"""Model-vs-deposited metrics on constructed cases with known answers (real structures)."""

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial.distance import cdist

from chimerax.modelangelo import residue_constants as rc
from chimerax.modelangelo.errors import ModelAngeloError
from chimerax.modelangelo.evaluate import (
    evaluate_files,
    evaluate_models,
    evaluate_points,
    match_points,
)
from chimerax.modelangelo.protein import Protein, load_protein

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COMPLEX = DATA / "structures" / "db55_1A2K_b.cif.gz"  # 444 residues, chains C (196), A, B (124)
SINGLE = DATA / "real_maps" / "emd_6272" / "3j9s_deposited.cif"  # 397 residues, chain A


@pytest.fixture(scope="module")
def dep() -> Protein:
    p = load_protein(COMPLEX)
    assert len(p) == 444 and p.chain_names == ["C", "A", "B"]
    assert (p.aatype < 20).all()
    return p


def shifted(p: Protein, vector) -> Protein:
    v = np.asarray(vector, np.float32)
    return replace(p, atom_positions=(p.atom_positions + v) * p.atom_mask[..., None])


def concat(a: Protein, b: Protein) -> Protein:
    """Residues of ``a`` then ``b``; chains of ``b`` keep their names (merged by name)."""
    names = list(a.chain_names)
    remap = []
    for n in b.chain_names:
        if n not in names:
            names.append(n)
        remap.append(names.index(n))
    return Protein(
        atom_positions=np.concatenate([a.atom_positions, b.atom_positions]),
        atom_mask=np.concatenate([a.atom_mask, b.atom_mask]),
        aatype=np.concatenate([a.aatype, b.aatype]),
        residue_number=np.concatenate([a.residue_number, b.residue_number]),
        chain_index=np.concatenate([a.chain_index, np.asarray(remap)[b.chain_index]]),
        chain_names=names,
        b_factors=np.concatenate([a.b_factors, b.b_factors]),
    )


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


# --------------------------------------------------------------------------- whole models


@pytest.mark.parametrize("path", [COMPLEX, SINGLE])
def test_identical_copy_is_perfect(path):
    p = load_protein(path)
    r = evaluate_models(p, p)
    assert r.n_matched == r.n_deposited == r.n_predicted == len(p)
    assert r.residue_recall == 1.0 and r.precision == 1.0
    assert r.sequence_recall == 1.0 and r.sequence_match == 1.0
    assert r.backbone_rmsd == 0.0 and r.ca_rmsd == 0.0
    assert r.n_backbone_atoms == int(p.atom_mask[:, [0, 1, 2, 4]].sum())
    np.testing.assert_array_equal(r.matched_deposited, np.arange(len(p)))
    np.testing.assert_array_equal(r.matched_predicted, np.arange(len(p)))
    for ci, c in enumerate(r.chains):
        n = int((p.chain_index == ci).sum())
        assert c.name == p.chain_names[ci] and c.n_residues == c.n_matched == n
        assert c.recall == 1.0 and c.ca_rmsd == 0.0 and c.predicted_chains == {c.name: n}


def test_shift_by_one_angstrom(dep):
    r = evaluate_models(shifted(dep, unit([1.0, 2.0, -0.5])), dep)
    assert r.residue_recall == 1.0 and r.precision == 1.0 and r.sequence_recall == 1.0
    assert r.ca_rmsd == pytest.approx(1.0, abs=1e-5)
    assert r.backbone_rmsd == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(r.ca_distances, 1.0, atol=1e-5)
    np.testing.assert_array_equal(r.matched_predicted, r.matched_deposited)  # each on its copy
    assert all(c.ca_rmsd == pytest.approx(1.0, abs=1e-5) for c in r.chains)


def test_shift_by_four_angstrom_matches_no_residue_to_itself(dep):
    pred = shifted(dep, 4.0 * unit([1.0, 2.0, -0.5]))
    r = evaluate_models(pred, dep)
    # No residue can reach its own copy (4 A > 3 A)...
    assert not np.any(r.matched_predicted == r.matched_deposited)
    assert np.all(r.ca_distances <= 3.0)
    # ...but in a compact protein a shifted CA often lands near another deposited CA, so the
    # chance recall is the maximum one-to-one matching of the 3 A contact graph (Hopcroft-
    # Karp here, independent of the solver under test), far below 1.
    d = cdist(dep.ca, pred.ca)
    graph = csr_matrix(d <= 3.0)
    best = int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())
    assert r.n_matched == best
    assert r.residue_recall < 0.6
    assert r.sequence_recall < 0.15  # residue types agree only by chance
    assert r.ca_rmsd > 1.5
    # Moved right out of the structure, nothing matches and RMSDs are undefined.
    far = evaluate_models(shifted(dep, [500.0, 0.0, 0.0]), dep)
    assert far.n_matched == 0 and far.residue_recall == 0.0 and far.precision == 0.0
    assert far.ca_rmsd is None and far.backbone_rmsd is None and far.sequence_match is None
    assert all(c.predicted_chains == {} and c.ca_rmsd is None for c in far.chains)


def test_deleted_chain(dep):
    a = dep.chain_names.index("A")
    pred = dep.select(dep.chain_index != a)
    r = evaluate_models(pred, dep)
    n_a = int((dep.chain_index == a).sum())
    assert r.n_matched == len(dep) - n_a
    assert r.residue_recall == pytest.approx(1.0 - n_a / len(dep))
    assert r.sequence_recall == pytest.approx(1.0 - n_a / len(dep))
    assert r.precision == 1.0 and r.ca_rmsd == 0.0
    assert r.n_deposited_chains == 3 and r.n_predicted_chains == 2
    by_name = {c.name: c for c in r.chains}
    assert by_name["A"].n_matched == 0 and by_name["A"].recall == 0.0
    assert by_name["A"].predicted_chains == {} and by_name["A"].ca_rmsd is None
    assert by_name["C"].recall == 1.0 and by_name["C"].predicted_chains == {"C": 196}
    assert by_name["B"].recall == 1.0 and by_name["B"].predicted_chains == {"B": 124}
    # The reverse: the predicted model has a chain the deposited one lacks -> precision drops.
    rev = evaluate_models(dep, pred)
    assert rev.residue_recall == 1.0
    assert rev.precision == pytest.approx(1.0 - n_a / len(dep))


def test_mutated_residue_types(dep):
    aatype = dep.aatype.copy()
    mutated = np.arange(0, len(dep), 7)  # 64 residues
    aatype[mutated] = (aatype[mutated] + 1) % 20
    r = evaluate_models(replace(dep, aatype=aatype), dep)
    assert r.residue_recall == 1.0 and r.ca_rmsd == 0.0
    assert r.n_sequence_matched == len(dep) - len(mutated)
    assert r.sequence_recall == pytest.approx(1.0 - len(mutated) / len(dep))
    assert r.sequence_match == pytest.approx(1.0 - len(mutated) / len(dep))
    for ci, c in enumerate(r.chains):
        in_chain = dep.chain_index == ci
        n_mut = int(in_chain[mutated].sum())
        assert c.n_sequence_matched == c.n_residues - n_mut
        assert c.sequence_recall == pytest.approx(1.0 - n_mut / c.n_residues)
    # Predicted unknown residues (UNK) never count as a sequence match.
    unk = evaluate_models(replace(dep, aatype=np.full(len(dep), rc.UNK_INDEX)), dep)
    assert unk.sequence_recall == 0.0 and unk.residue_recall == 1.0


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_duplicated_residue_lowers_precision_only(dep, offset):
    k = 100
    dup = shifted(dep.select(np.arange(len(dep)) == k), [offset, 0.0, 0.0])
    pred = concat(dep, dup)
    r = evaluate_models(pred, dep)
    assert r.n_predicted == len(dep) + 1
    assert r.n_matched == len(dep) and r.residue_recall == 1.0  # one-to-one: no double count
    assert r.precision == pytest.approx(len(dep) / (len(dep) + 1))
    assert r.ca_rmsd == 0.0  # the exact copy wins over the displaced duplicate


def test_extra_false_residues_far_away(dep):
    junk = shifted(dep.select(dep.chain_index == 0), [300.0, -200.0, 50.0])
    junk = replace(junk, chain_names=["Z"])
    pred = concat(dep, junk)
    r = evaluate_models(pred, dep)
    n_junk = len(junk)
    assert r.residue_recall == 1.0 and r.sequence_recall == 1.0 and r.ca_rmsd == 0.0
    assert r.precision == pytest.approx(len(dep) / (len(dep) + n_junk))
    assert r.n_predicted_chains == 4
    assert all("Z" not in c.predicted_chains for c in r.chains)


def test_backbone_rmsd_counts_only_atoms_both_have(dep):
    pos = dep.atom_positions.copy()
    pos[:, rc.O_IDX] += np.float32([0.0, 2.0, 0.0])  # move every O by 2 A
    r = evaluate_models(replace(dep, atom_positions=pos), dep)
    # 4 backbone atoms per residue, one of them off by 2 A -> sqrt(4 / 4) = 1 A
    assert r.backbone_rmsd == pytest.approx(1.0, abs=1e-5) and r.ca_rmsd == 0.0
    mask = dep.atom_mask.copy()
    mask[::2, rc.O_IDX] = False  # half of the predicted residues lack O
    r2 = evaluate_models(replace(dep, atom_positions=pos, atom_mask=mask), dep)
    n = len(dep)
    n_o = n - len(range(0, n, 2))
    assert r2.n_backbone_atoms == 3 * n + n_o
    assert r2.backbone_rmsd == pytest.approx(np.sqrt(4.0 * n_o / (3 * n + n_o)), abs=1e-5)


def test_confidence_correlation(dep):
    rng = np.random.default_rng(1)
    err = rng.uniform(0.0, 2.0, len(dep))  # per-residue CA error, Angstrom
    dirs = rng.normal(size=(len(dep), 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    pos = dep.atom_positions + (err[:, None] * dirs)[:, None, :].astype(np.float32)
    bf = np.repeat((90.0 - 30.0 * err)[:, None], 37, axis=1).astype(np.float32)
    pred = replace(dep, atom_positions=pos, b_factors=bf)
    r = evaluate_models(pred, dep)
    assert r.residue_recall == 1.0
    np.testing.assert_allclose(r.ca_distances, err[r.matched_predicted], atol=1e-4)
    assert r.confidence_source == "bfactor"
    assert r.confidence_correlation == pytest.approx(1.0, abs=1e-6)
    # Inverted confidence -> -1; switched off -> None.
    inv = evaluate_models(replace(pred, b_factors=100.0 - bf), dep)
    assert inv.confidence_correlation == pytest.approx(-1.0, abs=1e-6)
    off = evaluate_models(pred, dep, confidence="none")
    assert off.confidence_correlation is None and off.confidence_source == "none"
    # auto: constant B-factors, or B-factors outside 0..100 (refined ones), are not confidence.
    flat = evaluate_models(replace(pred, b_factors=np.full_like(bf, 20.0)), dep)
    assert flat.confidence_source == "none" and flat.confidence_correlation is None
    assert evaluate_models(dep, dep).confidence_source == "none"  # B-factors up to 140
    forced = evaluate_models(replace(pred, b_factors=bf + 200.0), dep, confidence="bfactor")
    assert forced.confidence_correlation == pytest.approx(1.0, abs=1e-6)
    # A rigid shift: every error is the same, so there is nothing to correlate with.
    rigid = replace(shifted(dep, [0.6, 0.0, 0.8]), b_factors=bf)
    r_rigid = evaluate_models(rigid, dep)
    assert r_rigid.confidence_source == "bfactor" and r_rigid.confidence_correlation is None


def test_optimal_matching_beats_greedy():
    # Greedy nearest-first would pair P with A (2.0 A, tie) and leave B unmatched.
    dep = np.array([[0.0, 0, 0], [4.0, 0, 0]])
    pred = np.array([[2.0, 0, 0], [-2.5, 0, 0]])
    i, j, d = match_points(dep, pred, 3.0)
    assert i.tolist() == [0, 1] and j.tolist() == [1, 0]
    np.testing.assert_allclose(d, [2.5, 2.0])
    # Among matchings of equal size, the smaller total distance wins.
    dep = np.array([[0.0, 0, 0], [10.0, 0, 0]])
    pred = np.array([[10.5, 0, 0], [0.2, 0, 0]])
    i, j, d = match_points(dep, pred, 3.0)
    assert j.tolist() == [1, 0]
    # Distance exactly at the limit matches; beyond it does not.
    assert len(match_points([[0.0, 0, 0]], [[3.0, 0, 0]], 3.0)[0]) == 1
    assert len(match_points([[0.0, 0, 0]], [[3.01, 0, 0]], 3.0)[0]) == 0
    assert len(match_points(np.zeros((0, 3)), [[0.0, 0, 0]], 3.0)[0]) == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_component_solvers_agree_with_one_global_assignment(seed):
    rng = np.random.default_rng(seed)
    dep = rng.uniform(0, 25, (180, 3))  # dense enough for large components
    pred = rng.uniform(0, 25, (150, 3))
    d = cdist(dep, pred)
    big = 1e6
    cost = np.where(d <= 3.0, d, big)
    r, c = linear_sum_assignment(cost)
    keep = cost[r, c] < big
    want_n, want_sum = int(keep.sum()), float(cost[r, c][keep].sum())
    for dense_limit in (10**9, 0):  # dense per component / sparse per component
        i, j, dd = match_points(dep, pred, 3.0, dense_limit=dense_limit)
        assert len(i) == want_n
        assert dd.sum() == pytest.approx(want_sum, rel=1e-9)
        assert len(set(i.tolist())) == len(i) and len(set(j.tolist())) == len(j)
        np.testing.assert_allclose(dd, d[i, j])
        assert np.all(dd <= 3.0)


def test_scale_10000_residues():
    rng = np.random.default_rng(0)
    n = 10_000
    side = (n * 130.0) ** (1 / 3)  # about protein density: one residue per 130 A^3
    ca = rng.uniform(0, side, (n, 3))
    pos = np.zeros((n, 37, 3), np.float32)
    mask = np.zeros((n, 37), bool)
    for idx in (rc.N_IDX, rc.CA_IDX, rc.C_IDX, rc.O_IDX):
        pos[:, idx] = ca + (0 if idx == rc.CA_IDX else rng.normal(scale=1.0, size=(n, 3)))
        mask[:, idx] = True
    dep = Protein(atom_positions=pos, atom_mask=mask, aatype=rng.integers(0, 20, n),
                  residue_number=np.arange(n), chain_index=np.arange(n) // 500,
                  chain_names=[f"C{i}" for i in range(n // 500)],
                  b_factors=np.zeros((n, 37), np.float32))
    kept = rng.random(n) >= 0.1
    noise = rng.normal(size=(n, 3))
    noise *= 0.5 / np.linalg.norm(noise, axis=1, keepdims=True)  # every residue off by 0.5 A
    moved = replace(dep, atom_positions=dep.atom_positions + noise[:, None, :].astype(np.float32))
    n_junk = 500
    junk = shifted(dep.select(np.arange(n) < n_junk), [5 * side, 0, 0])
    pred = concat(moved.select(kept), junk)
    t0 = time.perf_counter()
    r = evaluate_models(pred, dep)
    elapsed = time.perf_counter() - t0
    print(f"\nevaluate_models: {n} deposited vs {len(pred)} predicted residues in {elapsed:.2f} s")
    n_kept = int(kept.sum())
    # Only the kept copies can match (the junk is far away), and their own copies do.
    assert r.n_matched == n_kept
    assert r.precision == pytest.approx(n_kept / (n_kept + n_junk))
    assert r.ca_rmsd == pytest.approx(0.5, abs=1e-4)
    t0 = time.perf_counter()
    pts = evaluate_points(pred.ca, dep.ca)
    print(f"evaluate_points: {len(pred)} points vs {n} CAs in {time.perf_counter() - t0:.2f} s")
    assert pts.n_matched == n_kept


# --------------------------------------------------------------------------- output


def test_json_and_table(dep):
    a = dep.chain_names.index("A")
    pred = shifted(dep.select(dep.chain_index != a), [0.6, 0.0, 0.8])
    r = evaluate_models(pred, dep)
    d = json.loads(r.to_json())
    assert d["n_matched"] == 320 and d["residue_recall"] == pytest.approx(320 / 444)
    assert d["ca_rmsd"] == pytest.approx(1.0, abs=1e-5)
    assert [c["name"] for c in d["chains"]] == ["C", "A", "B"]
    assert d["chains"][1]["ca_rmsd"] is None and d["chains"][1]["predicted_chains"] == {}
    assert d["confidence_correlation"] is None and "pairs" not in d
    pairs = json.loads(r.to_json(include_pairs=True))["pairs"]
    assert len(pairs["deposited"]) == len(pairs["predicted"]) == 320
    table = r.format_table()
    for text in ("residue recall", "72.1 %", "precision", "100.0 %", "sequence recall",
                 "backbone RMSD", "1.000 A", "C (196)", "B (124)"):
        assert text in table, text
    row_a = next(line for line in table.splitlines() if line.startswith("A "))
    assert "0.0 %" in row_a and row_a.rstrip().endswith("-")


def test_evaluate_files_reads_gz_and_matches_arrays(dep):
    r = evaluate_files(COMPLEX, COMPLEX)
    assert r.residue_recall == 1.0 and r.deposited_path == str(COMPLEX)
    with pytest.raises(ModelAngeloError, match="missing.cif"):
        evaluate_files(COMPLEX.parent / "missing.cif", COMPLEX)


def test_bad_arguments():
    p = load_protein(SINGLE)
    with pytest.raises(ModelAngeloError, match="match distance"):
        evaluate_models(p, p, match_distance=0.0)
    with pytest.raises(ModelAngeloError, match="confidence"):
        evaluate_models(p, p, confidence="plddt")
    with pytest.raises(ValueError):
        evaluate_points(np.zeros((3, 2)), p.ca)


# --------------------------------------------------------------------------- points


def test_points_on_a_lattice_known_fractions():
    # Deposited CAs 10 A apart: no point can be near two of them.
    g = np.arange(8) * 10.0
    ca = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)  # 512
    n = len(ca)
    off = np.zeros_like(ca)
    off[: n // 2, 0] = 1.5  # within 2 A
    off[n // 2: 3 * n // 4, 1] = 2.5  # within 3 A only
    has = np.arange(n) < 3 * n // 4  # the last quarter gets no point
    pts = (ca + off)[has]
    dup = pts[:10] + [0.0, 0.0, 0.3]  # second detections of the same CA
    false = ca[:20] + [5.0, 5.0, 5.0]  # 8.7 A from every CA
    r = evaluate_points(np.concatenate([pts, dup, false]), ca)
    m = len(pts) + len(dup) + len(false)
    assert r.n_points == m and r.n_deposited == n
    assert r.recall_2a == 0.5 and r.recall_3a == 0.75
    assert r.precision == pytest.approx((len(pts) + len(dup)) / m)
    assert r.n_matched == len(pts)  # duplicates do not count twice one-to-one
    assert r.recall_one_to_one == 0.75
    assert r.precision_one_to_one == pytest.approx(len(pts) / m)
    want = np.sqrt((0.5 * n * 1.5**2 + 0.25 * n * 2.5**2) / (0.75 * n))
    assert r.rmsd_one_to_one == pytest.approx(want, rel=1e-6)
    tight = evaluate_points(np.concatenate([pts, dup, false]), ca, radius=2.0)
    assert tight.recall_one_to_one == 0.5 and tight.recall_3a == 0.75
    assert json.loads(json.dumps(r.to_dict()))["recall_2a"] == 0.5


def test_points_real_ca():
    p = load_protein(SINGLE)
    r = evaluate_points(p.ca, p.ca)
    assert r.recall_2a == r.recall_3a == r.precision == r.recall_one_to_one == 1.0
    assert r.rmsd_one_to_one == 0.0
    # Every CA detected twice: recall and precision (not one-to-one) stay 1.
    twice = evaluate_points(np.concatenate([p.ca, p.ca + [0.0, 0.4, 0.0]]), p.ca)
    assert twice.recall_3a == 1.0 and twice.precision == 1.0
    assert twice.recall_one_to_one == 1.0 and twice.precision_one_to_one == 0.5
    none = evaluate_points(np.zeros((0, 3)), p.ca)
    assert none.recall_2a == 0.0 and none.precision is None and none.n_matched == 0
