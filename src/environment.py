"""The Python packages a build needs, and how to get them into ChimeraX's Python.

ChimeraX ships its own Python without PyTorch. ``modelangelo install`` (ChimeraX) runs
``<ChimeraX's python> -m pip install`` with :data:`REQUIREMENTS`; on Linux the PyPI
torch wheel includes CUDA, so an NVIDIA GPU is used when its driver is present.
Nothing here imports ChimeraX or the heavy packages themselves.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

# import name -> pip requirement
REQUIREMENTS: dict[str, str] = {
    "torch": "torch>=2.1",
    "esm": "fair-esm>=2.0",
    "pyhmmer": "pyhmmer>=0.10",
    "mrcfile": "mrcfile>=1.4",
    "gemmi": "gemmi>=0.6.5",
    "scipy": "scipy>=1.10",
}


def missing_requirements() -> list[str]:
    """pip requirements whose package cannot be imported in this Python."""
    return [req for module, req in REQUIREMENTS.items() if importlib.util.find_spec(module) is None]


def missing_message(missing: list[str]) -> str:
    return ("ModelAngelo needs Python packages that are not installed here: "
            + ", ".join(missing) + ". Install them with the command 'modelangelo install' "
            "(in ChimeraX) or 'python -m pip install " + " ".join(missing) + "'.")


def pip_install_args(requirements: list[str], *, python: str | None = None,
                     dry_run: bool = False) -> list[str]:
    args = [python or sys.executable, "-m", "pip", "install", "--upgrade-strategy",
            "only-if-needed"]
    if dry_run:
        args.append("--dry-run")
    return args + list(requirements)


def run_pip_install(requirements: list[str], *, dry_run: bool = False,
                    python: str | None = None, log=print) -> int:
    """Run pip for ``requirements`` in ``python`` (default: this interpreter), streaming
    its output lines to ``log``; returns pip's exit status."""
    proc = subprocess.Popen(pip_install_args(requirements, python=python, dry_run=dry_run),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        log(line.rstrip())
    return proc.wait()
