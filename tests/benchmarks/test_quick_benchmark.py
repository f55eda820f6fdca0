"""The benchmark harness's quick mode (what CI runs): builds and evaluates one real map."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_benchmark_prints_figures_and_writes_nothing():
    results = REPO / "benchmarks" / "results.md"
    before = results.read_bytes() if results.exists() else None
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick",
                           "--threads", "1"], capture_output=True, text=True, timeout=900)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| emd_2566 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "3.2" and int(cells[2]) > 100  # resolution, deposited residues
    assert float(cells[4]) > 0  # CNN recall within 3 A, percent
    assert (results.read_bytes() if results.exists() else None) == before
