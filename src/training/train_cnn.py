"""Training the C-alpha CNN on simulated maps, resumable, for hours on 2 CPU cores.

Each step draws structures from the training split, simulates a map of the residues
near a random centre (``training.simulate``), normalises it exactly as inference does
(``mapio.normalise``) and trains on ``crop_size``^3 crops: BCE on "a CA is in this
voxel" plus an L1 loss on the CA's sub-voxel offset where a CA is.

State lives in a run folder, kept by :class:`.trainer.BaseTrainer` (its module docstring
lists the contents): ``checkpoint.pt`` (latest, written atomically every
``checkpoint_every`` steps and at the end: model, optimiser, step, best score, numpy RNG
state, config, elapsed seconds), ``best.pt`` (best validation score so far, see
:mod:`.validate_cnn`), ``log.jsonl`` (every 10 steps: the mean loss and the last step's
``bce`` and ``offset`` terms; each validation). Re-running the same command resumes from
``checkpoint.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..mapio import normalise
from ..model.cnn import CAUNet
from ..protein import Protein
from .simulate import simulate_map
from .trainer import BaseTrainer

POS_WEIGHT = 5.0  # BCE weight of the rare positive voxels
OFFSET_LOSS_WEIGHT = 1.0
SPHERE_RADIUS = 48.0  # residues within this distance (A) of the crop centre are simulated


@dataclass
class CropBatch:
    density: torch.Tensor  # [B, 1, c, c, c]
    target: torch.Tensor  # [B, c, c, c] float 0/1
    offset: torch.Tensor  # [B, 3, c, c, c] (x, y, z) voxels


def local_protein(protein: Protein, centre: np.ndarray, radius: float) -> Protein:
    """Residues whose CA lies within ``radius`` of ``centre``."""
    return protein.select(np.linalg.norm(protein.ca - centre, axis=1) <= radius)


def crop_example(
    protein: Protein, rng: np.random.Generator, cfg: Config, *, resolution: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training crop ``(density [c,c,c], target [c,c,c], offset [3,c,c,c])``."""
    c = cfg.cnn.crop_size
    centre_res = int(rng.integers(len(protein)))
    sub = local_protein(protein, protein.ca[centre_res], SPHERE_RADIUS)
    sim = simulate_map(sub, rng, cfg.simulation, voxel_size=cfg.map.voxel_size, resolution=resolution)
    grid = normalise(sim.grid)
    data = grid.data
    ca_ijk = grid.xyz_to_ijk(sim.protein.ca)  # [N, 3] (i, j, k) float
    # Crop centre: mostly on a residue, sometimes anywhere (solvent, box edges).
    if rng.random() < 0.8 and len(sim.protein):
        centre = ca_ijk[rng.integers(len(ca_ijk))][::-1]  # (k, j, i)
    else:
        centre = rng.uniform(0, np.array(data.shape) - 1)
    start = np.round(centre - c / 2).astype(int) + rng.integers(-8, 9, size=3)
    crop = np.zeros((c, c, c), np.float32)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + c, data.shape)
    if np.all(src_hi > src_lo):
        dst_lo = src_lo - start
        dst_hi = dst_lo + (src_hi - src_lo)
        crop[dst_lo[0] : dst_hi[0], dst_lo[1] : dst_hi[1], dst_lo[2] : dst_hi[2]] = data[
            src_lo[0] : src_hi[0], src_lo[1] : src_hi[1], src_lo[2] : src_hi[2]
        ]
    target = np.zeros((c, c, c), np.float32)
    offset = np.zeros((3, c, c, c), np.float32)
    vox = np.round(ca_ijk).astype(int)  # (i, j, k)
    local = vox[:, ::-1] - start  # (k, j, i) in the crop
    inside = np.all((local >= 0) & (local < c), axis=1)
    lk, lj, li = local[inside].T
    target[lk, lj, li] = 1.0
    offset[:, lk, lj, li] = (ca_ijk[inside] - vox[inside]).T
    # Intensity augmentation: real maps differ in contrast and sharpening.
    crop = crop * rng.uniform(0.7, 1.4) + rng.normal(0, 0.05)
    return crop, target, offset


def make_batch(proteins: list[Protein], rng: np.random.Generator, cfg: Config) -> CropBatch:
    crops = [crop_example(p, rng, cfg) for p in proteins]
    d, t, o = (np.stack(x) for x in zip(*crops))
    return CropBatch(
        density=torch.from_numpy(d[:, None]).contiguous(memory_format=torch.channels_last_3d),
        target=torch.from_numpy(t),
        offset=torch.from_numpy(o),
    )


def cnn_loss(out: torch.Tensor, batch: CropBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """``out`` [B, 4, c, c, c] -> total loss and its terms."""
    logit = out[:, 0].float()  # [B, c, c, c]
    bce = F.binary_cross_entropy_with_logits(
        logit, batch.target, pos_weight=torch.tensor(POS_WEIGHT, device=logit.device)
    )
    pos = batch.target > 0.5  # [B, c, c, c]
    if pos.any():
        pred_off = out[:, 1:].float().permute(0, 2, 3, 4, 1)[pos]  # [P, 3]
        true_off = batch.offset.permute(0, 2, 3, 4, 1)[pos]  # [P, 3]
        off = F.smooth_l1_loss(pred_off, true_off, beta=0.25)
    else:
        off = logit.new_zeros(())
    total = bce + OFFSET_LOSS_WEIGHT * off
    return total, {"bce": float(bce.detach()), "offset": float(off.detach())}


class Trainer(BaseTrainer):
    """Resumable training of :class:`..model.cnn.CAUNet` (see the module docstring)."""

    initial_best_score = -1.0

    def _build_model(self) -> CAUNet:
        return CAUNet(self.cfg.cnn).to(memory_format=torch.channels_last_3d)

    def train_step(self) -> dict:
        """One optimiser step on a batch of crops: ``{"loss", "bce", "offset"}``."""
        tc = self.cfg.train
        names = [self.train_names[i] for i in self.rng.integers(len(self.train_names), size=tc.batch_size)]
        batch = make_batch([self.protein(n) for n in names], self.rng, self.cfg)
        batch = CropBatch(*(x.to(self.device) for x in (batch.density, batch.target,
                                                         batch.offset)))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=tc.bf16):
            out = self.model(batch.density)
        loss, terms = cnn_loss(out, batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return {"loss": float(loss.detach()), **terms}

    def _log_line(self, window: list[dict]) -> dict:
        """The loss averaged over ``window``, its terms those of the last step."""
        last = {k: v for k, v in window[-1].items() if k != "loss"}
        return {"step": self.step, "loss": float(np.mean([w["loss"] for w in window])), **last,
                "elapsed_s": round(self.elapsed, 1)}
