#!/usr/bin/env bash
# Idempotent set-up of .venv/ in the repository root (Python 3.11, CPU torch).
# Usage: scripts/setup.sh [--test]   (--test also installs the test-only pieces:
# pytest, ruff, PyQt6 and the ChimeraX Python library into .venv/chimerax-lib)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
venv="$root/.venv"
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$py" -m venv "$venv"
fi

# Core runtime (stamp = hash of this script + pyproject, so edits re-run the install).
stamp_core="$venv/.stamp-core-$(cat scripts/setup.sh pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp_core" ]; then
  echo "[setup] installing runtime dependencies (torch CPU, numpy, mrcfile, gemmi, fair-esm, pyhmmer, scipy)"
  pip install "setuptools>=77.0.3,<81" wheel
  pip install "torch==2.13.0" "numpy==1.26.4" "mrcfile==1.5.4" "gemmi==0.7.5" \
      "fair-esm==2.0.0" "pyhmmer==0.12.3" "scipy>=1.11,<1.17"
  pip install --no-build-isolation --no-deps -e .
  rm -f "$venv"/.stamp-core-*
  touch "$stamp_core"
fi

if [ "$want_test" = 1 ]; then
  stamp_test="$venv/.stamp-test-$(cat scripts/setup.sh | sha1sum | cut -c1-12)"
  if [ ! -f "$stamp_test" ]; then
    echo "[setup] installing test dependencies (pytest, ruff, PyQt6, matplotlib, ChimeraX Python library)"
    pip install "pytest>=8" "ruff>=0.6" "PyQt6>=6.6" "matplotlib>=3.8"
    # ChimeraX's own Python library (see tests/chimerax_harness.py). Its pinned
    # requirements do not install; these are what core/atomic/map/mmcif need.
    pip install tinyarray "sortedcontainers==2.4.0" packaging "pkginfo==1.9.6" \
        "Pillow==10.2.0" "lz4==4.3.3" "msgpack==1.0.7" "distro==1.9.0" "grako==3.99.9"
    # Kept out of site-packages so that chimerax/__init__.py from the wheel never
    # shadows the namespace package that holds chimerax.modelangelo.
    pip install --no-deps --target "$venv/chimerax-lib" "chimerax==0.1.71"
    rm -f "$venv"/.stamp-test-*
    touch "$stamp_test"
  fi
fi
