"""Building the shipped networks from their weight files (config stored in the file)."""

from __future__ import annotations

from pathlib import Path

from ..config import CNNConfig, GNNConfig, section_from_dict
from ..errors import ModelAngeloError
from .weights import load_weights, shipped_path


def load_cnn(device, path: Path | None = None):
    """``(CAUNet in eval mode on device, CNNConfig, record)`` from the shipped weights."""
    from .cnn import CAUNet

    path = Path(path) if path is not None else shipped_path("cnn")
    if not path.exists():
        raise ModelAngeloError(
            f"the C-alpha CNN weights are missing ({path}); reinstall the bundle or train "
            "them with 'modelangelo train-cnn'")
    blob = load_weights(path)
    cfg = section_from_dict(CNNConfig, blob["config"]["cnn"])
    model = CAUNet(cfg)
    model.load_state_dict(blob["state_dict"])
    model.eval().to(device)
    return model, cfg, blob.get("record", {})


def load_gnn(device, path: Path | None = None):
    """``(GNN in eval mode, GNNConfig)``, or None when no trained weights are shipped."""
    path = Path(path) if path is not None else shipped_path("gnn")
    if not path.exists():
        return None
    from .gnn import GNN

    blob = load_weights(path)
    cfg = section_from_dict(GNNConfig, blob["config"]["gnn"])
    model = GNN(cfg)
    model.load_state_dict(blob["state_dict"])
    model.eval().to(device)
    return model, cfg
