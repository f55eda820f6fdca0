"""Output heads of the GNN (shared by all layers).

* residue type: logits [N, 20];
* torsions: (sin, cos) of AF2's 7 angles for every one of the 20 residue types,
  [N, 20, 7, 2], normalised (the unnormalised values are returned too, for a norm loss);
* edges: for each kNN edge (i, j), the logit that j is i's chain neighbour (previous or
  next residue) and the logit that j is i's *next* residue, [N, k] each;
* confidence: logits over bins of the node's CA error [N, B]; converted to a 0..100
  score by :func:`confidence_from_logits`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import geometry as geo
from .. import residue_constants as rc
from .common import MLP, rbf

_REL_SCALE = 0.1  # Angstrom -> feature units


class AminoAcidHead(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.mlp = MLP(hidden, hidden, rc.NUM_RESTYPES)

    def forward(self, s: torch.Tensor) -> torch.Tensor:  # [N, C] -> [N, 20]
        return self.mlp(self.norm(s))


class TorsionHead(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.mlp = MLP(hidden, hidden, rc.NUM_RESTYPES * geo.NUM_TORSIONS * 2, layers=3)

    def forward(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s [N, C] -> (normalised [N, 20, 7, 2], unnormalised [N, 20, 7, 2])."""
        raw = self.mlp(self.norm(s)).view(-1, rc.NUM_RESTYPES, geo.NUM_TORSIONS, 2).float()
        unit = raw / torch.sqrt((raw * raw).sum(-1, keepdim=True).clamp_min(1e-8))
        return unit, raw


class EdgeHead(nn.Module):
    """Pair MLP on (projected features of i and j, distance, j's CA in i's frame)."""

    def __init__(self, hidden: int, pair_dim: int = 64):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.proj = nn.Linear(hidden, 2 * pair_dim)
        self.pair_dim = pair_dim
        self.mlp = MLP(2 * pair_dim + 16 + 3, pair_dim, 2)

    def forward(self, s: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor,
                edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (edge_logits [N, k], next_logits [N, k])."""
        a, b = self.proj(self.norm(s)).split(self.pair_dim, dim=-1)  # [N, P] each
        nb = trans[edge_index]  # [N, k, 3]
        rel = geo.invert_apply_frame(rot[:, None], trans[:, None], nb)  # [N, k, 3]
        dist = rel.norm(dim=-1)  # [N, k]
        pair = torch.cat([
            a[:, None].expand(-1, edge_index.shape[1], -1), b[edge_index],
            rbf(dist).to(a.dtype), (rel * _REL_SCALE).to(a.dtype)], dim=-1)  # [N, k, 2P + 19]
        out = self.mlp(pair).float()  # [N, k, 2]
        return out[..., 0], out[..., 1]


class ConfidenceHead(nn.Module):
    def __init__(self, hidden: int, num_bins: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.mlp = MLP(hidden, hidden, num_bins)

    def forward(self, s: torch.Tensor) -> torch.Tensor:  # [N, C] -> [N, B]
        return self.mlp(self.norm(s)).float()


def confidence_bin_centres(edges: tuple[float, ...], device=None) -> torch.Tensor:
    """Representative CA error of each bin [B]; the open last bin counts as 2x its edge."""
    e = torch.tensor((0.0, *edges), device=device)
    centres = (e[1:] + e[:-1]) / 2
    return torch.cat([centres, e[-1:] * 2])


def error_to_score(err: torch.Tensor, d0: float) -> torch.Tensor:
    """Local accuracy score 0..100 of a CA error (A): 100 / (1 + (err / d0)^2)."""
    return 100.0 / (1.0 + (err / d0) ** 2)


def confidence_from_logits(logits: torch.Tensor, edges: tuple[float, ...],
                           d0: float) -> torch.Tensor:
    """Expected local accuracy score [N] (0..100) from CA-error bin logits [N, B]."""
    p = F.softmax(logits.float(), dim=-1)
    score = error_to_score(confidence_bin_centres(edges, logits.device), d0)  # [B]
    return (p * score).sum(-1)
