"""CNN trainer: crops and targets, loss, checkpoint/resume, validation, export."""

import argparse
from pathlib import Path

import numpy as np
import torch

from chimerax.modelangelo.cli import train_cnn as cli_train_cnn
from chimerax.modelangelo.config import CNNConfig, Config
from chimerax.modelangelo.model.loading import load_cnn
from chimerax.modelangelo.training.simulate import load_training_protein
from chimerax.modelangelo.training.train_cnn import Trainer, cnn_loss, crop_example, make_batch

torch.set_num_threads(1)
TRAIN = ["db55_1A2K_b", "db55_1ACB_b"]


def tiny_config() -> Config:
    cfg = Config()
    cfg.cnn = CNNConfig(widths=(4, 8, 8), crop_size=32, tile_stride=24)
    cfg.train.batch_size = 2
    cfg.train.checkpoint_every = 2
    cfg.train.validate_every = 3
    return cfg


def test_crop_targets_mark_ca_voxels():
    cfg = tiny_config()
    protein = load_training_protein(TRAIN[0])
    rng = np.random.default_rng(0)
    density, target, offset = crop_example(protein, rng, cfg)
    c = cfg.cnn.crop_size
    assert density.shape == target.shape == (c, c, c) and offset.shape == (3, c, c, c)
    assert target.sum() > 10  # crops centred on residues hold CA atoms
    pos = target > 0
    # CA voxels hold density above the crop's average; offsets stay within half a voxel
    assert density[pos].mean() > density.mean()
    assert np.abs(offset[:, pos]).max() <= 0.5 + 1e-6
    assert np.all(offset[:, ~pos] == 0)


def test_loss_prefers_the_truth():
    cfg = tiny_config()
    batch = make_batch([load_training_protein(n) for n in TRAIN], np.random.default_rng(1), cfg)
    perfect = torch.cat([(batch.target * 20 - 10)[:, None], batch.offset], dim=1)
    wrong = torch.cat([(10 - batch.target * 20)[:, None], -batch.offset], dim=1)
    assert cnn_loss(perfect, batch)[0] < 0.01 < cnn_loss(wrong, batch)[0]


def test_train_resume_validate_export(tmp_path, monkeypatch):
    run = tmp_path / "run"
    scores = []

    def validate(model, cfg):
        scores.append(1)
        return {"score": 0.5, "recall_2A": 0.4, "precision_3A": 0.6, "threshold": 0.3}

    a = Trainer(run, tiny_config(), log=lambda s: None, train_names=TRAIN)
    a.train(3, validate=validate)
    assert a.step == 3 and scores == [1]
    # the on-disk format live runs resume from
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert set(ckpt) == {"model", "opt", "step", "best_score", "rng", "config", "elapsed"}
    assert ckpt["step"] == 3 and ckpt["best_score"] == 0.5
    best = torch.load(run / "best.pt", weights_only=False)
    assert set(best) == {"model", "config", "step", "validation"}
    b = Trainer(run, tiny_config(), log=lambda s: None, train_names=TRAIN)
    assert b.step == 3 and b.rng.bit_generator.state == a.rng.bit_generator.state
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    b.train(4)
    assert b.step == 4

    out = tmp_path / "cnn.pt"
    args = argparse.Namespace(run_dir=run, export=out, note="test", threads=1)
    assert cli_train_cnn.export(args) == 0
    model, cnn_cfg, record = load_cnn(torch.device("cpu"), out)
    assert cnn_cfg.widths == (4, 8, 8)
    assert cnn_cfg.peak_threshold == 0.3  # tuned on validation, stored with the weights
    assert record["steps"] == 3 and record["validation"]["score"] == 0.5
    assert "Training record" in Path(out.with_suffix(".md")).read_text()

    # --retune: new peak settings from the validation maps, same weights, record kept
    args = argparse.Namespace(retune=out, val_maps=2, data_root=None, note="retuned", threads=1)
    assert cli_train_cnn.retune(args) == 0
    model2, cnn_cfg2, record2 = load_cnn(torch.device("cpu"), out)
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k])
    assert record2["steps"] == 3
    assert record2["retuned"][0]["before"] == {"peak_threshold": 0.3,
                                               "peak_min_distance": cnn_cfg.peak_min_distance}
    assert cnn_cfg2.peak_threshold == record2["validation"]["threshold"]
    assert cnn_cfg2.peak_min_distance == record2["validation"]["min_distance"]
    assert "re-tuned" in Path(out.with_suffix(".md")).read_text()


def test_validation_runs_in_fp32_whatever_training_uses(tmp_path):
    """bf16 autocast trains only where the CPU has it natively; validation (and the peak
    settings tuned from it) must not change with the machine."""
    import dataclasses

    from chimerax.modelangelo.training.validate_cnn import CNNValidator

    t = Trainer(tmp_path, tiny_config(), log=lambda s: None, train_names=TRAIN)
    val = CNNValidator(t.cfg, n_maps=1)
    bf16_cfg = dataclasses.replace(t.cfg, train=dataclasses.replace(t.cfg.train, bf16=True))
    assert val(t.model, bf16_cfg) == val(t.model, t.cfg)
