"""``modelangelo build``: build atomic models into a cryo-EM map, headless.

Writes ``OUTDIR/<map name>.cif`` (pruned: residues that match a sequence),
``OUTDIR/<map name>_unpruned.cif`` (everything built) and ``OUTDIR/summary.json``.
Without ``--sequence`` only the unpruned model is written, plus one HMM profile per
chain in ``OUTDIR/hmm_profiles/`` for ``modelangelo search``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


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
    g.add_argument("--quiet", "-q", action="store_true", help="print only errors and the result")


def main(args: argparse.Namespace) -> int:
    from ..mapio import read_map
    from ..pipeline import map_name, run_build
    from ..sequences import read_fasta

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    map_warnings: list[str] = []
    grid = read_map(args.map, warnings=map_warnings)
    for w in map_warnings:
        say(f"warning: {w}")
    say(f"map {args.map}: {grid.data.shape[::-1]} voxels (x, y, z), voxel size "
        f"{', '.join(f'{v:.3f}' for v in grid.voxel_size)} A")
    sequences = None
    if args.sequence is not None:
        fasta_warnings: list[str] = []
        sequences = read_fasta(args.sequence, warnings=fasta_warnings)
        for w in fasta_warnings:
            say(f"warning: {w}")
        say(f"{len(sequences)} sequence(s) from {args.sequence}")
    else:
        say("no sequence given: no-sequence mode (unpruned model + HMM profiles)")
    result = run_build(grid, sequences, args.output_dir, args.name or map_name(args.map),
                       device=args.device, overwrite=args.overwrite, log=say)
    s = result.summary
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"unpruned model: {result.unpruned_path} ({s['residues_unpruned']} residues, "
          f"{s['chains_unpruned']} chains)")
    if result.pruned_path is not None:
        print(f"pruned model:   {result.pruned_path} ({s['residues_pruned']} residues, "
              f"{s['chains_pruned']} chains)")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0
