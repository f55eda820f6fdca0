"""Pieces both training loops share."""

from __future__ import annotations

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


def config_with_schedule(*, validate_every: int | None, checkpoint_every: int | None,
                         lr: float | None):
    """Default :class:`Config` with the training schedule options of a ``train-*`` command."""
    from ..config import Config

    cfg = Config()
    if validate_every:
        cfg.train.validate_every = validate_every
    if checkpoint_every:
        cfg.train.checkpoint_every = checkpoint_every
    if lr:
        cfg.train.lr = lr
    return cfg


def record_command(run_dir: Path, step: int, argv: list[str]) -> None:
    """Append the command that (re)started a run to ``run_dir/commands.txt``."""
    import time

    with open(Path(run_dir) / "commands.txt", "a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} step {step}: "
                 f"modelangelo {' '.join(argv)}\n")
