"""The managed environment (``environment.py``): real virtual environments in tmp_path.

They are made from this test environment's Python (``.venv``, which has torch & co.):
with ``system_site_packages`` they see its packages, so nothing is downloaded; without,
they see none, and must say so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chimerax.modelangelo import environment as env
from chimerax.modelangelo.errors import ModelAngeloError

REPO = Path(__file__).resolve().parents[1]
PYTHON = Path(sys.executable)  # the test venv's python (has every requirement)


def run_in(python: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-s", "-c", code], capture_output=True, text=True,
                          timeout=120, env=env.subprocess_env())


@pytest.fixture(scope="module")
def inheriting_venv(tmp_path_factory):
    """A managed environment that sees the test venv's packages (no pip of its own)."""
    loc = tmp_path_factory.mktemp("env") / "venv"
    env.create_venv(loc, python=PYTHON, system_site_packages=True, with_pip=False,
                    log=lambda line: None)
    return loc


def test_location_default_env_var_and_keyword(monkeypatch, tmp_path):
    monkeypatch.delenv(env.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "data"))
    default = env.venv_location()
    assert default.name == "venv" and default.parent.name == "ChimeraX-ModelAngelo"
    if sys.platform.startswith("linux"):
        assert default == tmp_path / "data" / "ChimeraX-ModelAngelo" / "venv"
    monkeypatch.setenv(env.ENV_VAR, str(tmp_path / "mine"))
    assert env.venv_location() == tmp_path / "mine"
    assert env.venv_location(tmp_path / "kw") == tmp_path / "kw"  # the keyword wins
    expected = ("Scripts/python.exe" if sys.platform.startswith("win") else "bin/python")
    assert env.venv_python(tmp_path / "kw") == tmp_path / "kw" / expected


def test_missing_environment_is_reported_without_running_anything(tmp_path):
    report = env.environment_report(tmp_path / "nothing")
    assert not report.exists and not report.ready
    assert "does not exist" in report.problem
    assert report.missing == list(env.REQUIREMENTS.values())


def test_environment_with_system_site_packages_has_everything(inheriting_venv, tmp_path):
    # before the bundle is linked in: the packages are there, the bundle is not
    report = env.environment_report(inheriting_venv)
    assert report.exists and report.missing == [] and report.bundle is None
    assert not report.ready and "no copy of the ModelAngelo bundle" in report.problem

    # a link to some other copy of the bundle is noticed, and replaced by install_bundle
    other = tmp_path / "old-bundle"
    other.mkdir()
    (other / "__init__.py").write_text("")
    env.install_bundle(inheriting_venv, bundle=other)
    report = env.environment_report(inheriting_venv)
    assert not report.ready and "a different copy" in report.problem

    link = env.install_bundle(inheriting_venv)
    report = env.environment_report(inheriting_venv)
    assert report.ready, report.problem
    assert report.problem is None and report.missing == []
    assert link.resolve() == env.bundle_dir() == (REPO / "src").resolve()

    # The environment imports this bundle through a namespace package, without ChimeraX;
    # its numpy is the test venv's (the parent environment), not the base Python's.
    parent_numpy = run_in(PYTHON, "import numpy; print(numpy.__file__)").stdout.strip()
    r = run_in(env.venv_python(inheriting_venv),
               "import sys, chimerax, chimerax.modelangelo as m, chimerax.modelangelo.cli, numpy\n"
               "print(m.__path__[0]); print(list(chimerax.__path__)); print(numpy.__file__)\n"
               "print(getattr(chimerax, '__file__', None)); print('chimerax.core' in sys.modules)")
    assert r.returncode == 0, r.stderr
    bundle_path, namespace, numpy_file, chimerax_file, has_core = r.stdout.splitlines()
    assert Path(bundle_path).resolve() == env.bundle_dir()
    assert namespace == str([str(inheriting_venv / env.SHIM_DIR / "chimerax")])
    assert numpy_file == parent_numpy
    assert chimerax_file == "None" and has_core == "False"  # a namespace package only


def test_environment_without_system_site_packages_lacks_the_packages(tmp_path):
    loc = tmp_path / "bare"
    python = env.create_venv(loc, python=PYTHON, with_pip=False, log=lambda line: None)
    assert python == env.venv_python(loc) and python.exists()
    assert env.missing_requirements_in(python) == list(env.REQUIREMENTS.values())
    env.install_bundle(loc)
    report = env.environment_report(loc)
    assert report.bundle_ok and not report.ready
    assert report.missing == list(env.REQUIREMENTS.values())
    assert "lacks torch>=2.1, fair-esm>=2.0" in report.problem
    # the bundle's package itself imports there (it needs nothing at import time)
    r = run_in(python, "import chimerax.modelangelo, sys; print('numpy' in sys.modules)")
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_install_environment_creates_a_ready_environment(tmp_path):
    """The whole install: venv, pip (everything already satisfied: no download), link."""
    lines: list[str] = []
    loc = tmp_path / "full"
    report = env.install_environment(loc, python=PYTHON, system_site_packages=True,
                                     with_pip=False, log=lines.append)
    assert report.ready and report.location == loc
    text = "\n".join(lines)
    assert "-m venv --system-site-packages" in text
    assert "Requirement already satisfied: torch>=2.1" in text
    assert (loc / "pyvenv.cfg").is_file()
    # again: the environment is kept, pip finds nothing to do
    lines.clear()
    assert env.install_environment(loc, python=PYTHON, log=lines.append).ready
    assert not any("-m venv" in line for line in lines)


def test_dry_run_changes_nothing(tmp_path):
    lines: list[str] = []
    report = env.install_environment(tmp_path / "dry", python=PYTHON, dry_run=True,
                                     log=lines.append)
    assert not (tmp_path / "dry").exists() and not report.exists
    assert any(line.startswith("would create a Python environment") for line in lines)


def test_a_folder_that_is_not_an_environment_is_never_used(tmp_path):
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.txt").write_text("precious\n")
    with pytest.raises(ModelAngeloError, match="not a Python virtual environment"):
        env.create_venv(folder, python=PYTHON, log=lambda line: None)
    assert (folder / "thesis.txt").read_text() == "precious\n"
    with pytest.raises(ModelAngeloError, match="no Python environment"):
        env.install_bundle(folder)


def test_subprocess_env_drops_chimerax_python_settings(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/chimerax/site-packages")
    monkeypatch.setenv("PYTHONHOME", "/chimerax")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    e = env.subprocess_env()
    assert "PYTHONPATH" not in e and "PYTHONHOME" not in e
    assert e["CUDA_VISIBLE_DEVICES"] == "1" and e["PYTHONNOUSERSITE"] == "1"
