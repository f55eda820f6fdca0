"""Profile HMMs from residue-type probabilities: alignment to the right sequence and
register, no hit for unrelated chains, database search, HMM files."""

import json
from pathlib import Path

import numpy as np
import pytest

from chimerax.modelangelo import residue_constants as rc
from chimerax.modelangelo.alignment import (
    align_chains,
    build_hmm,
    match_emissions,
    read_database,
    read_hmms,
    search_profiles,
    write_hmm,
)
from chimerax.modelangelo.config import PostprocessConfig
from chimerax.modelangelo.errors import ModelAngeloError, SequenceError
from chimerax.modelangelo.sequences import SequenceRecord, read_fasta

DATA = Path("/work/shared/data")


@pytest.fixture(scope="module")
def database_records():
    """Every chain sequence of the development structures plus the real maps' FASTA."""
    manifest = json.loads((DATA / "structures_manifest.json").read_text())
    recs = [SequenceRecord(f"{e['name']}_{cid}", seq)
            for e in manifest for cid, seq in e["chains"].items()]
    for fasta in sorted(DATA.glob("real_maps/*/*.fasta")):
        recs.extend(read_fasta(fasta))
    return recs


@pytest.fixture(scope="module")
def real_sequences():
    return {r.name: r for fasta in sorted(DATA.glob("real_maps/*/*.fasta"))
            for r in read_fasta(fasta)}


def noisy_probs(sequence, rng, *, corrupt=0.4):
    """One-hot probabilities of ``sequence`` with ``corrupt`` of the positions replaced by
    a random distribution (half of them flat-ish, half peaked on a wrong residue)."""
    n = len(sequence)
    probs = np.zeros((n, 20))
    probs[np.arange(n), rc.aatype_from_sequence(sequence)] = 1.0
    bad = np.flatnonzero(rng.random(n) < corrupt)
    probs[bad] = rng.dirichlet(np.full(20, 0.3), len(bad))
    wrong = bad[: len(bad) // 2]
    probs[wrong] = 0.05 / 19
    probs[wrong, rng.integers(0, 20, len(wrong))] = 0.95
    return probs / probs.sum(1, keepdims=True)


def test_noisy_chains_align_to_the_right_sequence_and_register(real_sequences):
    rng = np.random.default_rng(0)
    seqs = list(real_sequences.values())  # 3J6B 9, 7CEC A, 3J9S A
    spec = [(0, 20, 140), (2, 300, 360), (1, 0, 90)]  # (sequence, start, end)
    chains = [noisy_probs(seqs[s].sequence[a:b], rng) for s, a, b in spec]
    result = align_chains(chains, seqs, cfg=PostprocessConfig())
    for (s, a, _), ali in zip(spec, result):
        assert ali.sequence_index == s and ali.sequence_name == seqs[s].name
        assert ali.evalue < 1e-10
        aligned = ali.mapping >= 0
        assert aligned.mean() >= 0.75 and ali.aligned_fraction == pytest.approx(aligned.mean())
        correct = ali.mapping[aligned] == a + np.flatnonzero(aligned)
        assert correct.mean() >= 0.9  # 20% confidently wrong nodes: a few local shifts
        assert 0.45 < ali.identity < 0.9  # ~60-70% of the nodes kept their true type


def test_missing_and_extra_nodes_keep_the_register(real_sequences):
    rng = np.random.default_rng(1)
    seq = real_sequences["3j9s_A"].sequence
    true_pos = list(range(50, 100)) + list(range(103, 170))  # 3 residues not built
    probs = noisy_probs("".join(seq[p] for p in true_pos), rng, corrupt=0.3)
    extra = rng.dirichlet(np.ones(20), 2)  # two spurious nodes after node 80
    probs = np.concatenate([probs[:80], extra, probs[80:]])
    truth = np.array(true_pos[:80] + [-1, -1] + true_pos[80:])
    (ali,) = align_chains([probs], [real_sequences["3j9s_A"]])
    assert ali.sequence_index == 0
    both = (ali.mapping >= 0) & (truth >= 0)
    assert both.sum() >= 100
    assert (ali.mapping[both] == truth[both]).mean() >= 0.97
    assert np.all(np.diff(ali.mapping[ali.mapping >= 0]) > 0)


def test_unrelated_chains_get_no_assignment(real_sequences):
    rng = np.random.default_rng(2)
    seqs = list(real_sequences.values())
    shuffled = "".join(rng.permutation(list(seqs[0].sequence[:120])))
    chains = [noisy_probs(shuffled, rng, corrupt=0.0), rng.dirichlet(np.ones(20), 100)]
    for ali in align_chains(chains, seqs):
        assert not ali.assigned and ali.sequence_index is None
        assert (ali.mapping == -1).all() and ali.aligned_fraction == 0.0
        assert ali.evalue is None or ali.evalue > PostprocessConfig().hmm_evalue


def test_homo_oligomer_chains_share_a_sequence(real_sequences):
    rng = np.random.default_rng(3)
    seq = real_sequences["3j6b_9"]
    chains = [noisy_probs(seq.sequence[:100], rng), noisy_probs(seq.sequence[40:150], rng)]
    result = align_chains(chains, [real_sequences["3j9s_A"], seq])
    assert [a.sequence_index for a in result] == [1, 1]
    assert result[1].mapping[result[1].mapping >= 0][0] >= 40


def test_confidence_mixes_in_the_background():
    probs = np.zeros((2, 20))
    probs[:, 5] = 1.0
    cfg = PostprocessConfig(hmm_prob_weight=(0.5, 0.9))
    em = match_emissions(probs, np.array([0.0, 100.0]), cfg)
    np.testing.assert_allclose(em.sum(1), 1.0)
    assert em[0, 5] < em[1, 5]
    assert em[0, 5] > 0.5 and (em[1] > 0).all()  # w = 0.5 at confidence 0, 0.9 at 100
    np.testing.assert_allclose(em[0, [0, 1]] / em[1, [0, 1]], 0.5 / 0.1, rtol=1e-6)


def test_hmm_is_valid_and_calibrated():
    rng = np.random.default_rng(4)
    hmm = build_hmm(rng.dirichlet(np.ones(20), 30), "chain_A")
    hmm.validate()
    assert hmm.M == 30 and hmm.name == "chain_A"
    ep = hmm.evalue_parameters.as_vector()
    assert all(np.isfinite(ep)) and 0.6 < ep[1] < 0.8 and ep[4] < 0  # lambda ~ ln 2, tau
    tiny = build_hmm(rng.dirichlet(np.ones(20), 1), "one")
    assert tiny.M == 1


def test_hmm_files_round_trip(tmp_path, real_sequences):
    rng = np.random.default_rng(5)
    seq = real_sequences["3j9s_A"]
    hmms = [build_hmm(noisy_probs(seq.sequence[i:i + 60], rng), f"chain_{i}")
            for i in (0, 100)]
    write_hmm(hmms[0], tmp_path / "a.hmm")
    write_hmm(hmms[1], tmp_path / "b.hmm")
    back = read_hmms(tmp_path)
    assert [h.name for h in back] == ["chain_0", "chain_100"]
    assert back[0].M == 60
    np.testing.assert_allclose(np.asarray(back[0].match_emissions),
                               np.asarray(hmms[0].match_emissions), atol=1e-4)
    before = search_profiles(hmms, [seq])
    after = search_profiles(back, [seq])
    assert [h[0].evalue for h in before] == pytest.approx([h[0].evalue for h in after], rel=1e-3)
    both = write_hmm(hmms, tmp_path / "both.hmm")
    assert len(read_hmms(both)) == 2
    with pytest.raises(ModelAngeloError):
        read_hmms(tmp_path / "missing.hmm")


def test_search_ranks_the_right_sequence_first(tmp_path, database_records, real_sequences):
    rng = np.random.default_rng(6)
    db = tmp_path / "db.fasta"
    db.write_text("".join(f">{r.name}\n{r.sequence}\n" for r in database_records))
    assert len(database_records) > 1500
    queries = [real_sequences["3j9s_A"].sequence[10:130], real_sequences["7cec_A"].sequence[200:280],
               database_records[700].sequence[:90]]
    hmms = [build_hmm(noisy_probs(q, rng), f"chain_{i}") for i, q in enumerate(queries)]
    results = search_profiles(hmms, db, top=5)
    by_name = {r.name: r.sequence for r in database_records}
    for q, hits in zip(queries, results):
        assert hits and hits[0].rank == 1 and len(hits) <= 5
        assert q in by_name[hits[0].name]
        assert hits[0].evalue < 1e-10
        assert [h.evalue for h in hits] == sorted(h.evalue for h in hits)
    shuffled = "".join(rng.permutation(list(queries[0])))
    (none,) = search_profiles([build_hmm(noisy_probs(shuffled, rng), "x")], db, max_evalue=1e-3)
    assert none == []


def test_bad_database_is_a_sequence_error(tmp_path):
    with pytest.raises(SequenceError):
        read_database(tmp_path / "nope.fasta")
    bad = tmp_path / "bad.fasta"
    bad.write_bytes(b"\x00\x01\x02 not fasta")
    with pytest.raises(SequenceError):
        read_database(bad)
