"""Backbone frame module (method 3.2, figure 1B).

From the node features, predict shift vectors for the CA, N and C atoms in the node's
current local frame; move the (ideal) backbone atoms by them; rebuild the frame by
Gram-Schmidt (AF2 Algorithm 21). N and C are then implicitly re-placed at ideal bond
lengths and angle: a node's backbone is always ``geometry.backbone_from_frames``.
The last layer is zero-initialised, so an untrained module leaves the frames unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import geometry as geo
from .common import zero_linear


class BackboneFrameUpdate(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.shift = zero_linear(hidden, 9)

    def forward(self, s: torch.Tensor, rot: torch.Tensor,
                trans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s [N, C], rot [N, 3, 3], trans [N, 3] -> new (rot [N, 3, 3], trans [N, 3])."""
        n = s.shape[0]
        shift = self.shift(self.norm(s)).view(n, 3, 3).to(trans.dtype)  # [N, 3 atoms, 3] local
        local = geo.ideal_backbone_local(trans.device, trans.dtype) + shift  # N, CA, C
        with torch.autocast(device_type=trans.device.type, enabled=False):
            pos = geo.apply_frame(rot[:, None], trans[:, None], local)  # [N, 3, 3] global
            return geo.frames_from_backbone(pos[:, 0], pos[:, 1], pos[:, 2])
