"""``modelangelo build --progress-json``: one JSON event per line, for ChimeraX and scripts.

Real builds of the bundled example map (a few seconds each), read the way ChimeraX reads
them: ``python -m chimerax.modelangelo build ... --progress-json`` as a child process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chimerax.modelangelo.pipeline import STAGES

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_MAP = REPO / "example" / "emd_2566.mrc"
EXAMPLE_FASTA = REPO / "example" / "emd_2566.fasta"


def build_args(out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "chimerax.modelangelo", "build", str(EXAMPLE_MAP),
            "--sequence", str(EXAMPLE_FASTA), "-o", str(out), "--device", "cpu",
            "--progress-json", *map(str, extra)]


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]  # every line is an event


def test_events_of_a_build(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(build_args(out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    events = events_of(r.stdout)
    kinds = [e["event"] for e in events]
    assert set(kinds) <= {"stage", "progress", "log", "warning", "result"}
    assert kinds[-1] == "result" and kinds.count("result") == 1

    stages = [e for e in events if e["event"] == "stage"]
    assert [e["stage"] for e in stages] == list(STAGES)
    assert [e["index"] for e in stages] == list(range(len(STAGES)))
    assert {e["count"] for e in stages} == {len(STAGES)}
    for stage in STAGES:  # each stage runs from 0 to 1, never backwards
        fractions = [e["fraction"] for e in events
                     if e["event"] == "progress" and e["stage"] == stage]
        assert fractions[0] == 0.0 and fractions[-1] == 1.0
        assert fractions == sorted(fractions)
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert logs[0].startswith(f"map {EXAMPLE_MAP}")
    assert any(m.startswith("[detect]") and "C-alpha candidates" in m for m in logs)

    result = events[-1]
    assert Path(result["unpruned"]) == out / "emd_2566_unpruned.cif"
    assert Path(result["unpruned"]).is_file()
    assert result["pruned"] is None or Path(result["pruned"]).is_file()
    assert result["summary"] == json.loads((out / "summary.json").read_text())
    assert result["warnings"] == result["summary"]["warnings"]
    assert result["seconds"] > 0 and result["protocol"] == 1


def test_user_error_is_an_error_event_and_one_line_with_exit_status_2(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "emd_2566_unpruned.cif").write_text("an earlier result\n")
    r = subprocess.run(build_args(out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    *_, error = events_of(r.stdout)
    assert error["event"] == "error" and error["kind"] == "user"
    assert "already holds results" in error["message"]
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("modelangelo build: error: output folder") and "Traceback" not in line
    assert (out / "emd_2566_unpruned.cif").read_text() == "an earlier result\n"


def test_missing_map_is_an_error_event(tmp_path, capsys):
    from chimerax.modelangelo.cli import main

    code = main(["build", str(tmp_path / "nope.mrc"), "-o", str(tmp_path / "out"),
                 "--progress-json"])
    captured = capsys.readouterr()
    assert code == 2
    (event,) = events_of(captured.out)
    assert event == {"event": "error", "kind": "user",
                     "message": f"map file not found: {tmp_path / 'nope.mrc'}"}
    assert captured.err.count("\n") == 1 and "nope.mrc" in captured.err


@pytest.mark.skipif(sys.platform.startswith("win"), reason="SIGTERM is a hard kill on Windows")
def test_sigterm_stops_the_build_with_a_stopped_event(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(build_args(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen = []
    for line in proc.stdout:  # stop once the pipeline has started
        seen.append(json.loads(line))
        if seen[-1]["event"] == "stage":
            proc.send_signal(signal.SIGTERM)
            break
    t0 = time.monotonic()
    rest, err = proc.communicate(timeout=120)
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 2
    last = events_of(rest)[-1]
    assert last["event"] == "error" and last["kind"] == "stopped"
    assert last["message"].startswith("stopped by the user")
    assert not (out / "emd_2566_unpruned.cif").exists()
    assert "Traceback" not in err


def test_plain_text_stays_the_default(tmp_path, capsys):
    from chimerax.modelangelo.cli import make_parser

    args = make_parser(["build"]).parse_args(["build", "m.mrc", "-o", str(tmp_path)])
    assert args.progress_json is False
    r = subprocess.run([sys.executable, "-m", "chimerax.modelangelo", "build", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert "--progress-json" in r.stdout and "messages:" in r.stdout
