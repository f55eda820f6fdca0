"""``modelangelo train-gnn``: train (or resume) the graph network; export shipped weights.

Training state lives in ``--run-dir`` and every run resumes from it, so many short runs
add up (see ``training/train_gnn.py``). The network size (``--hidden``, ``--layers``, ``--esm-*``) is
fixed when a run folder is created; later runs take it from the checkpoint. A new run
folder may start from another run's weights (``--init-from``), e.g. a network with more
layers from a shallower one's: the extra layers start as the identity. ``--export``
writes the best validated checkpoint as fp16 weights with its training record, in the
form ``model/loading.load_gnn`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .training_args import add_export_args, add_schedule_args


def add_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run")
    g.add_argument("--run-dir", type=Path, default=Path("runs/gnn"),
                   help="folder for checkpoints and logs (resumed if it exists)")
    g.add_argument("--steps", type=int, default=1000, help="train until this total step count")
    g.add_argument("--minutes", type=float, default=None,
                   help="stop (with a checkpoint) after this many minutes of this run")
    g.add_argument("--threads", type=int, default=2,
                   help="CPU threads for torch (use 1 while another training job runs: two "
                        "threads on a busy 2-core machine are many times slower, not faster)")
    g.add_argument("--data-root", type=Path, default=None,
                   help="folder holding structures/ (default: $MODELANGELO_DATA or ../shared/data)")
    g.add_argument("--data-workers", type=int, default=0,
                   help="processes that make the next steps' examples (simulated maps, CNN "
                        "nodes) while a step trains; 0: in the training process. The "
                        "examples are the same either way (CNN-node positions to float "
                        "rounding). Keep 0 on 2 cores (1 worker measured 19%% slower); use "
                        "several where cores are spare, e.g. beside a GPU")
    g = parser.add_argument_group("network (new run folders only)")
    g.add_argument("--init-from", type=Path, default=None, metavar="WEIGHTS",
                   help="start from these weights: a run folder (its checkpoint's weight "
                        "average, else its weights), a checkpoint.pt or best.pt, or an "
                        "exported weight file. The network and data settings are theirs, "
                        "except --layers, which may add layers (they start as the identity)")
    g.add_argument("--hidden", type=int, default=None, help="node feature width (GNNConfig.hidden)")
    g.add_argument("--layers", type=int, default=None, help="GNN layers (GNNConfig.num_layers)")
    g.add_argument("--esm-layers", type=int, default=None,
                   help="layers of the sequence encoder trained with the GNN (GNNConfig.esm_layers)")
    g.add_argument("--esm-dim", type=int, default=None,
                   help="sequence encoder width (GNNConfig.seq_embed_dim)")
    g.add_argument("--esm-heads", type=int, default=None,
                   help="sequence encoder attention heads (must divide --esm-dim)")
    g = parser.add_argument_group("data")
    g.add_argument("--crop-nodes", type=int, default=None, help="residues per training crop")
    g.add_argument("--cnn-nodes-prob", type=float, default=None,
                   help="share of examples whose nodes are the CA CNN's own peaks "
                        "(needs CNN weights; default 0.2 when the shipped CNN weights exist, "
                        "else 0)")
    g.add_argument("--cnn-weights", type=Path, default=None,
                   help="CA CNN weight file for --cnn-nodes-prob (default: the shipped one)")
    g.add_argument("--cnn-like-prob", type=float, default=None,
                   help="share of examples with simulated misses and false positives")
    add_schedule_args(parser, val_maps=6, val_help="simulated validation examples")
    g = add_export_args(parser)
    g.add_argument("--score", type=Path, nargs="+", default=None, metavar="WEIGHTS",
                   help="score exported weight files on the validation set this run "
                        "validates on now (give the run's --val-maps and --cnn-nodes-prob), "
                        "print one JSON line each, and stop: how shipped weights are compared "
                        "with a run's best after the validation maps changed")


def _load_cnn(args, prob_requested: float | None):
    """``((model, cfg) or None, cnn_nodes_prob)``."""
    import torch

    from ..model.loading import load_cnn
    from ..model.weights import shipped_path

    path = args.cnn_weights if args.cnn_weights is not None else shipped_path("cnn")
    if prob_requested is not None and prob_requested <= 0:
        return None, 0.0
    if not Path(path).exists():
        if prob_requested is not None:
            from ..errors import ModelAngeloError

            raise ModelAngeloError(f"--cnn-nodes-prob needs CNN weights; {path} does not exist")
        print(f"train-gnn: no CNN weights at {path}: CNN-node examples disabled", file=sys.stderr)
        return None, 0.0
    model, cnn_cfg, _ = load_cnn(torch.device("cpu"), path)
    return (model, cnn_cfg), (0.2 if prob_requested is None else prob_requested)


def main(args: argparse.Namespace) -> int:
    import torch

    from ..errors import ModelAngeloError

    torch.set_num_threads(args.threads)
    if args.export is not None:
        return export(args)
    from ..pipeline import resolve_device
    from ..training.common import config_with_schedule, open_run
    from ..training.gnn_data import GNNDataConfig
    from ..training.train_gnn import GNNTrainer
    from ..training.validate_gnn import GNNValidator

    device = resolve_device(args.device)  # an unknown or missing device: error before any work
    cfg = config_with_schedule(args, device)
    resuming = (args.run_dir / "checkpoint.pt").exists()
    sizes = {"hidden": args.hidden, "num_layers": args.layers, "esm_layers": args.esm_layers,
             "seq_embed_dim": args.esm_dim, "esm_heads": args.esm_heads}
    for name, value in sizes.items():
        if value is not None:
            setattr(cfg.gnn, name, value)
    if cfg.gnn.seq_embed_dim % cfg.gnn.esm_heads:
        raise ModelAngeloError(f"--esm-dim {cfg.gnn.seq_embed_dim} is not a multiple of "
                               f"--esm-heads {cfg.gnn.esm_heads}")
    if args.data_workers < 0:
        raise ModelAngeloError(f"--data-workers must be 0 or more, not {args.data_workers}")
    if resuming and any(v is not None for v in sizes.values()):
        print("train-gnn: resuming: network size options ignored (the checkpoint's network "
              "is used)", file=sys.stderr)
    init_weights, dcfg = None, GNNDataConfig()
    if args.init_from is not None:
        if resuming:
            print("train-gnn: resuming: --init-from ignored (the checkpoint's weights are "
                  "used)", file=sys.stderr)
        else:
            init_weights, cfg.gnn, dcfg = _initial_weights(args.init_from, dcfg)
            if args.layers is not None:
                cfg.gnn.num_layers = args.layers
            if any(v is not None for k, v in sizes.items() if k != "num_layers"):
                raise ModelAngeloError("with --init-from only --layers may change the network "
                                       "size (the other sizes are the weights')")
    cnn, prob = _load_cnn(args, args.cnn_nodes_prob)
    overrides = {"cnn_nodes_prob": prob}
    if args.crop_nodes:
        overrides["crop_nodes"] = args.crop_nodes
    if args.cnn_like_prob is not None:
        overrides["cnn_like_prob"] = args.cnn_like_prob
    if args.score:
        return score(args, cfg, overrides, cnn)
    trainer = open_run(args, lambda: GNNTrainer(args.run_dir, cfg, dcfg,
                                                data_root=args.data_root, cnn=cnn,
                                                data_overrides=overrides,
                                                data_workers=args.data_workers,
                                                device=device, init_weights=init_weights))
    if init_weights is not None:
        _record_parent_commands(args.run_dir, args.init_from)
    print(f"train-gnn: {trainer.num_parameters / 1e6:.2f}M parameters, hidden "
          f"{trainer.cfg.gnn.hidden}, {trainer.cfg.gnn.num_layers} layers, data "
          f"{json.dumps(trainer.dcfg.__dict__)}")
    validator = GNNValidator(trainer.cfg, trainer.dcfg, n_maps=args.val_maps,
                             data_root=args.data_root, cnn=cnn)
    limit = args.minutes * 60 if args.minutes else None
    try:
        trainer.train(args.steps, validate=validator, time_limit_s=limit)
    finally:
        trainer.close()
    return 0


def _initial_weights(path: Path, dcfg):
    """``((description, fp32 state dict), GNNConfig, data config)`` of ``--init-from``:
    a run folder, a run's checkpoint.pt / best.pt, or an exported weight file."""
    import torch

    from ..config import GNNConfig, section_from_dict
    from ..errors import ModelAngeloError
    from ..training.gnn_data import GNNDataConfig

    path = Path(path)
    file = path / "checkpoint.pt" if path.is_dir() else path
    if not file.is_file():
        raise ModelAngeloError(f"--init-from: no weights at {file}")
    try:
        blob = torch.load(file, map_location="cpu", weights_only=False)
        if "state_dict" in blob:  # an exported weight file
            state, what = blob["state_dict"], "weights"
        elif "ema" in blob:
            state, what = blob["ema"], "weight average"
        else:
            state, what = blob["model"], "weights"
        gnn_cfg = section_from_dict(GNNConfig, blob["config"]["gnn"])
    except (KeyError, TypeError, RuntimeError, OSError, EOFError) as exc:
        raise ModelAngeloError(f"--init-from: {file} is not a GNN checkpoint or weight file "
                               f"({exc})") from exc
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if "data_config" in blob:
        dcfg = section_from_dict(GNNDataConfig, blob["data_config"])
    step = f" at step {blob['step']}" if "step" in blob else ""
    return (f"{file} ({what}{step})", state), gnn_cfg, dcfg


def _record_parent_commands(run_dir: Path, init_from: Path) -> None:
    """Copy the commands that trained ``--init-from``'s weights (its folder's
    ``commands.txt``) into the new run's, as comments: the training record of weights
    exported from the new run then tells their whole history."""
    folder = Path(init_from) if Path(init_from).is_dir() else Path(init_from).parent
    parent = folder / "commands.txt"
    if not parent.is_file():
        return
    with open(Path(run_dir) / "commands.txt", "a") as fh:
        fh.write(f"# the weights came from {folder}, trained by these commands:\n")
        fh.writelines(f"#   {line}\n" for line in parent.read_text().splitlines())


def score(args: argparse.Namespace, cfg, overrides: dict, cnn) -> int:
    """Validation metrics of each ``--score`` weight file on the run's validation set
    (the run's configs are read from its checkpoint; the run folder is left as it is)."""
    import dataclasses

    import torch

    from ..errors import ModelAngeloError
    from ..model.loading import load_gnn
    from ..training.gnn_data import GNNDataConfig
    from ..training.train_gnn import run_data_config
    from ..training.trainer import load_checkpoint, run_config
    from ..training.validate_gnn import GNNValidator

    ckpt = load_checkpoint(args.run_dir)
    cfg = run_config(ckpt, cfg)
    validator = GNNValidator(cfg, run_data_config(ckpt, GNNDataConfig(), overrides),
                             n_maps=args.val_maps, data_root=args.data_root, cnn=cnn)
    for path in args.score:
        loaded = load_gnn(torch.device("cpu"), path)
        if loaded is None:
            raise ModelAngeloError(f"no weight file at {path}")
        model, gnn_cfg = loaded
        metrics = validator(model, dataclasses.replace(cfg, gnn=gnn_cfg))
        print(json.dumps({"weights": str(path), **metrics}), flush=True)
    return 0


def export(args: argparse.Namespace) -> int:
    import torch

    from ..training.export import export_best

    def network(config: dict) -> str:
        g = config["gnn"]
        return (f"graph network (method 3.2): hidden {g['hidden']}, {g['num_layers']} layers, "
                f"{g['cube_size']}^3 density cubes, ESM2 {g['esm_layers']} layers x "
                f"{g['seq_embed_dim']}")

    best = torch.load(args.run_dir / "best.pt", map_location="cpu", weights_only=False) \
        if (args.run_dir / "best.pt").exists() else {}
    record = export_best(
        args.run_dir, args.export, network=network, note=args.note,
        data=("simulated maps (training/simulate.py) of crops of the 'train' split "
              "(training/splits/), examples from training/gnn_data.py"),
        extra={"data_config": best.get("data_config", {})})
    print(json.dumps(record, indent=2))
    return 0


