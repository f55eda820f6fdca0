"""``modelangelo`` command line: one registry of subcommands.

Each subcommand is a module in this package exposing ``add_args(parser)`` and
``main(args) -> int``; it is registered here and nowhere else. Errors the user can
fix (:class:`~chimerax.modelangelo.errors.ModelAngeloError`) are printed as one
clear message with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Modules are imported only when their subcommand runs
# (``--help`` of the top level stays fast and does not import torch).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "build": ("build", "build atomic models into a cryo-EM map"),
    "search": ("search", "identify the proteins of a no-sequence build in a FASTA database"),
    "evaluate": ("evaluate", "compare a built model with a deposited model"),
    "simulate": ("simulate", "simulate a cryo-EM map from an atomic model"),
    "train-cnn": ("train_cnn", "train the C-alpha detection CNN"),
    "train-gnn": ("train_gnn", "train the graph neural network"),
}


def _module(name: str):
    return importlib.import_module(f"{__name__}.{SUBCOMMANDS[name][0]}")


def make_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelangelo",
        description="Automated atomic model building of proteins in cryo-EM maps.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Only the chosen subcommand's module is imported (others get a stub parser).
    chosen = next((a for a in (argv or []) if a in SUBCOMMANDS), None)
    for name, (_, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _module(name).add_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import ModelAngeloError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser(argv).parse_args(argv)
    try:
        return int(_module(args.command).main(args) or 0)
    except ModelAngeloError as exc:
        print(f"modelangelo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"modelangelo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
