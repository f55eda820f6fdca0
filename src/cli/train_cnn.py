"""``modelangelo train-cnn``: train (or resume) the C-alpha CNN; export shipped weights.

Training state lives in ``--run-dir`` and every run resumes from it, so many short
runs add up (on 2 CPU cores: ~1.6 s per step of four 64^3 crops). ``--export`` writes
the best validated checkpoint as fp16 weights with its training record.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .training_args import add_export_args, add_schedule_args


def add_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run")
    g.add_argument("--run-dir", type=Path, default=Path("runs/cnn"),
                   help="folder for checkpoints and logs (resumed if it exists)")
    g.add_argument("--steps", type=int, default=1000, help="train until this total step count")
    g.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    g.add_argument("--data-root", type=Path, default=None,
                   help="folder holding structures/ (default: $MODELANGELO_DATA or ../shared/data)")
    add_schedule_args(parser, val_maps=8, val_help="simulated validation maps")
    g = add_export_args(parser)
    g.add_argument("--retune", type=Path, default=None, metavar="WEIGHTS",
                   help="re-tune the peak settings (threshold, suppression radius) of an "
                        "exported weight file on the validation maps, rewrite its config and "
                        "record, and stop (after a change to peak picking; weights unchanged)")


def main(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    if args.export is not None:
        return export(args)
    if args.retune is not None:
        return retune(args)
    from ..pipeline import resolve_device
    from ..training.common import config_with_schedule, open_run
    from ..training.train_cnn import Trainer
    from ..training.validate_cnn import CNNValidator

    device = resolve_device(args.device)
    cfg = config_with_schedule(args, device)
    trainer = open_run(args, lambda: Trainer(args.run_dir, cfg, data_root=args.data_root,
                                             device=device))
    validator = CNNValidator(trainer.cfg, n_maps=args.val_maps, data_root=args.data_root)
    trainer.train(args.steps, validate=validator)
    return 0


def export(args: argparse.Namespace) -> int:
    from ..training.export import export_best

    def network(config: dict) -> str:
        c = config["cnn"]
        return (f"C-alpha detection CNN (residual 3D U-Net, widths {c['widths']}, "
                f"{c['crop_size']}^3 crops)")

    def tuned_threshold(config: dict, validation: dict) -> None:
        # the peak settings are tuned on the validation maps (training/validate_cnn.py)
        config["cnn"]["peak_threshold"] = validation["threshold"]
        if "min_distance" in validation:
            config["cnn"]["peak_min_distance"] = validation["min_distance"]

    record = export_best(
        args.run_dir, args.export, network=network, note=args.note,
        adjust_config=tuned_threshold,
        data="simulated maps (training/simulate.py) of the 'train' split (training/splits/)")
    print(json.dumps(record, indent=2))
    return 0


def retune(args: argparse.Namespace) -> int:
    """Peak settings of an exported CNN re-tuned on today's validation maps."""
    import time

    from ..config import CNNConfig, Config, section_from_dict
    from ..model.cnn import CAUNet
    from ..model.weights import load_weights, save_weights
    from ..training.export import record_markdown
    from ..training.validate_cnn import CNNValidator

    blob = load_weights(args.retune)
    cfg = Config()
    cfg.cnn = section_from_dict(CNNConfig, blob["config"]["cnn"])
    model = CAUNet(cfg.cnn)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    scores = CNNValidator(cfg, n_maps=args.val_maps, data_root=args.data_root)(model, cfg)
    config, record = blob["config"], blob["record"]
    before = {k: config["cnn"][k] for k in ("peak_threshold", "peak_min_distance")}
    config["cnn"]["peak_threshold"] = scores["threshold"]
    config["cnn"]["peak_min_distance"] = scores["min_distance"]
    record["validation"] = {**scores, "step": record["validation"].get("step")}
    record.setdefault("retuned", []).append(
        {"date": time.strftime("%Y-%m-%d %H:%M"), "before": before, "note": args.note})
    if args.note:
        record["note"] = (record.get("note", "") + "; " + args.note).strip("; ")
    save_weights(args.retune, blob["state_dict"], config, record)
    args.retune.with_suffix(".md").write_text(record_markdown(args.retune.stem, record))
    print(json.dumps({"before": before, "validation": scores}, indent=2))
    return 0
