"""The ``modelangelo`` console script: registry, help, and clear errors for bad input."""

import subprocess
import sys
from pathlib import Path

import pytest

from chimerax.modelangelo.cli import SUBCOMMANDS, main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_MAP = REPO / "example" / "emd_2566.mrc"
EXAMPLE_FASTA = REPO / "example" / "emd_2566.fasta"


def run_cli(*args):
    exe = Path(sys.executable).parent / "modelangelo"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_help_lists_every_subcommand():
    r = run_cli("--help")
    assert r.returncode == 0
    for name in SUBCOMMANDS:
        assert name in r.stdout


def test_every_subcommand_module_has_add_args_and_main():
    import importlib

    for module, _ in SUBCOMMANDS.values():
        mod = importlib.import_module(f"chimerax.modelangelo.cli.{module}")
        assert callable(mod.add_args) and callable(mod.main)


def test_build_help_groups_arguments():
    r = run_cli("build", "--help")
    assert r.returncode == 0
    for word in ("--sequence", "--output-dir", "--device", "--overwrite", "input", "output"):
        assert word in r.stdout


def test_missing_map_is_a_clear_error(tmp_path, capsys):
    code = main(["build", str(tmp_path / "nope.mrc"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "nope.mrc" in err and "Traceback" not in err


def test_not_a_map_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "notes.mrc"
    bad.write_text("hello, I am not a map\n" * 100)
    code = main(["build", str(bad), "-o", str(tmp_path / "out")])
    assert code == 2 and "Traceback" not in capsys.readouterr().err


def test_bad_fasta_is_a_clear_error(tmp_path, capsys):
    fasta = tmp_path / "seq.fasta"
    fasta.write_text("ATOM      1  N   MET A   1      11.104  13.207   2.100  1.00  0.00           N\n")
    code = main(["build", str(EXAMPLE_MAP), "--sequence", str(fasta), "-o", str(tmp_path / "out")])
    assert code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_existing_results_are_never_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    precious = out / "emd_2566.cif"
    precious.write_text("my hand-built model\n")
    code = main(["build", str(EXAMPLE_MAP), "--sequence", str(EXAMPLE_FASTA), "-o", str(out)])
    assert code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert precious.read_text() == "my hand-built model\n"


def test_cuda_without_gpu_is_a_clear_error(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = main(["build", str(EXAMPLE_MAP), "-o", str(tmp_path / "out"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "CUDA" in err
