"""``modelangelo search``: identify the chains of a no-sequence build in a FASTA database.

A build without ``--sequence`` writes, next to its unpruned model, one profile HMM per
built chain (HMMER3 text format)::

    OUTDIR/
      <name>_unpruned.cif        the model; chain IDs A, B, ... (longest chain first)
      summary.json               per-chain information ("chains")
      hmm_profiles/
        chain_0001.hmm           one HMM per chain, in the model's chain order; the HMM's
        chain_0002.hmm           NAME is the chain ID in <name>_unpruned.cif, its match
        ...                      states are the chain's residues N -> C

This command searches every ``OUTDIR/hmm_profiles/*.hmm`` (files in name order; OUTDIR may
also be a folder of ``.hmm`` files or one ``.hmm`` file) against a protein FASTA database
with HMMER (pyhmmer, ``hmmsearch`` defaults; E-values over the database size) and prints,
for each chain, its best ``--top`` hits with E-value at most ``--max-evalue``: rank,
E-value, bit score, aligned residues of the chain and of the target, target name.
``--json`` also writes them to a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outdir", type=Path,
                        help="output folder of a build made without --sequence "
                             "(or a folder of .hmm files, or one .hmm file)")
    parser.add_argument("--database", "-d", type=Path, required=True,
                        help="protein sequences to search (FASTA)")
    parser.add_argument("--top", type=int, default=5, help="hits to report per chain (default 5)")
    parser.add_argument("--max-evalue", type=float, default=10.0,
                        help="report hits with E-value at most this (default 10)")
    parser.add_argument("--json", type=Path, default=None, help="also write the hits to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def profile_files(outdir: Path) -> list[Path]:
    """The HMM files of a build folder (see the module docstring)."""
    from ..errors import ModelAngeloError

    outdir = Path(outdir)
    if not outdir.exists():
        raise ModelAngeloError(f"{outdir} does not exist")
    if outdir.is_file():
        return [outdir]
    folder = outdir / "hmm_profiles" if (outdir / "hmm_profiles").is_dir() else outdir
    files = sorted(folder.glob("*.hmm"))
    if not files:
        raise ModelAngeloError(
            f"no HMM profiles in {outdir} (expected {outdir / 'hmm_profiles'}/*.hmm): "
            "'modelangelo search' needs the output folder of a build made without --sequence")
    return files


def main(args: argparse.Namespace) -> int:
    from ..alignment import read_database, read_hmms, search_profiles
    from ..errors import ModelAngeloError, OutputError

    if args.top < 1:
        raise ModelAngeloError("--top must be at least 1")
    if args.json is not None and args.json.exists() and not args.overwrite:
        raise OutputError(f"{args.json} exists; pass --overwrite to replace it")
    files = profile_files(args.outdir)
    hmms, sources = [], []
    for f in files:
        for hmm in read_hmms(f):
            hmms.append(hmm)
            sources.append(f)
    database = read_database(args.database)
    results = search_profiles(hmms, database, top=args.top, max_evalue=args.max_evalue)

    report = {"database": str(args.database), "database_sequences": len(database),
              "max_evalue": args.max_evalue, "chains": []}
    for hmm, src, hits in zip(hmms, sources, results):
        print(f"chain {hmm.name} ({hmm.M} residues, {src.name})")
        if not hits:
            print(f"  no hit with E-value <= {args.max_evalue:g}")
        else:
            print(f"  {'rank':>4}  {'E-value':>9}  {'bits':>7}  {'chain res.':>11}  "
                  f"{'target res.':>15}  target")
            for h in hits:
                target = f"{h.target_from}-{h.target_to}/{h.target_length}"
                desc = f"  {h.description}" if h.description else ""
                print(f"  {h.rank:>4}  {h.evalue:>9.2e}  {h.score:>7.1f}  "
                      f"{f'{h.node_from}-{h.node_to}':>11}  {target:>15}  {h.name}{desc}")
        report["chains"].append({"chain": hmm.name, "residues": hmm.M, "file": str(src),
                                 "hits": [dataclasses.asdict(h) for h in hits]})
    sys.stdout.flush()
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(report, indent=2))
        except OSError as exc:
            raise OutputError(f"cannot write {args.json}: {exc}") from exc
        print(f"hits written to {args.json}", file=sys.stderr)
    return 0
