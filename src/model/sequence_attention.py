"""Sequence attention (method 3.2): every node attends over the embedded input sequence(s).

Cross-attention from node features (queries) to the sequence embedding (keys and
values), gated and added to the node features. Several sequences are concatenated
along the residue axis; padded positions are masked. Without a sequence (or with every
position masked) the module returns its input unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import zero_linear


class SequenceAttention(nn.Module):
    def __init__(self, hidden: int, seq_dim: int, heads: int):
        super().__init__()
        assert hidden % heads == 0
        self.heads, self.head_dim = heads, hidden // heads
        self.norm = nn.LayerNorm(hidden)
        self.norm_seq = nn.LayerNorm(seq_dim)
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(seq_dim, 2 * hidden)
        self.gate = nn.Linear(hidden, hidden)
        self.out = zero_linear(hidden, hidden)

    def forward(self, s: torch.Tensor, seq: torch.Tensor | None,
                seq_mask: torch.Tensor | None = None) -> torch.Tensor:
        """s [N, C]; seq [L, E] (or [B, L, E], flattened); seq_mask [L] / [B, L] bool -> [N, C]."""
        if seq is None or seq.numel() == 0:
            return s
        seq = seq.reshape(-1, seq.shape[-1])  # [L, E]
        mask = (torch.ones(seq.shape[0], dtype=torch.bool, device=seq.device)
                if seq_mask is None else seq_mask.reshape(-1).bool())  # [L]
        if not bool(mask.any()):
            return s
        n, h, dh = s.shape[0], self.heads, self.head_dim
        x = self.norm(s)
        q = self.q(x).view(n, h, dh).transpose(0, 1)  # [H, N, dh]
        kv = self.kv(self.norm_seq(seq)).view(-1, 2, h, dh)  # [L, 2, H, dh]
        k = kv[:, 0].transpose(0, 1)  # [H, L, dh]
        v = kv[:, 1].transpose(0, 1)  # [H, L, dh]
        k, v = k.to(q.dtype), v.to(q.dtype)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None, None, :])  # [H, N, dh]
        o = o.transpose(0, 1).reshape(n, h * dh)  # [N, C]
        return s + self.out(torch.sigmoid(self.gate(x)) * o)
