"""``modelangelo build``: build atomic models into a cryo-EM map, headless.

Writes ``OUTDIR/<map name>.cif`` (pruned: residues that match a sequence),
``OUTDIR/<map name>_unpruned.cif`` (everything built) and ``OUTDIR/summary.json``.
Without ``--sequence`` only the unpruned model is written, plus one HMM profile per
chain in ``OUTDIR/hmm_profiles/`` for ``modelangelo search``.

``--progress-json`` (what ChimeraX uses to run builds in the managed environment)
prints one JSON object per line on stdout, and nothing else there (messages that
libraries print go to stderr). Each has an ``"event"``:

* ``{"event": "stage", "stage": "detect", "index": 1, "count": 5}`` - a stage begins
  (stages: prepare, detect, refine, chains, write);
* ``{"event": "progress", "stage": "detect", "fraction": 0.42}`` - within a stage, 0-1;
* ``{"event": "log", "message": "[detect] 154 C-alpha candidates"}`` - what the plain
  output prints (left out with ``--quiet``);
* ``{"event": "warning", "message": "..."}`` - a problem with the inputs (map, FASTA);
  the build's own warnings are in its log lines and in the result's ``warnings``;
* ``{"event": "result", "unpruned": PATH, "pruned": PATH or null, "summary": {...},
  "warnings": [...], "seconds": 9.7}`` - the last event of a build that worked;
  ``summary`` is what ``summary.json`` holds;
* ``{"event": "error", "kind": "user" | "stopped" | "internal", "message": "..."}`` - the
  last event of a build that did not. ``user``: the input or set-up is at fault (exit
  status 2, and one line on stderr as without the option); ``stopped``: SIGTERM asked
  the build to stop (exit status 2); ``internal``: a bug (``message`` holds the
  traceback; exit status 1).

SIGTERM stops a build at its next check (the pipeline checks between tiles and
stages), like ``modelangelo stop`` in ChimeraX.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

PROTOCOL_VERSION = 1


def add_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("input")
    g.add_argument("map", type=Path, help="cryo-EM map (MRC/CCP4: .mrc, .map, .ccp4, optionally .gz)")
    g.add_argument("--sequence", "-s", type=Path, default=None,
                   help="FASTA file with the sequences of the proteins in the map "
                        "(leave out for the no-sequence mode)")
    g = parser.add_argument_group("output")
    g.add_argument("--output-dir", "-o", type=Path, required=True,
                   help="folder for the models (created; existing results are never overwritten "
                        "unless --overwrite)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace results of an earlier build in the output folder")
    g.add_argument("--name", default=None, help="base name of the output files (default: map file name)")
    g = parser.add_argument_group("compute")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "gpu"),
                   help="where the networks run (auto: CUDA GPU if present, else CPU)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all)")
    g = parser.add_argument_group("messages")
    g.add_argument("--quiet", "-q", action="store_true", help="print only errors and the result")
    g.add_argument("--progress-json", action="store_true",
                   help="machine-readable output: one JSON object per line on stdout for each "
                        "stage, progress, log, warning, result or error event (see the module "
                        "documentation); plain text is the default")


class JsonEvents:
    """Writes ``--progress-json`` events, one JSON object per line, to ``stream``."""

    def __init__(self, stream, quiet: bool = False):
        self.stream = stream
        self.quiet = quiet
        self._stage: str | None = None
        self._fraction = 0.0
        self._lock = threading.Lock()

    def emit(self, event: str, **fields) -> None:
        from ..pipeline import _json_default

        line = json.dumps({"event": event, **fields}, default=_json_default)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def log(self, message: str) -> None:
        if not self.quiet:
            self.emit("log", message=message)

    def progress(self, stage: str, fraction: float) -> None:
        from ..pipeline import STAGES

        if stage != self._stage:
            self._stage, self._fraction = stage, -1.0
            self.emit("stage", stage=stage, index=STAGES.index(stage) if stage in STAGES
                      else None, count=len(STAGES))
        # at most ~100 progress events per stage, always its start and end
        if fraction in (0.0, 1.0) or fraction - self._fraction >= 0.01:
            self._fraction = fraction
            self.emit("progress", stage=stage, fraction=round(float(fraction), 4))


def main(args: argparse.Namespace) -> int:
    from ..errors import JobStopped, ModelAngeloError

    stop = threading.Event()
    events = JsonEvents(sys.stdout, quiet=args.quiet) if args.progress_json else None
    previous = _on_sigterm(stop)
    try:
        if events is None:
            return _build(args, stop, None)
        # only events on stdout: anything else printed during the build goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            return _build(args, stop, events)
    except ModelAngeloError as exc:
        if events is not None:
            events.emit("error", kind="stopped" if isinstance(exc, JobStopped) else "user",
                        message=str(exc))
        raise  # one line on stderr and exit status 2 (cli/__init__.py)
    except Exception as exc:
        if events is not None:
            events.emit("error", kind="internal",
                        message=f"{exc!r}\n{traceback.format_exc()}")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _on_sigterm(stop: threading.Event):
    """SIGTERM sets ``stop`` (the build stops at its next check); returns the previous
    handler, or None where no handler can be installed (not the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())


def _build(args: argparse.Namespace, stop: threading.Event, events: JsonEvents | None) -> int:
    from ..mapio import read_map
    from ..pipeline import map_name, run_build
    from ..sequences import read_fasta

    def say(msg: str) -> None:
        if events is not None:
            events.log(msg)
        elif not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    def warn(msg: str) -> None:
        if events is not None:
            events.emit("warning", message=msg)
        else:
            say(f"warning: {msg}")

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    map_warnings: list[str] = []
    grid = read_map(args.map, warnings=map_warnings)
    for w in map_warnings:
        warn(w)
    say(f"map {args.map}: {grid.data.shape[::-1]} voxels (x, y, z), voxel size "
        f"{', '.join(f'{v:.3f}' for v in grid.voxel_size)} A")
    sequences = None
    if args.sequence is not None:
        fasta_warnings: list[str] = []
        sequences = read_fasta(args.sequence, warnings=fasta_warnings)
        for w in fasta_warnings:
            warn(w)
        say(f"{len(sequences)} sequence(s) from {args.sequence}")
    else:
        say("no sequence given: no-sequence mode (unpruned model + HMM profiles)")
    result = run_build(grid, sequences, args.output_dir, args.name or map_name(args.map),
                       device=args.device, overwrite=args.overwrite, log=say,
                       progress=events.progress if events is not None else None,
                       should_stop=stop.is_set)
    seconds = time.perf_counter() - t0
    if events is not None:
        events.emit("result", unpruned=str(result.unpruned_path),
                    pruned=None if result.pruned_path is None else str(result.pruned_path),
                    summary=result.summary, warnings=list(result.warnings),
                    seconds=round(seconds, 3), protocol=PROTOCOL_VERSION)
        return 0
    s = result.summary
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"unpruned model: {result.unpruned_path} ({s['residues_unpruned']} residues, "
          f"{s['chains_unpruned']} chains)")
    if result.pruned_path is not None:
        print(f"pruned model:   {result.pruned_path} ({s['residues_pruned']} residues, "
              f"{s['chains_pruned']} chains)")
    print(f"done in {seconds:.1f} s")
    return 0
