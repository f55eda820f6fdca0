"""Spatial invariant point attention (method 3.2), a simplified AlphaFold2 IPA over kNN edges.

Each node predicts, per head, query points in its own local frame; they are moved to
global coordinates and the attention logit of neighbour j is a scalar query-key term
minus a learned weight times the summed squared distance from the query points to j's
CA: a node asks "is there a node where I expect one?". Values are j's features, j's
value points (predicted in j's frame, moved to global coordinates, then expressed in
i's frame) and j's CA in i's frame. Only invariant quantities reach the features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import geometry as geo
from .common import zero_linear

_POINT_SCALE = 0.1  # Angstrom -> feature units for point outputs


class SpatialIPA(nn.Module):
    def __init__(self, hidden: int, heads: int, query_points: int, value_points: int):
        super().__init__()
        assert hidden % heads == 0
        self.heads, self.head_dim = heads, hidden // heads
        self.qp, self.vp = query_points, value_points
        self.norm = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.q_points = nn.Linear(hidden, heads * query_points * 3)
        self.v_points = nn.Linear(hidden, heads * value_points * 3)
        # softplus(0.5413) = 1: point term starts at AF2's weighting.
        self.point_weight = nn.Parameter(torch.full((heads,), 0.5413))
        out_dim = heads * (self.head_dim + value_points * 4 + 4)
        self.out = zero_linear(out_dim, hidden)

    def forward(self, s: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor,
                edge_index: torch.Tensor) -> torch.Tensor:
        """s [N, C], rot [N, 3, 3], trans [N, 3], edge_index [N, k] -> s [N, C]."""
        n, k = edge_index.shape
        h, dh, p, pv = self.heads, self.head_dim, self.qp, self.vp
        x = self.norm(s)
        q, key, v = self.qkv(x).view(n, 3, h, dh).unbind(1)  # each [N, H, dh]
        key_j, v_j = key[edge_index], v[edge_index]  # [N, k, H, dh]
        scalar = (q[:, None] * key_j).sum(-1) / math.sqrt(dh)  # [N, k, H]

        # Query points: local -> global (fp32 positions stay fp32: elementwise rotation).
        qp_local = self.q_points(x).view(n, h, p, 3).to(trans.dtype)  # [N, H, P, 3]
        qp_global = geo.apply_frame(rot[:, None, None], trans[:, None, None], qp_local)
        nb = trans[edge_index]  # [N, k, 3]
        d2 = ((qp_global[:, None] - nb[:, :, None, None, :]) ** 2).sum(-1).sum(-1)  # [N, k, H]
        # AF2 weighting of the two terms: sqrt(1/2) each, point term sqrt(2 / (9 P)) / 2.
        w = F.softplus(self.point_weight).to(d2.dtype) * math.sqrt(2.0 / (9.0 * p)) / 2.0
        logits = math.sqrt(0.5) * (scalar.to(d2.dtype) - w * d2)  # [N, k, H] (fp32)
        attn = torch.softmax(logits, dim=1)  # [N, k, H] (fp32)

        o_s = (attn[..., None].to(v_j.dtype) * v_j).sum(1)  # [N, H, dh]
        vp_local = self.v_points(x).view(n, h, pv, 3).to(trans.dtype)  # [N, H, Pv, 3]
        vp_global = geo.apply_frame(rot[:, None, None], trans[:, None, None], vp_local)
        vp_j = vp_global[edge_index]  # [N, k, H, Pv, 3]
        o_p = (attn[..., None, None] * vp_j).sum(1)  # [N, H, Pv, 3] global
        o_p = geo.invert_apply_frame(rot[:, None, None], trans[:, None, None], o_p)
        rel = geo.invert_apply_frame(rot[:, None], trans[:, None], nb)  # [N, k, 3] in i's frame
        o_rel = (attn[..., None] * rel[:, :, None, :]).sum(1)  # [N, H, 3]
        feats = torch.cat([
            o_s.reshape(n, h * dh).to(trans.dtype),
            (o_p * _POINT_SCALE).reshape(n, h * pv * 3),
            (o_p.norm(dim=-1) * _POINT_SCALE).reshape(n, h * pv),
            (o_rel * _POINT_SCALE).reshape(n, h * 3),
            (o_rel.norm(dim=-1) * _POINT_SCALE).reshape(n, h),
        ], dim=-1)  # [N, H * (dh + 4 Pv + 4)]
        return s + self.out(feats.to(s.dtype))
