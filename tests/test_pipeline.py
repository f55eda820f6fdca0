"""The whole build on the bundled example map (real EMD-2566 zone) with the shipped weights."""

import json
from pathlib import Path

import numpy as np
import pytest

from chimerax.modelangelo import residue_constants as rc
from chimerax.modelangelo.errors import JobStopped, OutputError
from chimerax.modelangelo.mapio import (
    apply_b_factor,
    guinier_b,
    interpolate,
    normalise,
    read_map,
    resample,
)
from chimerax.modelangelo.pipeline import STAGES, run_build
from chimerax.modelangelo.protein import load_protein
from chimerax.modelangelo.sequences import read_fasta

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_MAP = REPO / "example" / "emd_2566.mrc"
EXAMPLE_FASTA = REPO / "example" / "emd_2566.fasta"


@pytest.fixture(scope="module")
def example_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "out"
    stages = []
    result = run_build(read_map(EXAMPLE_MAP), read_fasta(EXAMPLE_FASTA), out, "emd_2566",
                       device="cpu", progress=lambda s, f: stages.append((s, f)))
    return result, stages, out


def test_unpruned_model_sits_on_the_density(example_build):
    result, _, out = example_build
    assert result.unpruned_path == out / "emd_2566_unpruned.cif"
    unpruned = load_protein(result.unpruned_path)
    assert len(unpruned) > 20
    grid = read_map(EXAMPLE_MAP)
    on_model = interpolate(grid, unpruned.ca)
    # built C-alpha atoms sit on density well above the map's typical value
    assert np.median(on_model) > np.percentile(grid.data, 90)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["residues_unpruned"] == len(unpruned)


def test_pruned_model_follows_the_sequence(example_build):
    result, _, out = example_build
    # with the shipped weights most of this 3.2 A zone matches its sequence (the empty
    # case is test_a_sequence_of_another_protein_...)
    assert result.pruned_path == out / "emd_2566.cif"
    pruned = load_protein(result.pruned_path)
    unpruned = load_protein(result.unpruned_path)
    assert 0.4 * len(unpruned) <= len(pruned) <= len(unpruned)  # 148 of 247 (2026-11-25)
    sequence = read_fasta(EXAMPLE_FASTA)[0].sequence
    # residues are numbered by the sequence and carry its residue types
    assert pruned.residue_number.min() >= 1
    assert pruned.residue_number.max() <= len(sequence)
    letters = [rc.RESTYPES[a] for a in pruned.aatype]
    assert letters == [sequence[n - 1] for n in pruned.residue_number]


def test_confidence_is_in_bfactors_0_to_100(example_build):
    unpruned = load_protein(example_build[0].unpruned_path)
    b = unpruned.b_factors[:, 1]
    assert b.min() >= 0 and b.max() <= 100 and b.std() > 0


def test_reports_every_stage_in_order(example_build):
    _, stages, _ = example_build
    seen = [s for i, (s, _) in enumerate(stages) if i == 0 or stages[i - 1][0] != s]
    assert seen == list(STAGES)
    assert all(0.0 <= f <= 1.0 for _, f in stages)


def test_existing_results_are_kept(example_build):
    result, _, out = example_build
    before = result.unpruned_path.read_bytes()
    with pytest.raises(OutputError):
        run_build(read_map(EXAMPLE_MAP), read_fasta(EXAMPLE_FASTA), out, "emd_2566", device="cpu")
    assert result.unpruned_path.read_bytes() == before


def test_stop_request_stops_the_build(tmp_path):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(JobStopped):
        run_build(read_map(EXAMPLE_MAP), None, tmp_path / "out", "emd_2566", device="cpu",
                  should_stop=should_stop)
    assert not (tmp_path / "out" / "emd_2566_unpruned.cif").exists()


def test_a_sequence_of_another_protein_leaves_the_pruned_model_out_and_says_why(tmp_path):
    """The FASTA of EMD-6272's protein (3J9S) for the EMD-2566 map: nothing may be
    assigned, the unpruned model is still written, and the user is told what to do."""
    other = read_fasta(REPO.parent / "shared" / "data" / "real_maps" / "emd_6272" / "3j9s.fasta")
    result = run_build(read_map(EXAMPLE_MAP), other, tmp_path / "out", "emd_2566", device="cpu")
    assert result.pruned_path is None and not (tmp_path / "out" / "emd_2566.cif").exists()
    assert len(load_protein(result.unpruned_path)) > 20
    (msg,) = [w for w in result.warnings if "pruned model is empty" in w]
    assert "best E-value" in msg and "modelangelo search" in msg
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["residues_pruned"] == 0 and msg in summary["warnings"]
    assert all(c["sequence"] is None and not c["in_pruned"] for c in summary["chains"])


def test_no_sequence_mode_writes_profiles(tmp_path):
    result = run_build(read_map(EXAMPLE_MAP), None, tmp_path / "out", "emd_2566", device="cpu")
    assert result.pruned_path is None
    assert result.unpruned_path.exists()
    assert list((tmp_path / "out" / "hmm_profiles").glob("*.hmm"))


def test_only_maps_blurrier_than_training_are_sharpened(tmp_path, example_build):
    """EMD-2566 (Guinier B ~33) is left as it is; the same map blurred by B 80 is
    sharpened for the graph network by (B - 40), at most 60 A^2, and the summary says so."""
    _, _, out = example_build
    assert json.loads((out / "summary.json").read_text())["gnn_map_sharpening_b"] == 0.0
    grid = resample(read_map(EXAMPLE_MAP), 1.5)
    blurred = apply_b_factor(grid, 80.0)
    b = guinier_b(normalise(blurred))
    assert b > 100
    logs: list[str] = []
    run_build(blurred, read_fasta(EXAMPLE_FASTA), tmp_path / "out", "blurred", device="cpu",
              log=logs.append)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["gnn_map_sharpening_b"] == pytest.approx(-min(b - 40.0, 60.0), abs=0.1)
    assert any("sharpened" in line for line in logs)
