"""build_models on a prediction made from a real structure (3J9S): chains, sequence
assignment, renumbering, side chains, pruning, confidence; the no-sequence mode."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from chimerax.modelangelo import residue_constants as rc
from chimerax.modelangelo.alignment import search_profiles
from chimerax.modelangelo.config import PostprocessConfig
from chimerax.modelangelo.geometry import frames_from_backbone, torsions_from_atom37
from chimerax.modelangelo.postprocess import (
    build_models,
    is_ca_only,
    merge_fragments,
    prediction_from_points,
    pruned_nodes,
    residue_numbers,
)
from chimerax.modelangelo.prediction import GraphPrediction
from chimerax.modelangelo.protein import load_protein
from chimerax.modelangelo.sequences import SequenceRecord, read_fasta
from chimerax.modelangelo.structure_output import write_mmcif

REAL = Path("/work/shared/data/real_maps")
DECOY = Path("/work/shared/data/structures/db55_1A2K_b.cif.gz")


@pytest.fixture(scope="module")
def deposited():
    return load_protein(REAL / "emd_6272" / "3j9s_deposited.cif")


@pytest.fixture(scope="module")
def fasta():
    """3J9S A plus two unrelated real sequences."""
    return [r for f in sorted(REAL.glob("*/*.fasta")) for r in read_fasta(f)]


def make_prediction(p, rng, *, keep=None, corrupt=0.3, confidence=None, k=10):
    """A GraphPrediction of residues ``keep`` of ``p``, shuffled: true frames/torsions,
    noisy residue-type logits, k-NN edges with the true bonds likely. Returns (pred, perm)
    with perm[node] = residue row of ``p``."""
    keep = np.arange(len(p)) if keep is None else np.asarray(keep)
    pos = torch.as_tensor(p.atom_positions, dtype=torch.float32)
    rot, trans = frames_from_backbone(pos[:, rc.N_IDX], pos[:, rc.CA_IDX], pos[:, rc.C_IDX])
    tors, _ = torsions_from_atom37(pos, torch.as_tensor(p.atom_mask),
                                   torch.as_tensor(p.aatype))
    perm = keep[rng.permutation(len(keep))]
    n = len(perm)
    logits = np.where(np.eye(20, dtype=bool)[np.minimum(p.aatype[perm], 19)], 4.0, 0.0)
    bad = rng.random(n) < corrupt
    logits[bad] = rng.normal(0, 1.5, (bad.sum(), 20))
    bb = p.atom_positions[perm][:, :3]
    _, nb = cKDTree(bb[:, 1]).query(bb[:, 1], k + 1)
    nb = nb[:, 1:]
    bonded = np.abs(perm[nb] - perm[:, None]) == 1
    edge_logits = np.where(bonded, 3.0, -3.0) + rng.normal(0, 0.5, bonded.shape)
    conf = np.full(n, 80.0) if confidence is None else confidence[perm]
    return GraphPrediction(
        rotations=rot.numpy()[perm], translations=trans.numpy()[perm], backbone=bb,
        aa_logits=logits.astype(np.float32),
        torsions=np.repeat(tors.numpy()[perm][:, None], 20, 1),
        edge_index=nb, edge_logits=edge_logits, confidence=conf.astype(np.float32)), perm


def concat(a: GraphPrediction, b: GraphPrediction, shift: np.ndarray) -> GraphPrediction:
    """Nodes of ``a`` then of ``b`` (moved by ``shift``)."""
    n = len(a)
    return GraphPrediction(
        rotations=np.concatenate([a.rotations, b.rotations]),
        translations=np.concatenate([a.translations, b.translations + shift]),
        backbone=np.concatenate([a.backbone, b.backbone + shift]),
        aa_logits=np.concatenate([a.aa_logits, b.aa_logits]),
        torsions=np.concatenate([a.torsions, b.torsions]),
        edge_index=np.concatenate([a.edge_index, np.where(b.edge_index >= 0, b.edge_index + n, -1)]),
        edge_logits=np.concatenate([a.edge_logits, b.edge_logits]),
        confidence=np.concatenate([a.confidence, b.confidence]))


def test_residue_numbers_follow_the_sequence():
    m = np.array([-1, -1, 10, 11, -1, 13, 14, -1, -1, 15, -1])
    np.testing.assert_array_equal(residue_numbers(m), [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19])
    m = np.array([-1, 4, 5, -1, -1, 9, 10])  # gap of 3 in sequence, 2 nodes
    np.testing.assert_array_equal(residue_numbers(m), [4, 5, 6, 7, 8, 10, 11])
    np.testing.assert_array_equal(residue_numbers(np.full(3, -1)), [1, 2, 3])
    np.testing.assert_array_equal(pruned_nodes(np.array([0, 1, -1, 3, -1, -1, 9, 10])),
                                  [0, 1, 2, 3, 6, 7])


def test_full_build_with_sequences(deposited, fasta):
    rng = np.random.default_rng(0)
    pred, perm = make_prediction(deposited, rng)
    built = build_models(pred, fasta, PostprocessConfig())
    un = built.unpruned
    assert un.chain_names == ["A"] and len(un) == len(deposited)
    np.testing.assert_array_equal(perm[built.chains[0]], np.arange(len(deposited)))
    # Assigned to 3J9S A, numbered by sequence position, types from the sequence.
    info = built.chain_info[0]
    assert info["sequence"] == "3j9s_A" and info["evalue"] < 1e-50 and info["in_pruned"]
    assert 0.6 < info["identity"] < 0.85 and info["aligned_fraction"] > 0.95
    np.testing.assert_array_equal(un.residue_number, deposited.residue_number)
    np.testing.assert_array_equal(un.aatype, deposited.aatype)
    assert built.chain_entity == [fasta.index(next(r for r in fasta if r.name == "3j9s_A"))]
    # Side chains from the frames and true torsions: close to the deposited atoms.
    both = un.atom_mask & deposited.atom_mask
    assert both.sum() > 0.95 * deposited.atom_mask.sum()
    rmsd = np.sqrt(((un.atom_positions[both] - deposited.atom_positions[both]) ** 2).sum(-1).mean())
    assert rmsd < 0.5
    np.testing.assert_allclose(un.b_factors, 80.0)
    pr = built.pruned
    assert pr is not None and pr.chain_names == ["A"] and len(pr) >= 0.95 * len(deposited)
    assert built.pruned_chain_entity == built.chain_entity
    assert not built.hmms


def test_fragments_decoys_and_renumbering(tmp_path, deposited, fasta):
    """Residues 100-249 (a break after 179) plus a decoy: numbers 101..250, the decoy is
    left out of the pruned model, and both models write as mmCIF."""
    rng = np.random.default_rng(1)
    keep = np.arange(100, 250)
    pred, perm = make_prediction(deposited, rng, keep=keep)
    pred.backbone = pred.backbone.copy()
    after = perm >= 180  # break the C(179)-N(180) bond by moving the second fragment
    shift = np.array([6.0, 0.0, 0.0], np.float32)
    pred.backbone[after] += shift
    pred.translations = pred.translations.copy()
    pred.translations[after] += shift
    # A decoy: 30 residues of another protein with random residue types, far away.
    other = load_protein(DECOY)
    decoy, _ = make_prediction(other, rng, keep=np.arange(30), corrupt=1.0)
    pred = concat(pred, decoy, shift=np.array([300.0, 0.0, 0.0], np.float32))
    built = build_models(pred, fasta, PostprocessConfig())
    info = {i["chain"]: i for i in built.chain_info}
    assigned = [i for i in built.chain_info if i["sequence"] == "3j9s_A"]
    assert sorted((i["first_number"], i["last_number"]) for i in assigned) == [(101, 180),
                                                                              (181, 250)]
    assert all(i["in_pruned"] for i in assigned)
    un, pr = built.unpruned, built.pruned
    assert not any(i["in_pruned"] for i in info.values() if i["sequence"] is None)
    assert set(pr.chain_names) == {i["chain"] for i in assigned}
    for name in pr.chain_names:
        rows = np.flatnonzero(pr.chain_index == pr.chain_names.index(name))
        # types and numbers of the pruned chain match the deposited residues
        dep = deposited.aatype[pr.residue_number[rows] - 1]
        np.testing.assert_array_equal(pr.aatype[rows], dep)
    write_mmcif(un, tmp_path / "unpruned.cif", entities=fasta, chain_entity=built.chain_entity,
                metadata={"map": "test"})
    write_mmcif(pr, tmp_path / "pruned.cif", entities=fasta,
                chain_entity=built.pruned_chain_entity, metadata={"map": "test"})
    back = load_protein(tmp_path / "pruned.cif")
    assert len(back) == len(pr)
    np.testing.assert_array_equal(np.sort(back.residue_number), np.sort(pr.residue_number))


def test_pruning_thresholds(deposited, fasta):
    rng = np.random.default_rng(2)
    pred, _ = make_prediction(deposited, rng, keep=np.arange(0, 120), corrupt=0.55)
    loose = build_models(pred, fasta, PostprocessConfig(prune_min_identity=0.2))
    strict = build_models(pred, fasta, PostprocessConfig(prune_min_identity=0.95))
    assert loose.chain_info[0]["sequence"] == "3j9s_A"
    assert loose.chain_info[0]["in_pruned"] and len(loose.pruned) > 100
    assert not strict.chain_info[0]["in_pruned"] and len(strict.pruned) == 0
    assert len(strict.unpruned) == len(loose.unpruned) == 120


def test_no_sequence_mode_gives_searchable_hmms(deposited, fasta):
    rng = np.random.default_rng(3)
    pred, _ = make_prediction(deposited, rng, keep=np.arange(50, 200))
    built = build_models(pred, None, PostprocessConfig())
    assert built.pruned is None and built.pruned_chain_entity is None
    assert len(built.hmms) == len(built.unpruned.chain_names) == 1
    assert built.hmms[0].name == "A" and built.hmms[0].M == 150
    assert built.chain_info[0]["sequence"] is None
    hits = search_profiles(built.hmms, fasta + [SequenceRecord("decoy", "MKVLA" * 40)])
    assert hits[0][0].name == "3j9s_A"


def test_ca_only_prediction(deposited):
    rng = np.random.default_rng(4)
    ca = deposited.ca[:80]
    pred = prediction_from_points(ca[rng.permutation(80)], np.full(80, 0.7))
    assert is_ca_only(pred)
    built = build_models(pred, None, PostprocessConfig())
    un = built.unpruned
    assert len(un) >= 70 and (un.aatype == rc.UNK_INDEX).all()
    assert un.atom_mask.sum() == len(un) and un.atom_mask[:, rc.CA_IDX].all()
    np.testing.assert_allclose(un.b_factors, 70.0, atol=1e-4)


def test_empty_prediction():
    pred = prediction_from_points(np.zeros((0, 3)))
    built = build_models(pred, [SequenceRecord("s", "MKV")], PostprocessConfig())
    assert len(built.unpruned) == 0 and len(built.pruned) == 0 and built.chain_info == []


def _gap_case(deposited, corrupt: float, shift=(0.0, 0.0, 0.0)):
    """Residues 1-150 of 3J9S (easily assigned) and a 12-residue fragment (159-170) whose
    residue types are too noisy for a significant hit against the whole sequences."""
    rng = np.random.default_rng(0)
    a, _ = make_prediction(deposited, rng, keep=np.arange(0, 150), corrupt=0.3)
    b, perm_b = make_prediction(deposited, rng, keep=np.arange(158, 170), corrupt=corrupt)
    return concat(a, b, shift=np.asarray(shift, np.float32)), perm_b


def test_gap_filling_assigns_short_fragments_next_to_assigned_chains(deposited, fasta):
    gap_cfg = PostprocessConfig(gap_fill_evalue=0.1, reach_slack=2.0,
                                reach_max_separation=30)
    pred, _ = _gap_case(deposited, corrupt=0.6)
    off = build_models(pred, fasta, PostprocessConfig(gap_fill_evalue=0.0))
    frag_off = next(i for i in off.chain_info if i["residues"] == 12)
    assert frag_off["sequence"] is None and frag_off["evalue"] > gap_cfg.hmm_evalue
    on = build_models(pred, fasta, gap_cfg)
    frag = next(i for i in on.chain_info if i["residues"] == 12)
    assert frag["gap_filled"] and frag["sequence"] == "3j9s_A" and frag["in_pruned"]
    assert (frag["first_number"], frag["last_number"]) == (159, 170)
    pr = on.pruned
    np.testing.assert_array_equal(pr.aatype, deposited.aatype[pr.residue_number - 1])
    # 8 residues missing between 150 and 159, CAs 13 A apart: the two fragments are one
    # pruned chain with a numbering gap.
    assert pr.chain_names == [frag["pruned_chain"]] == ["A"]
    assert np.all(np.diff(pr.residue_number) > 0) and (pr.residue_number > 158).sum() >= 6
    # The same fragment 40 A away cannot be the residues after 150: left unassigned.
    far, _ = _gap_case(deposited, corrupt=0.6, shift=(40.0, 0.0, 0.0))
    frag_far = next(i for i in build_models(far, fasta, gap_cfg).chain_info
                    if i["residues"] == 12)
    assert frag_far["sequence"] is None and not frag_far["in_pruned"]


def test_gap_filling_needs_a_nearby_flank(deposited, fasta):
    """With noisier types the fragment's best hit lies 130 residues past the last assigned
    one, where the distance bound allows anything: the separation limit refuses it."""
    pred, _ = _gap_case(deposited, corrupt=0.7)
    loose = build_models(pred, fasta, PostprocessConfig(gap_fill_evalue=0.1,
                                                        reach_max_separation=10**6))
    frag = next(i for i in loose.chain_info if i["residues"] == 12)
    assert frag["gap_filled"] and frag["first_number"] > 250  # the wrong register
    strict = build_models(pred, fasta, PostprocessConfig(gap_fill_evalue=0.1,
                                                         reach_max_separation=30))
    frag = next(i for i in strict.chain_info if i["residues"] == 12)
    assert frag["sequence"] is None and not frag["gap_filled"]


def test_merge_fragments_keeps_copies_apart():
    """Two copies of one sequence, each in two fragments (1-10 and 15-30, 4 residues
    missing, ends 12 A apart), the second copy 60 A away; a fragment of another sequence.
    Fragments join within their copy only."""
    cfg = PostprocessConfig()
    num = [np.arange(1, 11), np.arange(15, 31), np.arange(1, 11), np.arange(15, 31),
           np.arange(11, 20)]
    entity = [0, 0, 0, 0, 1]
    shift = np.array([60.0, 0, 0])
    last = np.array([[0, 0, 0], [40, 0, 0], [0, 0, 0], [40, 0, 0], [5, 0, 0]], float)
    first = np.array([[-30, 0, 0], [12, 0, 0], [-30, 0, 0], [12, 0, 0], [8, 0, 0]], float)
    first[2:4] += shift
    last[2:4] += shift
    groups = merge_fragments(num, entity, first, last, cfg)
    assert sorted(map(sorted, groups)) == [[0, 1], [2, 3], [4]]
    # too far for 5 peptide steps (3.8 A each + 2 A): separate chains
    first[1, 0] = last[0, 0] + 5 * cfg.ca_only_ca_ca + cfg.reach_slack + 0.5
    assert sorted(map(sorted, merge_fragments(num, entity, first, last, cfg)))[:2] == [[0], [1]]
    # overlapping numbers never join
    num[1] = np.arange(8, 31)
    first[1, 0] = 5.0
    assert [0] in merge_fragments(num, entity, first, last, cfg)
