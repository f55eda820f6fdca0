"""``modelangelo search``: profiles of a no-sequence build against a FASTA database."""

import json
from pathlib import Path

import numpy as np
import pytest

from chimerax.modelangelo import residue_constants as rc
from chimerax.modelangelo.alignment import build_hmm, write_hmm
from chimerax.modelangelo.cli import main
from chimerax.modelangelo.sequences import read_fasta

DATA = Path("/work/shared/data")


def noisy_probs(sequence, rng, corrupt=0.4):
    probs = np.zeros((len(sequence), 20))
    probs[np.arange(len(sequence)), rc.aatype_from_sequence(sequence)] = 1.0
    bad = rng.random(len(sequence)) < corrupt
    probs[bad] = rng.dirichlet(np.full(20, 0.3), bad.sum())
    return probs


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """All development-structure chains plus the real maps' FASTA (~1,600 sequences)."""
    manifest = json.loads((DATA / "structures_manifest.json").read_text())
    lines = [f">{e['name']}_{cid} {e['source']}\n{seq}\n"
             for e in manifest for cid, seq in e["chains"].items()]
    for fasta in sorted(DATA.glob("real_maps/*/*.fasta")):
        lines += [f">{r.name}\n{r.sequence}\n" for r in read_fasta(fasta)]
    path = tmp_path_factory.mktemp("db") / "db.fasta"
    path.write_text("".join(lines))
    return path


@pytest.fixture
def outdir(tmp_path):
    """A build folder as a no-sequence build leaves it: hmm_profiles/chain_000N.hmm."""
    rng = np.random.default_rng(0)
    real = {r.name: r.sequence for f in sorted(DATA.glob("real_maps/*/*.fasta"))
            for r in read_fasta(f)}
    chains = {"A": real["3j9s_A"][30:170], "B": real["7cec_A"][100:190],
              "C": "".join(rng.permutation(list(real["3j6b_9"][:80])))}  # C: no real protein
    (tmp_path / "hmm_profiles").mkdir()
    for i, (name, seq) in enumerate(chains.items()):
        write_hmm(build_hmm(noisy_probs(seq, rng), name), tmp_path / "hmm_profiles" / f"chain_{i + 1:04d}.hmm")
    return tmp_path


def test_search_ranks_the_right_protein_first(outdir, database, tmp_path, capsys):
    out_json = tmp_path / "hits.json"
    code = main(["search", str(outdir), "--database", str(database), "--top", "3",
                 "--max-evalue", "1e-3", "--json", str(out_json)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "chain A (140 residues" in captured.out and "3j9s_A" in captured.out
    report = json.loads(out_json.read_text())
    assert report["database_sequences"] > 1500
    chains = {c["chain"]: c for c in report["chains"]}
    assert list(chains) == ["A", "B", "C"]
    assert chains["A"]["hits"][0]["name"] == "3j9s_A" and chains["A"]["hits"][0]["rank"] == 1
    assert chains["A"]["hits"][0]["evalue"] < 1e-20
    assert chains["A"]["hits"][0]["target_from"] >= 25  # the chain is residues 31-170
    assert chains["B"]["hits"][0]["name"] == "7cec_A"
    assert chains["C"]["hits"] == [] and "no hit with E-value" in captured.out
    assert all(len(c["hits"]) <= 3 for c in chains.values())
    # The JSON is never overwritten silently.
    code = main(["search", str(outdir), "-d", str(database), "--json", str(out_json)])
    assert code == 2 and "--overwrite" in capsys.readouterr().err


def test_single_hmm_file_and_folder_of_files(outdir, database, capsys):
    one = outdir / "hmm_profiles" / "chain_0002.hmm"
    assert main(["search", str(one), "-d", str(database), "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("chain ")] == ["B"]
    assert "7cec_A" in out
    assert main(["search", str(outdir / "hmm_profiles"), "-d", str(database), "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("chain ")] == ["A", "B", "C"]


def test_clear_errors(tmp_path, outdir, database, capsys):
    code = main(["search", str(tmp_path / "missing"), "-d", str(database)])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    empty = tmp_path / "empty_build"
    empty.mkdir()
    code = main(["search", str(empty), "-d", str(database)])
    err = capsys.readouterr().err
    assert code == 2 and "without --sequence" in err
    code = main(["search", str(outdir), "-d", str(tmp_path / "nope.fasta")])
    assert code == 2 and "nope.fasta" in capsys.readouterr().err
    bad = tmp_path / "bad.hmm"
    bad.write_text("not an HMM\n")
    code = main(["search", str(bad), "-d", str(database)])
    assert code == 2 and "bad.hmm" in capsys.readouterr().err
