"""Shipped network weights: one ``.pt`` file per network in ``src/weights/``.

A weight file holds the fp16 state dict, the config section the network was built
with (so the network is rebuilt from the file, never from code defaults) and the
training record (command, data, steps, validation figures). ``<name>.md`` next to it
is the human-readable record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def shipped_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.pt"


# Buffers computed from the config, not learned, stay fp32: fp16 rounding of the ESM
# rotary frequencies would shift the positional encoding of long sequences.
FP32_BUFFER_SUFFIXES = ("rot_emb.inv_freq",)


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any],
                 record: dict[str, Any]) -> None:
    """Write fp16 weights (integer buffers such as BatchNorm counters kept as they are)."""
    half = {k: (v.half() if v.is_floating_point() and not k.endswith(FP32_BUFFER_SUFFIXES)
                else v) for k, v in state_dict.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": 1, "state_dict": half, "config": config, "record": record}, path)


def load_weights(path: Path) -> dict[str, Any]:
    """Read a weight file; floating tensors come back as fp32."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    blob["state_dict"] = {k: (v.float() if v.is_floating_point() else v)
                          for k, v in blob["state_dict"].items()}
    return blob
