"""Sequence embedding for the sequence attention: fair-esm's ESM2 architecture.

Two ways to get one:

* :meth:`ESMEncoder.small` builds a small, randomly initialised ESM2 (``esm_layers``,
  ``seq_embed_dim``, ``esm_heads`` of :class:`GNNConfig`) that is trained end to end
  with the GNN (it is a submodule of the GNN, so it lives in the GNN's weight file);
* :func:`load_pretrained_esm` reads a real ESM checkpoint from local disk (the file
  format ``esm.pretrained.load_model_and_alphabet_local`` reads, e.g.
  ``esm2_t6_8M_UR50D.pt``), with a trainable projection to the GNN's embedding width.

Tokens use ``esm.Alphabet.from_architecture('ESM-1b')``: BOS (cls) + residues + EOS,
padded; unknown letters map to ``X``. :meth:`ESMEncoder.embed` returns the per-residue
embeddings of several sequences concatenated along the residue axis, as the GNN wants.
"""

from __future__ import annotations

import argparse
import pickle
import warnings
from pathlib import Path

import esm
import torch
from esm.model.esm2 import ESM2
from torch import nn

from ..errors import ModelAngeloError

_VALID = set("ACDEFGHIKLMNPQRSTVWYXBUZO")


def tokenize(sequences: list[str], alphabet: esm.Alphabet) -> torch.Tensor:
    """One-letter sequences -> tokens [B, T] (BOS + residues + EOS, padded); letters
    outside the alphabet's amino acids become X."""
    rows = []
    for seq in sequences:
        clean = "".join(ch if ch in _VALID else "X" for ch in seq.upper())
        rows.append([alphabet.cls_idx] + alphabet.encode(clean) + [alphabet.eos_idx])
    t = max((len(r) for r in rows), default=2)
    tokens = torch.full((len(rows), t), alphabet.padding_idx, dtype=torch.long)  # [B, T]
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return tokens


class ESMEncoder(nn.Module):
    """An ESM model (``ESM2`` or another fair-esm model) + projection to ``out_dim``."""

    def __init__(self, model: nn.Module, alphabet: esm.Alphabet, out_dim: int | None = None,
                 freeze: bool = False):
        super().__init__()
        self.esm = model
        self.alphabet = alphabet  # not a module: not in the state dict
        self.embed_dim = int(model.embed_dim)
        self.out_dim = int(out_dim or self.embed_dim)
        self.proj: nn.Module = (nn.Identity() if self.out_dim == self.embed_dim
                                else nn.Linear(self.embed_dim, self.out_dim))
        self.frozen = freeze
        if freeze:
            for p in self.esm.parameters():
                p.requires_grad_(False)

    @classmethod
    def small(cls, num_layers: int, embed_dim: int, heads: int, out_dim: int | None = None,
              token_dropout: bool = False, freeze: bool = False) -> ESMEncoder:
        """A fresh ESM2 (trained end to end with the GNN, or filled from a pretrained
        checkpoint of the same architecture by :meth:`load_esm_weights`). Pretrained ESM2
        models use ``token_dropout=True`` (it rescales embeddings at inference too)."""
        alphabet = esm.Alphabet.from_architecture("ESM-1b")
        model = ESM2(num_layers=num_layers, embed_dim=embed_dim, attention_heads=heads,
                     alphabet=alphabet, token_dropout=token_dropout)
        return cls(model, alphabet, out_dim, freeze=freeze)

    def load_esm_weights(self, pretrained: ESMEncoder) -> None:
        """Copy the language-model weights of ``pretrained`` (same architecture) into this one."""
        mine, theirs = self.esm, pretrained.esm
        arch = ("num_layers", "embed_dim", "attention_heads", "token_dropout")
        want = {a: getattr(theirs, a, None) for a in arch}
        have = {a: getattr(mine, a, None) for a in arch}
        if want != have:
            raise ModelAngeloError(
                f"the ESM checkpoint's architecture {want} differs from this network's "
                f"{have}; set GNNConfig esm_layers / esm_embed_dim / esm_heads / "
                "esm_token_dropout to match")
        mine.load_state_dict(theirs.state_dict(), strict=False)

    def tokenize(self, sequences: list[str], device=None) -> torch.Tensor:
        """One-letter sequences -> tokens [B, T] (BOS + residues + EOS, padded)."""
        return tokenize(sequences, self.alphabet).to(device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] -> per-token embeddings [B, T, out_dim] (last layer, final norm)."""
        n = int(self.esm.num_layers)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            rep = self.esm(tokens, repr_layers=[n])["representations"][n]  # [B, T, E]
        return self.proj(rep)

    def embed(self, sequences: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Residue embeddings of all ``sequences`` concatenated: ([L, out_dim], mask [L] bool).

        BOS/EOS/padding are removed, so the mask is all True; it is returned for the
        GNN's interface (which also accepts padded [B, L, E] input).
        """
        if device is None:
            device = next(self.parameters()).device
        seqs = [s for s in sequences if len(s) > 0]
        if not seqs:
            return (torch.zeros(0, self.out_dim, device=device),
                    torch.zeros(0, dtype=torch.bool, device=device))
        tokens = self.tokenize(seqs, device)  # [B, T]
        rep = self(tokens)  # [B, T, D]
        parts = [rep[i, 1:1 + len(s)] for i, s in enumerate(seqs)]
        emb = torch.cat(parts, dim=0)  # [L, D]
        return emb, torch.ones(emb.shape[0], dtype=torch.bool, device=device)


def _torch_load(path: Path, allow_pickle: bool):
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(str(path), map_location="cpu", weights_only=not allow_pickle)


def load_pretrained_esm(path: str | Path, out_dim: int | None = None, *, freeze: bool = True,
                        allow_pickle: bool = False) -> ESMEncoder:
    """Load a real ESM checkpoint from local disk as an :class:`ESMEncoder`.

    ``path`` is a fair-esm model file (e.g. ``esm2_t12_35M_UR50D.pt``); an optional
    ``<stem>-contact-regression.pt`` next to it is loaded too (contacts are not used
    here). ``out_dim`` adds a trainable projection (e.g. to ``GNNConfig.seq_embed_dim``);
    ``freeze`` keeps the language model's own weights fixed. Files are read with
    ``torch.load(weights_only=True)`` (``argparse.Namespace`` allowed, as fair-esm files
    hold one); ``allow_pickle=True`` reads arbitrary pickles, only for files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelAngeloError(f"ESM weights file {path} does not exist")
    try:
        data = _torch_load(path, allow_pickle)
        reg_path = path.with_name(path.stem + "-contact-regression.pt")
        regression = _torch_load(reg_path, allow_pickle) if reg_path.is_file() else None
    except pickle.UnpicklingError as exc:
        raise ModelAngeloError(
            f"{path} holds Python objects beyond tensors and was not read for safety; "
            f"if you trust the file, load it with allow_pickle=True ({exc})") from exc
    except (RuntimeError, OSError, EOFError) as exc:
        raise ModelAngeloError(f"cannot read ESM weights {path}: {exc}") from exc
    if not isinstance(data, dict) or "model" not in data:
        raise ModelAngeloError(f"{path} is not a fair-esm checkpoint (no 'model' entry)")
    name = path.stem
    if "cfg" in data and not name.startswith("esm2"):
        name = "esm2_" + name  # fair-esm picks the ESM2 reader by file name
    try:
        with warnings.catch_warnings():  # contact regression weights are not needed here
            warnings.filterwarnings("ignore", message="Regression weights not found")
            model, alphabet = esm.pretrained.load_model_and_alphabet_core(name, data, regression)
    except (RuntimeError, ValueError, KeyError, AttributeError) as exc:
        raise ModelAngeloError(f"{path} is not a usable ESM checkpoint: {exc}") from exc
    model.eval()
    return ESMEncoder(model, alphabet, out_dim, freeze=freeze)
