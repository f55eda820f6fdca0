"""Sequence attention (method 3.2): every node attends over the embedded input sequence(s).

Cross-attention from node features (queries) to the sequence embedding (keys and
values), gated and added to the node features. Several sequences are concatenated
along the residue axis; padded positions are masked. Without a sequence (or with every
position masked) the module returns its input unchanged.

The first ``position_heads`` heads are also returned as a pointer into the sequence:
``log`` of their mean attention over the positions [N, L]. Training supervises it with
each node's true position (``GNNConfig.loss_seq_position``), so those heads learn to
find a node's place in the sequence rather than only the sequence's composition.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import zero_linear


class SequenceAttention(nn.Module):
    def __init__(self, hidden: int, seq_dim: int, heads: int, position_heads: int = 0):
        super().__init__()
        assert hidden % heads == 0 and 0 <= position_heads <= heads
        self.heads, self.head_dim = heads, hidden // heads
        self.position_heads = position_heads
        self.norm = nn.LayerNorm(hidden)
        self.norm_seq = nn.LayerNorm(seq_dim)
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(seq_dim, 2 * hidden)
        self.gate = nn.Linear(hidden, hidden)
        self.out = zero_linear(hidden, hidden)

    def forward(self, s: torch.Tensor, seq: torch.Tensor | None,
                seq_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """s [N, C]; seq [L, E] (or [B, L, E], flattened); seq_mask [L] / [B, L] bool ->
        (s [N, C], position log-probabilities [N, L] or None: no sequence, or
        ``position_heads`` 0)."""
        if seq is None or seq.numel() == 0:
            return s, None
        seq = seq.reshape(-1, seq.shape[-1])  # [L, E]
        mask = (torch.ones(seq.shape[0], dtype=torch.bool, device=seq.device)
                if seq_mask is None else seq_mask.reshape(-1).bool())  # [L]
        if not bool(mask.any()):
            return s, None
        n, h, dh = s.shape[0], self.heads, self.head_dim
        x = self.norm(s)
        q = self.q(x).view(n, h, dh).transpose(0, 1)  # [H, N, dh]
        kv = self.kv(self.norm_seq(seq)).view(-1, 2, h, dh)  # [L, 2, H, dh]
        k = kv[:, 0].transpose(0, 1)  # [H, L, dh]
        v = kv[:, 1].transpose(0, 1)  # [H, L, dh]
        k, v = k.to(q.dtype), v.to(q.dtype)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None, None, :])  # [H, N, dh]
        o = o.transpose(0, 1).reshape(n, h * dh)  # [N, C]
        position = None
        if self.position_heads:
            ph = self.position_heads
            logits = (q[:ph] @ k[:ph].transpose(1, 2)).float() / dh**0.5  # [ph, N, L]
            logits = logits.masked_fill(~mask[None, None, :], float("-inf"))
            position = (torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0)
                        - math.log(ph))  # [N, L]
        return s + self.out(torch.sigmoid(self.gate(x)) * o), position
