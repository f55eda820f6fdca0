"""``modelangelo evaluate``: files written with gemmi from a real structure, JSON, errors."""

import json
from pathlib import Path

import gemmi
import pytest

from chimerax.modelangelo.cli import main

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
COMPLEX = DATA / "structures" / "db55_1A2K_b.cif.gz"  # 444 residues, chains C (196), A, B (124)


def write_modified(path: Path, *, shift=(0.0, 0.0, 0.0), drop_chain=None, mutate_every=0):
    """Write COMPLEX to ``path`` (.cif or .pdb) after moving, deleting or mutating."""
    st = gemmi.read_structure(str(COMPLEX))
    st.remove_waters()
    model = st[0]
    if drop_chain is not None:
        model.remove_chain(drop_chain)
    k = 0
    for chain in model:
        for res in chain:
            if mutate_every and gemmi.find_tabulated_residue(res.name).is_amino_acid():
                if k % mutate_every == 0:
                    res.name = "GLY" if res.name != "GLY" else "ALA"
                k += 1
            for atom in res:
                p = atom.pos
                atom.pos = gemmi.Position(p.x + shift[0], p.y + shift[1], p.z + shift[2])
    if path.suffix == ".pdb":
        st.write_pdb(str(path))
    else:
        st.setup_entities()
        st.make_mmcif_document().write_file(str(path))
    return path


def test_identical_copy_table_and_json(tmp_path, capsys):
    pred = write_modified(tmp_path / "pred.cif")
    out = tmp_path / "eval.json"
    code = main(["evaluate", str(pred), str(COMPLEX), "--json", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "residue recall" in stdout and "100.0 %" in stdout and "C (196)" in stdout
    d = json.loads(out.read_text())
    assert d["residue_recall"] == 1.0 and d["precision"] == 1.0 and d["sequence_recall"] == 1.0
    assert d["ca_rmsd"] == 0.0 and d["backbone_rmsd"] == 0.0
    assert d["n_deposited"] == d["n_predicted"] == 444
    assert [c["name"] for c in d["chains"]] == ["C", "A", "B"]
    assert d["predicted_path"] == str(pred) and d["deposited_path"] == str(COMPLEX)


def test_deleted_chain_shifted_pdb(tmp_path, capsys):
    pred = write_modified(tmp_path / "pred.pdb", shift=(0.0, 0.6, 0.8), drop_chain="A")
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(pred), str(COMPLEX), "--json", str(out), "--pairs"]) == 0
    d = json.loads(out.read_text())
    assert d["n_matched"] == 320 and d["residue_recall"] == pytest.approx(320 / 444)
    assert d["precision"] == 1.0
    assert d["ca_rmsd"] == pytest.approx(1.0, abs=2e-3)  # PDB keeps 3 decimals
    assert d["backbone_rmsd"] == pytest.approx(1.0, abs=2e-3)
    chains = {c["name"]: c for c in d["chains"]}
    assert chains["A"]["recall"] == 0.0 and chains["A"]["predicted_chains"] == {}
    assert chains["C"]["predicted_chains"] == {"C": 196}
    assert len(d["pairs"]["deposited"]) == 320
    assert "Traceback" not in capsys.readouterr().err


def test_mutated_residues_and_match_distance(tmp_path, capsys):
    pred = write_modified(tmp_path / "pred.cif", mutate_every=4, shift=(2.0, 0.0, 0.0))
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(pred), str(COMPLEX), "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["residue_recall"] == 1.0
    assert d["n_sequence_matched"] == 444 - 111
    assert d["sequence_recall"] == pytest.approx(333 / 444)
    out2 = tmp_path / "strict.json"
    assert main(["evaluate", str(pred), str(COMPLEX), "--json", str(out2),
                 "--match-distance", "1.5"]) == 0
    d2 = json.loads(out2.read_text())
    assert d2["match_distance"] == 1.5 and d2["n_matched"] == 0


def test_json_is_not_overwritten_without_flag(tmp_path, capsys):
    out = tmp_path / "eval.json"
    out.write_text("keep me\n")
    code = main(["evaluate", str(COMPLEX), str(COMPLEX), "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "--overwrite" in err and "Traceback" not in err
    assert out.read_text() == "keep me\n"
    assert main(["evaluate", str(COMPLEX), str(COMPLEX), "--json", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["residue_recall"] == 1.0


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    code = main(["evaluate", str(tmp_path / "nope.cif"), str(COMPLEX)])
    err = capsys.readouterr().err
    assert code == 2
    assert "nope.cif" in err and "does not exist" in err and "Traceback" not in err
    code = main(["evaluate", str(COMPLEX), str(tmp_path / "gone.cif")])
    err = capsys.readouterr().err
    assert code == 2 and "gone.cif" in err


def test_unreadable_file_and_bad_options_are_clear_errors(tmp_path, capsys):
    bad = tmp_path / "notes.cif"
    bad.write_text("this is not a structure\n" * 20)
    code = main(["evaluate", str(bad), str(COMPLEX)])
    err = capsys.readouterr().err
    assert code == 2 and "notes.cif" in err and "Traceback" not in err
    code = main(["evaluate", str(COMPLEX), str(COMPLEX), "--match-distance", "0"])
    assert code == 2 and "match-distance" in capsys.readouterr().err
    code = main(["evaluate", str(COMPLEX), str(COMPLEX), "--json",
                 str(tmp_path / "no_such_dir" / "x.json")])
    err = capsys.readouterr().err
    assert code == 2 and "no_such_dir" in err
