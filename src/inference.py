"""Running the C-alpha CNN on whole maps, and turning its output into graph nodes.

Maps of any size are processed as overlapping cubic tiles (``CNNConfig.crop_size``,
stride ``tile_stride``), ``tile_batch`` tiles per forward pass, so network memory is
bounded by the batch, not the map. Overlaps are blended with a weight that falls
towards tile edges (where a convolution sees padding). Peaks are picked by
non-maximum suppression at CA-CA scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from .config import CNNConfig
from .mapio import MapGrid
from .model.cnn import CAUNet


@dataclass
class CAPrediction:
    """Dense CNN output on the working grid."""

    prob: np.ndarray  # [nz, ny, nx] CA probability per voxel
    offset: np.ndarray  # [3, nz, ny, nx] sub-voxel CA offset (x, y, z), voxels
    grid: MapGrid  # the (normalised) working grid the prediction is on


def _tile_starts(n: int, crop: int, stride: int) -> list[int]:
    if n <= crop:
        return [0]
    starts = list(range(0, n - crop, stride))
    starts.append(n - crop)
    return starts


def _blend_weight(crop: int, margin: int) -> np.ndarray:
    """Separable weight [crop, crop, crop]: ramps up over ``margin`` voxels at each edge."""
    ramp = np.ones(crop, np.float32)
    if margin > 0:
        r = (np.arange(margin, dtype=np.float32) + 0.5) / margin
        ramp[:margin] = r
        ramp[-margin:] = r[::-1]
    return ramp[:, None, None] * ramp[None, :, None] * ramp[None, None, :]


@torch.no_grad()
def predict_ca(
    model: CAUNet,
    grid: MapGrid,
    cfg: CNNConfig,
    *,
    device: torch.device,
    bf16: bool = False,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CAPrediction:
    """Dense CA probabilities for a normalised map already at the working voxel size."""
    model.eval()
    crop = cfg.crop_size
    data = grid.data.astype(np.float32)
    shape = np.array(data.shape)
    padded_shape = np.maximum(shape, crop)
    if np.any(padded_shape != shape):
        pad = [(0, int(p - s)) for p, s in zip(padded_shape, shape)]
        data = np.pad(data, pad, mode="constant")
    starts = [
        (z, y, x)
        for z in _tile_starts(data.shape[0], crop, cfg.tile_stride)
        for y in _tile_starts(data.shape[1], crop, cfg.tile_stride)
        for x in _tile_starts(data.shape[2], crop, cfg.tile_stride)
    ]
    weight = _blend_weight(crop, max(1, (crop - cfg.tile_stride) // 2))  # [c, c, c]
    acc = np.zeros((4,) + data.shape, np.float32)  # logit + 3 offsets, weighted sums
    wsum = np.zeros(data.shape, np.float32)
    memory_format = torch.channels_last_3d
    for b in range(0, len(starts), cfg.tile_batch):
        if should_stop is not None and should_stop():
            from .errors import JobStopped

            raise JobStopped("stopped during C-alpha detection")
        batch_starts = starts[b : b + cfg.tile_batch]
        tiles = np.stack(
            [data[z : z + crop, y : y + crop, x : x + crop] for z, y, x in batch_starts]
        )  # [B, c, c, c]
        inp = torch.from_numpy(tiles[:, None]).to(device).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(inp)  # [B, 4, c, c, c]
        out = out.float().cpu().numpy()
        for (z, y, x), o in zip(batch_starts, out):
            acc[:, z : z + crop, y : y + crop, x : x + crop] += o * weight
            wsum[z : z + crop, y : y + crop, x : x + crop] += weight
        if progress is not None:
            progress(min(1.0, (b + len(batch_starts)) / len(starts)))
    acc /= np.maximum(wsum, 1e-6)
    nz, ny, nx = shape
    prob = 1.0 / (1.0 + np.exp(-acc[0, :nz, :ny, :nx]))
    return CAPrediction(prob=prob.astype(np.float32), offset=acc[1:, :nz, :ny, :nx].copy(), grid=grid)


def pick_peaks(pred: CAPrediction, cfg: CNNConfig) -> tuple[np.ndarray, np.ndarray]:
    """Graph nodes from the dense prediction: ``(xyz [M, 3], prob [M])``.

    Every voxel with a CA probability of at least ``cfg.peak_threshold`` proposes a point
    at its centre + predicted offset; the proposals are greedily suppressed (highest
    probability first) so no two points lie closer than ``cfg.peak_min_distance``.

    There is deliberately no voxel-level local-maximum filter before the suppression: at
    1.5 A voxels two CAs 3.8 A apart often fall in touching voxels, and a 3x3x3 maximum
    filter dropped one of them (on the three EMDB test maps recall within 3 A went from
    80/83/74 % with the filter to 99/99/93 % without it, precision 92/79/83 -> 89/81/84 %
    at threshold 0.1).
    """
    prob = pred.prob
    kji = np.argwhere(prob >= cfg.peak_threshold)  # [M, 3] (k, j, i)
    if len(kji) == 0:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.float32)
    p = prob[kji[:, 0], kji[:, 1], kji[:, 2]]
    off = pred.offset[:, kji[:, 0], kji[:, 1], kji[:, 2]].T  # [M, 3] (x, y, z)
    off = np.clip(off, -1.0, 1.0)
    ijk = kji[:, ::-1].astype(np.float64) + off
    xyz = pred.grid.ijk_to_xyz(ijk)
    order = np.argsort(-p, kind="stable")
    xyz, p = xyz[order], p[order]
    tree = cKDTree(xyz)
    keep = np.ones(len(xyz), bool)
    for idx in range(len(xyz)):
        if not keep[idx]:
            continue
        for other in tree.query_ball_point(xyz[idx], cfg.peak_min_distance):
            if other > idx:
                keep[other] = False
    return xyz[keep].astype(np.float32), p[keep].astype(np.float32)
