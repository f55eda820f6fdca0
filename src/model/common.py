"""Small pieces shared by the GNN modules: density access, neighbour search, layers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DensityGrid:
    """A density map on the device: ``data`` [1, 1, D, H, W] with axes (z, y, x).

    Voxel ``(k, j, i)`` sits at ``origin + (i, j, k) * voxel_size`` (x, y, z, Angstrom),
    the same convention as ``MapGrid``. Sampling is trilinear; outside the map the
    density is 0 (maps are expected normalised so that solvent is about 0).
    """

    data: torch.Tensor  # [1, 1, D, H, W]
    origin: torch.Tensor  # [3] x, y, z (Angstrom)
    voxel_size: torch.Tensor  # [3] x, y, z (Angstrom)

    @classmethod
    def from_numpy(cls, data: np.ndarray, origin, voxel_size, device=None,
                   dtype: torch.dtype = torch.float32) -> DensityGrid:
        """From a [nz, ny, nx] array; ``voxel_size`` a number or (x, y, z)."""
        arr = torch.as_tensor(np.ascontiguousarray(data), dtype=dtype, device=device)
        vs = np.broadcast_to(np.asarray(voxel_size, np.float64), (3,))
        return cls(arr[None, None],
                   torch.as_tensor(np.asarray(origin, np.float64), dtype=dtype, device=device),
                   torch.as_tensor(vs.copy(), dtype=dtype, device=device))

    @classmethod
    def from_map(cls, grid, device=None, dtype: torch.dtype = torch.float32) -> DensityGrid:
        """From a ``MapGrid``-like object (``data`` [nz, ny, nx], ``origin``, ``voxel_size``)."""
        return cls.from_numpy(grid.data, grid.origin, grid.voxel_size, device=device, dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.data.device

    def to(self, device) -> DensityGrid:
        return DensityGrid(self.data.to(device), self.origin.to(device),
                           self.voxel_size.to(device))

    def transformed(self, rot: torch.Tensor, trans: torch.Tensor) -> TransformedDensity:
        """This map moved rigidly: the density at ``x`` becomes the density at ``rot x + trans``."""
        return TransformedDensity(self, rot, trans)

    def sample(self, points: torch.Tensor) -> torch.Tensor:
        """Trilinear density at points [..., 3] (Angstrom) -> [...] in the map's dtype."""
        shape = points.shape[:-1]
        d, h, w = self.data.shape[-3:]
        size = torch.tensor([w, h, d], dtype=self.data.dtype, device=self.data.device)
        with torch.autocast(device_type=self.data.device.type, enabled=False):
            idx = (points.to(self.data.dtype) - self.origin) / self.voxel_size  # [..., 3] voxels
            norm = idx * (2.0 / (size - 1).clamp_min(1.0)) - 1.0  # align_corners=True
            grid = norm.reshape(1, -1, 1, 1, 3)  # [1, M, 1, 1, 3] (x, y, z)
            out = F.grid_sample(self.data, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=True)  # [1, 1, M, 1, 1]
        return out.reshape(shape)


@dataclass
class TransformedDensity:
    """A density map moved by a rigid motion (used by equivariance tests and augmentation)."""

    base: DensityGrid
    rot: torch.Tensor  # [3, 3]
    trans: torch.Tensor  # [3]

    @property
    def device(self) -> torch.device:
        return self.base.device

    def sample(self, points: torch.Tensor) -> torch.Tensor:
        # x_new = rot x_old + trans  =>  x_old = rot^T (x_new - trans)
        local = ((points - self.trans)[..., :, None] * self.rot).sum(-2)  # [..., 3]
        return self.base.sample(local)


def knn(positions: torch.Tensor, k: int, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours (self excluded), nearest first.

    positions [N, 3] -> (index [N, k'], distance [N, k']) with k' = min(k, N - 1).
    Distances are computed as exact differences (not the |a|^2 + |b|^2 - 2ab expansion)
    in chunks of rows, so the order is rotation invariant to rounding and memory stays
    at ``chunk * N`` for large graphs.
    """
    n = positions.shape[0]
    kk = max(0, min(k, n - 1))
    if kk == 0:
        empty = positions.new_zeros((n, 0))
        return empty.long(), empty
    x = positions.detach()
    idx_out, dist_out = [], []
    with torch.autocast(device_type=x.device.type, enabled=False):
        for s in range(0, n, chunk):
            xs = x[s:s + chunk]  # [c, 3]
            d2 = ((xs[:, None, :] - x[None, :, :]) ** 2).sum(-1)  # [c, N]
            rows = torch.arange(xs.shape[0], device=x.device)
            d2[rows, rows + s] = float("inf")
            d, i = torch.topk(d2, kk, dim=1, largest=False, sorted=True)  # [c, k]
            idx_out.append(i)
            dist_out.append(d.sqrt())
    return torch.cat(idx_out), torch.cat(dist_out)


def rbf(d: torch.Tensor, num: int = 16, d_max: float = 20.0) -> torch.Tensor:
    """Gaussian radial basis of distances d [...] -> [..., num] (centres 0..d_max)."""
    centres = torch.linspace(0.0, d_max, num, device=d.device, dtype=d.dtype)
    width = d_max / num
    return torch.exp(-(((d[..., None] - centres) / width) ** 2))


def zero_linear(in_dim: int, out_dim: int) -> nn.Linear:
    """A Linear layer initialised to output zeros (residual branches start as identity)."""
    lin = nn.Linear(in_dim, out_dim)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class MLP(nn.Module):
    """Linear -> SiLU -> ... -> Linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int = 2,
                 zero_last: bool = False):
        super().__init__()
        mods: list[nn.Module] = []
        d = in_dim
        for _ in range(layers - 1):
            mods += [nn.Linear(d, hidden), nn.SiLU()]
            d = hidden
        mods.append(zero_linear(d, out_dim) if zero_last else nn.Linear(d, out_dim))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Transition(nn.Module):
    """Pre-norm residual MLP (width ``factor`` x hidden)."""

    def __init__(self, hidden: int, factor: int = 2):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.mlp = MLP(hidden, factor * hidden, hidden, zero_last=True)

    def forward(self, s: torch.Tensor) -> torch.Tensor:  # [N, C]
        return s + self.mlp(self.norm(s))
