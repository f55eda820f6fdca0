from pathlib import Path

import numpy as np
import pytest

from chimerax.modelangelo import residue_constants as rc
from chimerax.modelangelo.errors import ModelAngeloError
from chimerax.modelangelo.protein import load_protein

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_reads_real_complex_with_ligands():
    p = load_protein(DATA / "structures" / "db55_1A2K_b.cif.gz")
    assert len(p) == 444 and p.chain_names == ["C", "A", "B"]
    seqs = p.chain_sequences()
    assert seqs["A"].startswith("KPIWEQIGSSF")
    # backbone complete and bond lengths physical
    assert p.atom_mask[:, [rc.N_IDX, rc.CA_IDX, rc.C_IDX]].all()
    ca_c = np.linalg.norm(p.atom_positions[:, rc.CA_IDX] - p.atom_positions[:, rc.C_IDX], axis=1)
    assert np.all(np.abs(ca_c - 1.52) < 0.1)
    # consecutive CAs about 3.8 A apart within a chain
    a = p.ca[p.chain_index == 1]
    d = np.linalg.norm(np.diff(a, axis=0), axis=1)
    assert np.median(d) == pytest.approx(3.8, abs=0.05)
    assert p.other_positions.shape[0] > 0  # ligand atoms kept for simulation


def test_atoms_match_residue_templates():
    p = load_protein(DATA / "real_maps" / "emd_6272" / "3j9s_deposited.cif")
    for aa, mask in zip(p.aatype[:50], p.atom_mask[:50]):
        names = {rc.ATOM_TYPES[j] for j in np.flatnonzero(mask)}
        assert names <= set(rc.RESIDUE_ATOMS[rc.RESTYPE_1TO3[rc.RESTYPES[aa]]]) | {"OXT"}


def test_select_renumbers_chains():
    p = load_protein(DATA / "structures" / "db55_1A2K_b.cif.gz")
    sub = p.select(p.chain_index == 2)
    assert sub.chain_names == ["B"] and set(sub.chain_index.tolist()) == {0}
    assert len(sub) == int((p.chain_index == 2).sum())


def test_unreadable_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.cif"
    bad.write_text("this is not a structure\n")
    with pytest.raises(ModelAngeloError):
        load_protein(bad)
    with pytest.raises(ModelAngeloError):
        load_protein(tmp_path / "missing.cif")
