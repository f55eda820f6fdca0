"""C-alpha detection network (method 3.1): a residual 3D U-Net.

Input: a normalised density crop at 1.5 A voxels, ``[B, 1, D, H, W]``.
Output: ``[B, 4, D, H, W]``: channel 0 is the logit that the voxel holds a CA atom,
channels 1-3 the CA's sub-voxel offset from the voxel centre (x, y, z, in voxels,
trained only where a CA is), so peaks are placed better than the 1.5 A lattice.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import CNNConfig


class ResBlock3d(nn.Module):
    """Two 3x3x3 convolutions with BatchNorm and a residual connection."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(c_out)
        self.skip = nn.Conv3d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, c_in, D, H, W]
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act(y + self.skip(x))  # [B, c_out, D, H, W]


class CAUNet(nn.Module):
    """Residual U-Net; ``len(cfg.widths)`` levels, each halving the resolution."""

    OUT_CHANNELS = 4

    def __init__(self, cfg: CNNConfig):
        super().__init__()
        self.cfg = cfg
        w = list(cfg.widths)
        self.stem = nn.Conv3d(1, w[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        c_prev = w[0]
        for i, c in enumerate(w):
            blocks = [ResBlock3d(c_prev if j == 0 else c, c) for j in range(cfg.blocks_per_level)]
            self.down.append(nn.Sequential(*blocks))
            if i < len(w) - 1:
                self.pool.append(nn.Conv3d(c, c, 2, stride=2))  # learned downsampling
            c_prev = c
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in range(len(w) - 2, -1, -1):
            self.up.append(nn.ConvTranspose3d(c_prev, w[i], 2, stride=2))
            self.up_blocks.append(ResBlock3d(2 * w[i], w[i]))
            c_prev = w[i]
        self.head = nn.Conv3d(w[0], self.OUT_CHANNELS, 1)

    @property
    def divisor(self) -> int:
        """Input edges must be multiples of this."""
        return 2 ** (len(self.cfg.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, D, H, W]
        h = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h)
            if i < len(self.pool):
                skips.append(h)
                h = self.pool[i](h)
        for up, block in zip(self.up, self.up_blocks):
            h = up(h)
            h = block(torch.cat([h, skips.pop()], dim=1))
        return self.head(h)  # [B, 4, D, H, W]
