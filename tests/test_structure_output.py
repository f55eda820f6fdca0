"""mmCIF output: records gemmi and load_protein read back, entities, chain IDs, OXT."""

from pathlib import Path

import gemmi
import numpy as np
import pytest

from chimerax.modelangelo import residue_constants as rc
from chimerax.modelangelo.errors import OutputError
from chimerax.modelangelo.protein import Protein, load_protein
from chimerax.modelangelo.sequences import SequenceRecord, read_fasta
from chimerax.modelangelo.structure_output import chain_id, oxt_position, write_mmcif

REAL = Path("/work/shared/data/real_maps/emd_6272")
META = {"software": "ChimeraX-ModelAngelo 0.1.0", "map": "emd_6272",
        "config": {"edge_prob_threshold": 0.5, "hmm_prob_weight": (0.5, 0.9)}}


@pytest.fixture(scope="module")
def deposited():
    p = load_protein(REAL / "3j9s_deposited.cif")
    p.atom_mask[:, rc.ATOM_ORDER["OXT"]] = False  # as built models: no OXT
    p.b_factors = np.repeat(np.linspace(5, 95, len(p))[:, None], 37, 1).astype(np.float32)
    return p


def test_chain_ids_scale_past_62():
    assert [chain_id(i) for i in (0, 25, 26, 51, 52, 61)] == ["A", "Z", "a", "z", "0", "9"]
    assert [chain_id(62), chain_id(63), chain_id(62 + 62)] == ["AA", "AB", "BA"]
    assert chain_id(62 + 62 * 62 - 1) == "99" and chain_id(62 + 62 * 62) == "AAA"
    ids = [chain_id(i) for i in range(5000)]
    assert len(set(ids)) == 5000


def test_round_trip_with_a_fasta_entity(tmp_path, deposited):
    seqs = read_fasta(REAL / "3j9s.fasta")
    out = write_mmcif(deposited, tmp_path / "model.cif", entities=seqs, chain_entity=[0],
                      metadata=META)
    doc = gemmi.cif.read(str(out))
    block = doc.sole_block()
    for cat in ("_atom_site.", "_entity.", "_entity_poly.", "_entity_poly_seq.",
                "_struct_asym.", "_cell.", "_symmetry.", "_software.", "_chem_comp.",
                "_modelangelo_run."):
        assert block.get_mmcif_category_names().count(cat) == 1, cat
    assert block.find_value("_symmetry.space_group_name_H-M").strip("'") == "P 1"
    run = block.get_mmcif_category("_modelangelo_run.")
    params = dict(zip(run["key"], run["value"]))
    assert params["map"] == "emd_6272" and params["config.edge_prob_threshold"] == "0.5"
    assert "date" in params
    assert block.get_mmcif_category("_software.")["version"] == ["0.1.0"]
    assert block.get_mmcif_category("_entity.")["pdbx_description"] == ["3j9s_A"]
    poly_seq = block.get_mmcif_category("_entity_poly_seq.")
    assert "".join(rc.RESTYPE_3TO1[m] for m in poly_seq["mon_id"]) == seqs[0].sequence

    st = gemmi.read_structure(str(out))
    st.setup_entities()
    assert len(st.entities) == 1 and st.entities[0].subchains == ["A"]
    assert gemmi.one_letter_code(st.entities[0].full_sequence) == seqs[0].sequence
    back = load_protein(out)
    assert len(back) == len(deposited) and back.chain_names == ["A"]
    np.testing.assert_array_equal(back.aatype, deposited.aatype)
    np.testing.assert_array_equal(back.residue_number, deposited.residue_number)
    same = deposited.atom_mask
    np.testing.assert_allclose(back.atom_positions[same], deposited.atom_positions[same],
                               atol=1e-3)
    np.testing.assert_allclose(back.b_factors[same], deposited.b_factors[same], atol=0.01)
    # OXT only on the C-terminal residue, trigonal at C.
    oxt = rc.ATOM_ORDER["OXT"]
    assert back.atom_mask[:, oxt].sum() == 1 and back.atom_mask[-1, oxt]
    last = back.atom_positions[-1]
    c, o, ca, ox = last[rc.C_IDX], last[rc.O_IDX], last[rc.CA_IDX], last[oxt]
    assert np.linalg.norm(ox - c) == pytest.approx(1.25, abs=0.01)

    def angle(a, b):
        return np.degrees(np.arccos(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)))

    assert 110 < angle(ox - c, o - c) < 130 and 110 < angle(ox - c, ca - c) < 130
    # label_seq_id = position in the FASTA sequence
    res = st[0]["A"][10]
    assert res.label_seq == res.seqid.num == deposited.residue_number[10]


def many_chain_protein(n_chains: int, rng) -> tuple[Protein, list[str]]:
    """``n_chains`` 3-residue chains (backbone + O) along a line; sequences random."""
    per = 3
    n = n_chains * per
    pos = np.zeros((n, 37, 3), np.float32)
    mask = np.zeros((n, 37), bool)
    base = np.arange(n)[:, None] * np.array([3.8, 0.0, 0.0])
    offsets = {rc.N_IDX: (-1.2, 0.5, 0), rc.CA_IDX: (0, 0, 0), rc.C_IDX: (1.2, 0.6, 0),
               rc.O_IDX: (1.4, 1.8, 0)}
    for j, off in offsets.items():
        pos[:, j] = base + np.array(off)
        mask[:, j] = True
    aatype = rng.integers(0, 20, n)
    p = Protein(atom_positions=pos, atom_mask=mask, aatype=aatype,
                residue_number=np.tile(np.arange(1, per + 1), n_chains),
                chain_index=np.repeat(np.arange(n_chains), per),
                chain_names=[chain_id(i) for i in range(n_chains)],
                b_factors=np.full((n, 37), 42.0, np.float32))
    seqs = [rc.sequence_from_aatype(aatype[i * per:(i + 1) * per]) for i in range(n_chains)]
    return p, seqs


def test_seventy_chains_entities_and_homomers(tmp_path):
    rng = np.random.default_rng(0)
    prot, seqs = many_chain_protein(70, rng)
    # Chains 0 and 1 are copies of one FASTA protein (homo-dimer), numbered 5..7.
    fasta = [SequenceRecord("protX", "GGGG" + seqs[0] + "GG"), SequenceRecord("unused", "MKV")]
    prot.aatype[3:6] = prot.aatype[0:3]
    prot.residue_number[0:6] = np.tile([5, 6, 7], 2)
    chain_entity = [0, 0] + [None] * 68
    out = write_mmcif(prot, tmp_path / "many.cif", entities=fasta, chain_entity=chain_entity,
                      metadata={})
    st = gemmi.read_structure(str(out))
    st.setup_entities()
    names = [ch.name for ch in st[0]]
    assert names[:2] == ["A", "B"] and names[62:65] == ["AA", "AB", "AC"] and len(names) == 70
    assert len(st.entities) == 69  # protX (2 chains) + 68 built
    ent = st.entities[0]
    assert ent.subchains == ["A", "B"] and len(ent.full_sequence) == 9
    block = gemmi.cif.read(str(out)).sole_block()
    assert "unused" not in block.get_mmcif_category("_entity.")["pdbx_description"]
    asym = block.get_mmcif_category("_struct_asym.")
    assert len(asym["id"]) == 70
    for k in (2, 63, 69):  # unassigned chains: own entity = built sequence
        e = st.get_entity_of(st[0][k].get_polymer())
        assert gemmi.one_letter_code(e.full_sequence) == seqs[k]
        assert [r.label_seq for r in st[0][k]] == [1, 2, 3]
    back = load_protein(out)
    assert back.chain_names == prot.chain_names
    assert back.atom_mask[:, rc.ATOM_ORDER["OXT"]].sum() == 70  # one per chain
    np.testing.assert_allclose(back.b_factors[back.atom_mask], 42.0)


def test_refuses_to_overwrite(tmp_path, deposited):
    path = tmp_path / "m.cif"
    write_mmcif(deposited, path, metadata={})
    with pytest.raises(OutputError):
        write_mmcif(deposited, path, metadata={})
    write_mmcif(deposited, path, metadata={"map": "again"}, overwrite=True)
    assert "again" in path.read_text()
    assert not list(tmp_path.glob("*.tmp"))


def test_chain_that_does_not_match_its_entity_is_refused(tmp_path, deposited):
    wrong = SequenceRecord("short", "MDV")
    with pytest.raises(ValueError):
        write_mmcif(deposited, tmp_path / "x.cif", entities=[wrong], chain_entity=[0],
                    metadata={})
    mutated = read_fasta(REAL / "3j9s.fasta")[0]
    mutated = SequenceRecord("mut", "A" + mutated.sequence[1:])
    with pytest.raises(ValueError, match="residue 1"):
        write_mmcif(deposited, tmp_path / "y.cif", entities=[mutated], chain_entity=[0],
                    metadata={})


def test_oxt_position_is_trigonal():
    ca, c, o = np.array([0.0, 0, 0]), np.array([1.52, 0, 0]), np.array([2.2, 1.05, 0])
    ox = oxt_position(ca, c, o)
    assert np.linalg.norm(ox - c) == pytest.approx(1.25)
    assert abs(ox[2]) < 1e-9 and ox[1] < 0


@pytest.mark.chimerax
def test_chimerax_opens_the_model(chimerax_session, chimerax_log, tmp_path, deposited):
    """ChimeraX reads chains, the FASTA entity (full sequence, numbering), B-factors."""
    import chimerax_harness as cx

    rng = np.random.default_rng(1)
    extra, _ = many_chain_protein(65, rng)
    extra.atom_positions += 200.0
    sub = deposited.select(deposited.residue_number >= 11)  # residues 11..397 built
    both = Protein(
        atom_positions=np.concatenate([sub.atom_positions, extra.atom_positions]),
        atom_mask=np.concatenate([sub.atom_mask, extra.atom_mask]),
        aatype=np.concatenate([sub.aatype, extra.aatype]),
        residue_number=np.concatenate([sub.residue_number, extra.residue_number]),
        chain_index=np.concatenate([sub.chain_index, extra.chain_index + 1]),
        chain_names=[chain_id(i) for i in range(66)],
        b_factors=np.concatenate([sub.b_factors, extra.b_factors]))
    seqs = read_fasta(REAL / "3j9s.fasta")
    path = write_mmcif(both, tmp_path / "model.cif", entities=seqs,
                       chain_entity=[0] + [None] * 65, metadata=META)
    cx.run(f"open {path}")
    from chimerax.atomic import AtomicStructure

    (s,) = chimerax_session.models.list(type=AtomicStructure)
    chains = {c.chain_id: c for c in s.chains}
    assert len(chains) == 66 and {"A", "9", "AA", "AC"} <= set(chains)
    a = chains["A"]
    assert a.characters == seqs[0].sequence  # full entity sequence, residues 1-10 missing
    assert a.num_existing_residues == len(sub)
    assert [r.number for r in a.existing_residues][:2] == [11, 12]
    assert s.num_atoms == both.atom_mask.sum() + 66  # + one OXT per chain
    written = np.unique(np.round(both.b_factors[both.atom_mask], 2))
    np.testing.assert_allclose(np.unique(np.round(s.atoms.bfactors, 2)), written, atol=0.011)
    assert chimerax_log.text("warning") == "" and chimerax_log.text("error") == ""
    assert "66 chains" in chimerax_log.text("info") or "model.cif" in chimerax_log.text("info")
