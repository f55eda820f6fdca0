"""``modelangelo evaluate``: compare a built model with a deposited model.

Prints residue recall, precision, sequence recall and match, backbone and CA RMSD (totals,
then per deposited chain); ``--json`` also writes every figure to a JSON file.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predicted", type=Path, help="built model (mmCIF/PDB, optionally .gz)")
    parser.add_argument("deposited", type=Path,
                        help="reference (deposited) model (mmCIF/PDB, optionally .gz)")
    parser.add_argument("--match-distance", type=float, default=3.0, metavar="A",
                        help="largest CA-CA distance (Angstrom) at which a built residue can "
                             "match a deposited one; matching is one-to-one (default: 3.0)")
    parser.add_argument("--confidence", choices=("auto", "bfactor", "none"), default="auto",
                        help="read the built model's B-factors as per-residue confidence: auto "
                             "(when they vary within 0..100), bfactor (always), none")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the figures to this JSON file")
    parser.add_argument("--pairs", action="store_true",
                        help="include the matched residue pairs in the JSON file")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --json file")


def main(args: argparse.Namespace) -> int:
    from ..errors import ModelAngeloError, OutputError
    from ..evaluate import evaluate_files

    if not args.match_distance > 0.0:
        raise ModelAngeloError(f"--match-distance must be positive, got {args.match_distance}")
    out: Path | None = args.json
    if out is not None:
        if out.exists() and not args.overwrite:
            raise OutputError(f"{out} already exists; pass --overwrite to replace it")
        if out.exists() and not out.is_file():
            raise OutputError(f"{out} exists and is not a file")
        if not out.parent.is_dir():
            raise OutputError(f"folder {out.parent} for the JSON file does not exist")
    result = evaluate_files(args.predicted, args.deposited, match_distance=args.match_distance,
                            confidence=args.confidence)
    print(result.format_table())
    if out is not None:
        try:
            out.write_text(result.to_json(include_pairs=args.pairs) + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write {out}: {exc}") from exc
        print(f"\nfigures written to {out}")
    return 0
