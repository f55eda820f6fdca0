"""Moving a GNN run's state to and from a lent GPU machine (see scripts/gpu/pack.sh).

    assemble.py --slim RUN_DIR START.pt   # weight average as the weights, fresh optimiser
    assemble.py --split CHECKPOINT DIR    # DIR/{model,ema,m1,m2,meta}.pt, each < 16 MiB
    assemble.py --join DIR CHECKPOINT     # the pieces back into one checkpoint.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def slim(run_dir: Path, out: Path) -> None:
    from chimerax.modelangelo.config import Config
    from chimerax.modelangelo.model.gnn import GNN
    from chimerax.modelangelo.training.trainer import run_config

    ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    weights = ckpt.pop("ema", None) or ckpt["model"]
    cfg = run_config(ckpt, Config())
    model = GNN(cfg.gnn)
    model.load_state_dict(weights)
    ckpt["model"] = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
    ckpt["opt"] = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                                    weight_decay=cfg.train.weight_decay).state_dict()
    torch.save(ckpt, out)
    print(f"{out}: step {ckpt['step']}, best score {ckpt['best_score']}")


RETURN_LIMIT_MB = 64  # the device tool returns at most 64 MiB (67 MB) per call, logs included


def split(checkpoint: Path, out_dir: Path) -> None:
    """Where weights, weight average and both AdamW moments would exceed
    ``RETURN_LIMIT_MB`` (networks over ~4.0M parameters), the moments are dropped: the
    joined checkpoint then resumes with a fresh optimiser state (noted in ``meta.pt``)."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    weights = ckpt.pop("model")
    mb = sum(v.numel() * 4 for v in weights.values()) / 1e6
    torch.save(weights, out_dir / "model.pt")
    if "ema" in ckpt:
        torch.save(ckpt.pop("ema"), out_dir / "ema.pt")
    state = ckpt["opt"]["state"]
    if 4 * mb > RETURN_LIMIT_MB:
        ckpt["opt"]["state"] = {}
        ckpt["optimiser_reset"] = f"AdamW moments not returned ({4 * mb:.0f} MB in all)"
        print(ckpt["optimiser_reset"])
    else:
        for key, name in (("exp_avg", "m1"), ("exp_avg_sq", "m2")):
            torch.save({i: s.pop(key) for i, s in state.items() if key in s},
                       out_dir / f"{name}.pt")
    torch.save(ckpt, out_dir / "meta.pt")
    print(f"step {ckpt['step']}, best score {ckpt['best_score']}")


def join(pieces: Path, out: Path) -> None:
    ckpt = torch.load(pieces / "meta.pt", map_location="cpu", weights_only=False)
    ckpt["model"] = torch.load(pieces / "model.pt", map_location="cpu")
    if (pieces / "ema.pt").exists():
        ckpt["ema"] = torch.load(pieces / "ema.pt", map_location="cpu")
    if ckpt["opt"]["state"]:
        m1 = torch.load(pieces / "m1.pt", map_location="cpu")
        m2 = torch.load(pieces / "m2.pt", map_location="cpu")
        for i, s in ckpt["opt"]["state"].items():
            s["exp_avg"], s["exp_avg_sq"] = m1[i], m2[i]
    torch.save(ckpt, out)
    print(f"{out}: step {ckpt['step']}, best score {ckpt['best_score']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--slim", action="store_true")
    g.add_argument("--split", action="store_true")
    g.add_argument("--join", action="store_true")
    p.add_argument("source", type=Path)
    p.add_argument("dest", type=Path)
    a = p.parse_args()
    if a.slim:
        slim(a.source, a.dest)
    elif a.split:
        split(a.source, a.dest)
    else:
        join(a.source, a.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
