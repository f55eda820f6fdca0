"""Argument groups shared by ``train-cnn`` and ``train-gnn`` (one definition of each)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_schedule_args(parser: argparse.ArgumentParser, *, val_maps: int, val_help: str) -> None:
    g = parser.add_argument_group("schedule")
    g.add_argument("--validate-every", type=int, default=None, help="steps between validations")
    g.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
    g.add_argument("--val-maps", type=int, default=val_maps, help=val_help)
    g.add_argument("--lr", type=float, default=None, help="learning rate")
    g.add_argument("--ema-decay", type=float, default=None,
                   help="keep an exponential moving average of the weights with this decay "
                        "per step (e.g. 0.999, about the last 1,000 steps; 0 = off, the "
                        "default): validation scores it, and best.pt and --export hold it")
    g.add_argument("--device", default="auto",
                   help="where the network trains: auto (a CUDA GPU if torch sees one, else "
                        "the CPU), cpu or cuda. Checkpoints hold CPU tensors, so a run can "
                        "move between machines")
    g.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                   help="bf16 autocast (auto: only where the CPU or GPU has native bf16; "
                        "emulated bf16 is many times slower than fp32)")


def add_export_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    g = parser.add_argument_group("export")
    g.add_argument("--export", type=Path, default=None,
                   help="write the best checkpoint as fp16 weights to this path and stop")
    g.add_argument("--note", default="", help="free text stored in the training record")
    return g
