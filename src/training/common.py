"""Pieces both training loops and both ``train-*`` commands share (the loop itself:
:mod:`.trainer`)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from ..protein import Protein
from .simulate import load_training_protein


def save_atomic(obj, path: Path) -> None:
    """torch.save through a temporary file, so a killed run never leaves half a checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class ProteinCache:
    """Training structures by name, parsed once (bounded: cleared past ``max_size``)."""

    def __init__(self, data_root=None, max_size: int = 200):
        self.data_root = data_root
        self.max_size = max_size
        self._cache: dict[str, Protein] = {}

    def __call__(self, name: str) -> Protein:
        if name not in self._cache:
            if len(self._cache) > self.max_size:
                self._cache.clear()
            self._cache[name] = load_training_protein(name, self.data_root)
        return self._cache[name]


@functools.cache
def native_bf16(device: torch.device | None = None) -> bool:
    """Whether bf16 autocast is fast here: a CUDA GPU that supports it, or a CPU with
    native bf16 instructions (AVX512-BF16 or AMX). Without them (e.g. an AVX2-only CPU)
    bf16 is emulated: a CNN training step measured 4.2 s in fp32 and over 60 s in bf16."""
    device = device or torch.device("cpu")
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh
                          if line.startswith("flags")), [])
    except OSError:  # not Linux: trust torch's own report
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return "avx512_bf16" in flags or "amx_bf16" in flags


def config_with_schedule(args, device: torch.device):
    """Default :class:`Config` with the training schedule options of a ``train-*`` command
    (``args.validate_every``, ``checkpoint_every``, ``lr``, ``ema_decay``, ``bf16``:
    ``auto`` = where :func:`native_bf16` on ``device``, the device the run trains on,
    ``on``, ``off``)."""
    from ..config import Config

    cfg = Config()
    cfg.train.bf16 = native_bf16(device) if args.bf16 == "auto" else args.bf16 == "on"
    if args.validate_every:
        cfg.train.validate_every = args.validate_every
    if args.checkpoint_every:
        cfg.train.checkpoint_every = args.checkpoint_every
    if args.lr:
        cfg.train.lr = args.lr
    if args.ema_decay is not None:
        if not 0.0 <= args.ema_decay < 1.0:
            from ..errors import ModelAngeloError

            raise ModelAngeloError(f"--ema-decay must be in [0, 1), not {args.ema_decay}")
        cfg.train.ema_decay = args.ema_decay
    return cfg


def record_command(run_dir: Path, step: int, argv: list[str]) -> None:
    """Append the command that (re)started a run to ``run_dir/commands.txt``."""
    import time

    with open(Path(run_dir) / "commands.txt", "a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} step {step}: "
                 f"modelangelo {' '.join(argv)}\n")


def open_run(args, make_trainer):
    """The trainer of a ``train-*`` command, ``make_trainer()`` (missing training data is
    an error for the user), with the command line recorded in ``args.run_dir``."""
    import sys

    from ..errors import ModelAngeloError

    try:
        trainer = make_trainer()
    except FileNotFoundError as exc:
        raise ModelAngeloError(f"training data not found: {exc}") from exc
    record_command(args.run_dir, trainer.step, sys.argv[1:])
    return trainer
