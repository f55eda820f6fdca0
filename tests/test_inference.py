"""Tiled CNN inference and peak picking."""

import numpy as np
import torch
from torch import nn

from chimerax.modelangelo.config import CNNConfig
from chimerax.modelangelo.inference import CAPrediction, pick_peaks, predict_ca
from chimerax.modelangelo.mapio import MapGrid


class EchoNet(nn.Module):
    """Stand-in network whose CA logit is its input and whose offsets are a fixed ramp."""

    def forward(self, x):  # [B, 1, D, H, W]
        return torch.cat([x, torch.zeros_like(x).expand(-1, 3, -1, -1, -1)], dim=1)


def make_grid(data, origin=(10.0, -5.0, 3.0)):
    return MapGrid(data=data.astype(np.float32), voxel_size=np.array([1.5, 1.5, 1.5]),
                   origin=np.array(origin))


def test_tiles_cover_map_exactly_once_in_effect():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(37, 70, 53)).astype(np.float32)  # not multiples of the stride
    cfg = CNNConfig(crop_size=32, tile_stride=24, tile_batch=3)
    pred = predict_ca(EchoNet(), make_grid(data), cfg, device=torch.device("cpu"))
    assert pred.prob.shape == data.shape
    np.testing.assert_allclose(pred.prob, 1 / (1 + np.exp(-data)), atol=1e-5)


def test_map_smaller_than_tile():
    data = np.random.default_rng(1).normal(size=(10, 12, 9)).astype(np.float32)
    cfg = CNNConfig(crop_size=16, tile_stride=12)
    pred = predict_ca(EchoNet(), make_grid(data), cfg, device=torch.device("cpu"))
    np.testing.assert_allclose(pred.prob, 1 / (1 + np.exp(-data)), atol=1e-5)


def _blob_prediction(points_xyz, shape=(40, 40, 40), sigma=0.8, offsets=False):
    """Gaussian CA-probability blobs at ``points_xyz``; with ``offsets``, every voxel's
    offset points at its nearest point (clipped to one voxel, as the network's are)."""
    grid = make_grid(np.zeros(shape))
    kk, jj, ii = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    prob = np.zeros(shape, np.float32)
    offset = np.zeros((3,) + shape, np.float32)
    best = np.full(shape, np.inf)
    for p in grid.xyz_to_ijk(np.asarray(points_xyz, float).reshape(-1, 3)):
        d2 = (ii - p[0]) ** 2 + (jj - p[1]) ** 2 + (kk - p[2]) ** 2
        prob = np.maximum(prob, np.exp(-d2 / (2 * sigma**2)))
        if offsets:
            nearer = d2 < best
            best = np.where(nearer, d2, best)
            for axis, grid_index in enumerate((ii, jj, kk)):
                offset[axis] = np.where(nearer, np.clip(p[axis] - grid_index, -1, 1), offset[axis])
    return CAPrediction(prob=prob, offset=offset, grid=grid)


def test_peaks_found_at_blobs_and_duplicates_suppressed():
    rng = np.random.default_rng(2)
    # a helix-like chain of points 3.8 A apart inside the box
    t = np.arange(12)
    pts = np.stack([30 + 2.3 * np.cos(t * 1.75), 0 + 2.3 * np.sin(t * 1.75), 15 + 1.5 * t], 1)
    pts += rng.normal(0, 0.05, pts.shape)
    pred = _blob_prediction(pts)
    xyz, prob = pick_peaks(pred, CNNConfig(peak_threshold=0.3, peak_min_distance=2.8))
    assert len(xyz) == len(pts)
    d = np.linalg.norm(xyz[:, None] - pts[None], axis=2).min(axis=1)
    assert d.max() < 0.75 * np.sqrt(3)  # no offsets predicted: within the voxel holding the point
    # two points 1.2 A apart give one peak
    pred2 = _blob_prediction([[30, 5, 20], [31.2, 5, 20]], sigma=1.0, offsets=True)
    xyz2, _ = pick_peaks(pred2, CNNConfig(peak_threshold=0.3, peak_min_distance=2.8))
    assert len(xyz2) == 1


def test_neighbours_in_touching_voxels_are_both_found():
    # Two CAs 3.8 A apart along a body diagonal fall in touching voxels (Chebyshev
    # distance 1); each voxel's offset points at its own CA. A voxel-level 3x3x3
    # local-maximum filter loses one of them; the proposals + suppression keep both.
    grid = make_grid(np.zeros((24, 24, 24)))
    step = 3.8 / np.sqrt(3)
    pts = grid.ijk_to_xyz(np.array([[9.8, 9.8, 9.8]])) + np.array([[0, 0, 0], [step] * 3])
    pred = _blob_prediction(pts, shape=(24, 24, 24))
    ijk = grid.xyz_to_ijk(pts)
    voxels = np.rint(ijk).astype(int)
    assert np.abs(voxels[0] - voxels[1]).max() == 1  # touching voxels
    for (i, j, k), target in zip(voxels, ijk):
        pred.offset[:, k, j, i] = target - np.array([i, j, k])
    xyz, _ = pick_peaks(pred, CNNConfig(peak_threshold=0.3, peak_min_distance=2.8))
    assert len(xyz) == 2
    np.testing.assert_allclose(np.sort(np.linalg.norm(xyz[:, None] - pts[None], axis=2).min(0)),
                               [0.0, 0.0], atol=1e-4)


def test_offsets_move_peaks_off_lattice():
    pred = _blob_prediction([[30.0, 3.0, 21.0]])
    k, j, i = np.unravel_index(np.argmax(pred.prob), pred.prob.shape)
    pred.offset[:, k, j, i] = [0.4, -0.2, 0.0]  # voxels (x, y, z)
    xyz, _ = pick_peaks(pred, CNNConfig(peak_threshold=0.3))
    expected = pred.grid.ijk_to_xyz(np.array([[i + 0.4, j - 0.2, k]], float))[0]
    np.testing.assert_allclose(xyz[0], expected, atol=1e-4)


def test_empty_prediction_gives_no_points():
    pred = _blob_prediction([])
    xyz, prob = pick_peaks(pred, CNNConfig())
    assert xyz.shape == (0, 3) and prob.shape == (0,)
