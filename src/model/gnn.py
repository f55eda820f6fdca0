"""The graph neural network of method 3.2: nodes (one per residue candidate) with a
backbone frame and a feature vector, refined by ``num_layers`` layers of

  (a) cryo-EM attention  (b) sequence attention  (c) spatial IPA  (d) transition
  (e) backbone frame update,

with kNN edges recomputed from the current CA positions at every layer. Shared heads
read residue type, torsions (all 20 types), chain edges and (last layer) confidence.

Entry points
------------
* :class:`GNN` ``forward(node_ca, density, seq_embedding, seq_mask, init_rotations, prev)``
  -> dict of per-layer and final outputs (training);
* :meth:`GNN.forward_recycled` -> the same, after ``recycles`` gradient-free passes;
* :meth:`GNN.predict` / :meth:`GNN.predict_cropped` / :meth:`GNN.predict_map` ->
  :class:`~chimerax.modelangelo.prediction.GraphPrediction` (inference, numpy);
* :func:`targets_from_protein` and :func:`gnn_loss` -> ``(total, terms)`` (training).

Nodes start at the given CA positions with random orientations (reproducible at
inference: :attr:`GNNConfig.init_seed`). The model is SE(3)-equivariant: moving the
nodes, their initial frames and the map together moves the output frames the same way
and leaves logits and confidence unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import log_softmax
from torch import nn

from .. import geometry as geo
from .. import residue_constants as rc
from ..config import GNNConfig
from ..errors import ModelAngeloError
from ..prediction import GraphPrediction
from .backbone_frame import BackboneFrameUpdate
from .common import DensityGrid, Transition, knn, zero_linear
from .cryoem_attention import CryoEMAttention
from .esm_encoder import ESMEncoder
from .heads import AminoAcidHead, ConfidenceHead, EdgeHead, TorsionHead, confidence_from_logits
from .ipa import SpatialIPA
from .sequence_attention import SequenceAttention

__all__ = ["GNN", "GNNLayer", "DensityGrid", "gnn_loss", "targets_from_protein",
           "plan_crops", "initial_rotations"]

EDGE_PAD_LOGIT = -1e4  # edge logits of padded (absent) neighbours in GraphPrediction


class GNNLayer(nn.Module):
    """One refinement layer: cryo-EM attention, sequence attention, IPA, transition, frames."""

    def __init__(self, cfg: GNNConfig):
        super().__init__()
        c = cfg.hidden
        self.k = cfg.k_neighbours
        self.cryoem = CryoEMAttention(c, cfg.heads, cfg.cube_size, cfg.cube_spacing,
                                      cfg.rect_length, cfg.rect_width, tuple(cfg.cube_channels))
        self.sequence = SequenceAttention(c, cfg.seq_embed_dim, cfg.heads,
                                          cfg.seq_position_heads)
        self.ipa = SpatialIPA(c, cfg.heads, cfg.ipa_query_points, cfg.ipa_value_points)
        self.transition = Transition(c, cfg.transition_factor)
        self.frame = BackboneFrameUpdate(c)

    def forward(self, s: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor, density,
                seq: torch.Tensor | None, seq_mask: torch.Tensor | None):
        """s [N, C], rot [N, 3, 3], trans [N, 3] -> (s, rot, trans, edge_index [N, k],
        sequence position log-probabilities [N, L] or None)."""
        edge_index, edge_dist = knn(trans, self.k)  # [N, k] each
        if edge_index.shape[1] > 0:
            s = self.cryoem(s, rot, trans, edge_index, edge_dist, density)
        s, seq_position = self.sequence(s, seq, seq_mask)
        if edge_index.shape[1] > 0:
            s = self.ipa(s, rot, trans, edge_index)
        s = self.transition(s)
        rot, trans = self.frame(s, rot, trans)
        return s, rot, trans, edge_index, seq_position


def initial_rotations(n: int, seed: int) -> np.ndarray:
    """Reproducible random node orientations [n, 3, 3] (float32) for inference."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True).clip(1e-12)
    return geo.quaternion_to_rotation(torch.from_numpy(q)).numpy().astype(np.float32)


class GNN(nn.Module):
    def __init__(self, cfg: GNNConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.hidden
        self.seq_encoder: ESMEncoder | None = (
            ESMEncoder.small(cfg.esm_layers, cfg.esm_embed_dim or cfg.seq_embed_dim,
                             cfg.esm_heads, out_dim=cfg.seq_embed_dim,
                             token_dropout=cfg.esm_token_dropout, freeze=cfg.esm_frozen)
            if cfg.esm_layers > 0 else None)
        self.node_init = nn.Parameter(torch.randn(c) * 0.02)
        self.recycle_norm = nn.LayerNorm(c)
        self.recycle_proj = zero_linear(c, c)
        self.layers = nn.ModuleList([GNNLayer(cfg) for _ in range(cfg.num_layers)])
        self.aa_head = AminoAcidHead(c)
        self.torsion_head = TorsionHead(c)
        self.edge_head = EdgeHead(c, cfg.edge_pair_dim)
        self.confidence_head = ConfidenceHead(c, len(cfg.confidence_bins) + 1)

    # ---------------------------------------------------------------- sequences
    def load_pretrained_esm(self, path, allow_pickle: bool = False) -> None:
        """Fill the sequence encoder from a real ESM2 checkpoint on disk.

        The config must describe that checkpoint (``esm_layers``, ``esm_embed_dim``,
        ``esm_heads``, ``esm_token_dropout=True``; e.g. esm2_t6_8M_UR50D: 6, 320, 20), so
        a weight file of this GNN rebuilds the same network from its stored config.
        """
        from .esm_encoder import load_pretrained_esm

        if self.seq_encoder is None:
            raise ModelAngeloError("this GNN has no sequence encoder (esm_layers = 0)")
        self.seq_encoder.load_esm_weights(load_pretrained_esm(path, allow_pickle=allow_pickle))

    def embed_sequences(self, sequences: list[str] | None,
                        device=None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Sequence embedding [L, E] and mask [L] of one-letter sequences (None if none)."""
        seqs = [s for s in (sequences or []) if s]
        if not seqs:
            return None, None
        if self.seq_encoder is None:
            raise ModelAngeloError("this GNN has no sequence encoder (esm_layers = 0): "
                                   "pass sequence embeddings instead")
        return self.seq_encoder.embed(seqs, device)

    # ---------------------------------------------------------------- forward
    def forward(self, node_ca: torch.Tensor, density, seq_embedding: torch.Tensor | None = None,
                seq_mask: torch.Tensor | None = None, init_rotations: torch.Tensor | None = None,
                prev: dict | None = None,
                generator: torch.Generator | None = None) -> dict:
        """One pass over the graph.

        node_ca [N, 3] (Angstrom); density: :class:`DensityGrid` (or anything with
        ``sample(points [..., 3]) -> [...]``); seq_embedding [L, E] or [B, L, E] (None =
        no sequence); seq_mask [L] / [B, L] bool; init_rotations [N, 3, 3] (None =
        random, from ``generator``); prev: the output of a previous pass (recycling:
        its frames and features are the starting point, without gradient).

        Returns a dict with the final ``rotations`` [N, 3, 3], ``translations`` [N, 3],
        ``backbone`` [N, 3, 3] (N, CA, C), ``features`` [N, C], ``aa_logits`` [N, 20],
        ``torsions`` / ``torsions_unnorm`` [N, 20, 7, 2], ``edge_index`` / ``edge_logits``
        / ``next_logits`` [N, k], ``confidence_logits`` [N, B], ``confidence`` [N]
        (0..100), and ``layers``: one dict per layer with the per-layer subset
        (rotations, translations, aa_logits, torsions, torsions_unnorm, edge_index,
        edge_logits, next_logits, and ``seq_position`` [N, L]: log-probabilities of each
        node's place in the concatenated sequences, or None).
        """
        n = node_ca.shape[0]
        c = self.cfg.hidden
        s = self.node_init.to(node_ca.dtype).expand(n, c)  # [N, C]
        if prev is not None:
            rot = prev["rotations"].detach()
            trans = prev["translations"].detach()
            s = s + self.recycle_proj(self.recycle_norm(prev["features"].detach()))
        else:
            trans = node_ca
            rot = (init_rotations.to(node_ca.dtype) if init_rotations is not None else
                   geo.random_rotations(n, generator=generator, device=node_ca.device,
                                        dtype=node_ca.dtype))
        layers = []
        for layer in self.layers:
            # As in AF2, rotations carry no gradient from one layer to the next.
            s, rot, trans, edge_index, seq_position = layer(
                s, rot.detach(), trans, density, seq_embedding, seq_mask)
            tor, tor_raw = self.torsion_head(s)
            edge_logits, next_logits = self.edge_head(s, rot, trans, edge_index)
            layers.append({
                "rotations": rot, "translations": trans, "aa_logits": self.aa_head(s).float(),
                "torsions": tor, "torsions_unnorm": tor_raw, "edge_index": edge_index,
                "edge_logits": edge_logits, "next_logits": next_logits,
                "seq_position": seq_position,
            })
        conf_logits = self.confidence_head(s)  # [N, B]
        out = dict(layers[-1])
        out.update({
            "layers": layers,
            "features": s,
            "backbone": geo.backbone_from_frames(rot, trans),
            "confidence_logits": conf_logits,
            "confidence": confidence_from_logits(conf_logits, self.cfg.confidence_bins,
                                                 self.cfg.confidence_d0),
        })
        return out

    def forward_recycled(self, node_ca: torch.Tensor, density,
                         seq_embedding: torch.Tensor | None = None,
                         seq_mask: torch.Tensor | None = None,
                         init_rotations: torch.Tensor | None = None,
                         recycles: int | None = None,
                         generator: torch.Generator | None = None) -> dict:
        """``recycles`` gradient-free passes, each starting from the previous output, then
        one pass with gradient (AF2-style recycling; training picks ``recycles`` at random)."""
        recycles = self.cfg.recycles if recycles is None else recycles
        prev = None
        for _ in range(recycles):
            with torch.no_grad():
                o = self(node_ca, density, seq_embedding, seq_mask, init_rotations, prev,
                         generator)
            prev = {k: o[k] for k in ("rotations", "translations", "features")}
        return self(node_ca, density, seq_embedding, seq_mask, init_rotations, prev, generator)

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def _run_numpy(self, node_ca: np.ndarray, density, seq_embedding, seq_mask,
                   init_rot: np.ndarray, device, bf16: bool) -> dict:
        x = torch.as_tensor(np.asarray(node_ca, np.float32), device=device)
        r = torch.as_tensor(init_rot, device=device)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                            enabled=bf16):
            o = self.forward_recycled(x, density, seq_embedding, seq_mask, r)
        return o

    def _prepare(self, density, sequences, device):
        device = torch.device(device) if device is not None else next(self.parameters()).device
        if not hasattr(density, "sample"):
            density = DensityGrid.from_map(density, device)
        emb, mask = self.embed_sequences(sequences, device)
        return device, density, emb, mask

    @torch.no_grad()
    def predict(self, node_ca: np.ndarray, density, sequences: list[str] | None = None, *,
                device=None, bf16: bool = False) -> GraphPrediction:
        """Whole-graph inference (memory grows with N; see :meth:`predict_cropped`).

        node_ca [N, 3]; density: :class:`DensityGrid` or a ``MapGrid``-like object;
        sequences: one-letter strings (None = no sequence). Eval mode is the caller's
        choice (``model.eval()``).
        """
        device, density, emb, mask = self._prepare(density, sequences, device)
        node_ca = np.asarray(node_ca, np.float32).reshape(-1, 3)
        rot0 = initial_rotations(len(node_ca), self.cfg.init_seed)
        o = self._run_numpy(node_ca, density, emb, mask, rot0, device, bf16)
        return self._to_prediction(o, np.arange(len(node_ca)))

    @torch.no_grad()
    def predict_cropped(self, node_ca: np.ndarray, density, sequences: list[str] | None = None,
                        *, device=None, bf16: bool = False,
                        should_stop: Callable[[], None] | None = None,
                        progress: Callable[[float], None] | None = None) -> GraphPrediction:
        """Inference in overlapping spatial crops of ``cfg.crop_nodes`` nodes.

        A node's frame, position and backbone come from the crop with the most room
        around it (its owner crop, :func:`plan_crops`); its residue-type log-probabilities,
        torsions, confidence and edge logits are averaged over the owner crop and every
        other crop that holds it at least ``cfg.crop_average_margin`` A inside (edge logits
        per neighbour present in both). Memory is bounded by the crop size, so 10,000+
        nodes are fine. A graph of at most ``crop_nodes`` nodes is one crop and gives
        exactly :meth:`predict`'s result. ``should_stop()`` may raise to abort between crops.
        """
        device, density, emb, mask = self._prepare(density, sequences, device)
        node_ca = np.asarray(node_ca, np.float32).reshape(-1, 3)
        n = len(node_ca)
        rot0 = initial_rotations(n, self.cfg.init_seed)
        crops, owner = plan_crops(node_ca, self.cfg.crop_nodes, self.cfg.crop_overlap)
        if len(crops) == 1:
            o = self._run_numpy(node_ca, density, emb, mask, rot0, device, bf16)
            if progress is not None:
                progress(1.0)
            return self._to_prediction(o, np.arange(n))
        parts: list[tuple[int, np.ndarray, GraphPrediction]] = []  # (crop, nodes, part)
        for ci, idx in enumerate(crops):
            if should_stop is not None:
                should_stop()
            margin = crop_margins(node_ca, idx)  # [crop_nodes] A
            rows = np.nonzero((owner[idx] == ci) | (margin >= self.cfg.crop_average_margin))[0]
            if len(rows):
                o = self._run_numpy(node_ca[idx], density, emb, mask, rot0[idx], device, bf16)
                part = self._to_prediction(o, idx)
                parts.append((ci, idx[rows], _select_rows(part, rows)))
            if progress is not None:
                progress((ci + 1) / len(crops))
        return _merge_crops(parts, owner, n, self.cfg.k_neighbours)

    def predict_map(self, nodes: np.ndarray, grid, sequences=None, cfg: GNNConfig | None = None,
                    *, device=None, should_stop: Callable[[], None] | None = None,
                    progress: Callable[[float], None] | None = None,
                    bf16: bool = False) -> GraphPrediction:
        """Pipeline entry: nodes [N, 3], a ``MapGrid`` (normalised, working voxel size),
        sequences as ``SequenceRecord``-like objects (``.sequence``) or strings.
        ``cfg`` is accepted for the caller's convenience; the model's own config rules."""
        # identical chains (homo-oligomers) are embedded once
        seqs = list(dict.fromkeys(getattr(r, "sequence", r) for r in (sequences or [])))
        return self.predict_cropped(nodes, grid, seqs, device=device, bf16=bf16,
                                    should_stop=should_stop, progress=progress)

    def _to_prediction(self, o: dict, global_index: np.ndarray) -> GraphPrediction:
        """Outputs of one crop -> GraphPrediction with edge indices mapped to ``global_index``."""
        def npy(t):
            return t.detach().float().cpu().numpy()

        n = o["translations"].shape[0]
        k = self.cfg.k_neighbours
        e_local = o["edge_index"].cpu().numpy()
        kk = e_local.shape[1]
        edge_index = np.full((n, k), -1, np.int64)
        edge_logits = np.full((n, k), EDGE_PAD_LOGIT, np.float32)
        next_logits = np.full((n, k), EDGE_PAD_LOGIT, np.float32)
        edge_index[:, :kk] = np.asarray(global_index)[e_local]
        edge_logits[:, :kk] = npy(o["edge_logits"])
        next_logits[:, :kk] = npy(o["next_logits"])
        return GraphPrediction(
            rotations=npy(o["rotations"]), translations=npy(o["translations"]),
            backbone=npy(o["backbone"]), aa_logits=npy(o["aa_logits"]),
            torsions=npy(o["torsions"]), edge_index=edge_index, edge_logits=edge_logits,
            confidence=npy(o["confidence"]), next_logits=next_logits)


def _select_rows(pred: GraphPrediction, rows: np.ndarray) -> GraphPrediction:
    return GraphPrediction(**{f.name: None if getattr(pred, f.name) is None
                              else getattr(pred, f.name)[rows]
                              for f in dataclasses.fields(GraphPrediction)})


def _empty_prediction(n: int, k: int) -> dict:
    return {
        "rotations": np.zeros((n, 3, 3), np.float32),
        "translations": np.zeros((n, 3), np.float32),
        "backbone": np.zeros((n, 3, 3), np.float32),
        "aa_logits": np.zeros((n, rc.NUM_RESTYPES), np.float32),
        "torsions": np.zeros((n, rc.NUM_RESTYPES, geo.NUM_TORSIONS, 2), np.float32),
        "edge_index": np.full((n, k), -1, np.int64),
        "edge_logits": np.full((n, k), EDGE_PAD_LOGIT, np.float32),
        "confidence": np.zeros(n, np.float32),
        "next_logits": np.full((n, k), EDGE_PAD_LOGIT, np.float32),
    }


def crop_margins(positions: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Room (A) between each node of a crop and the crop's edge: the crop's radius (its
    farthest node from its centre node ``idx[0]``) minus the node's distance from the centre."""
    d = np.linalg.norm(positions[idx] - positions[idx[0]], axis=1)  # [C]
    return d.max() - d


def _merge_crops(parts: list[tuple[int, np.ndarray, GraphPrediction]], owner: np.ndarray,
                 n: int, k: int) -> GraphPrediction:
    """One prediction from the crops' parts (see :meth:`GNN.predict_cropped`).

    ``parts``: for each crop that ran, ``(crop index, nodes, part)``: the global indices of
    the crop's contributing nodes and the crop's prediction for them (global edge indices).
    """
    res = _empty_prediction(n, k)
    owned = [owner[nodes] == ci for ci, nodes, _ in parts]  # [rows] bool per part
    for (_, nodes, part), own in zip(parts, owned):  # owner crops: geometry, neighbour lists
        for name in ("rotations", "translations", "backbone", "edge_index", "edge_logits",
                     "next_logits"):
            res[name][nodes[own]] = getattr(part, name)[own]
    aa = np.zeros((n, rc.NUM_RESTYPES), np.float64)  # sum of log-probabilities
    tors = np.zeros(res["torsions"].shape, np.float64)
    conf = np.zeros(n, np.float64)
    count = np.zeros(n, np.int64)
    edge_sum = np.zeros((n, k), np.float64)
    next_sum = np.zeros((n, k), np.float64)
    edge_count = np.zeros((n, k), np.int64)
    for (_, nodes, part), own in zip(parts, owned):
        aa[nodes] += log_softmax(part.aa_logits, axis=1)  # [m, 20]
        tors[nodes] += part.torsions
        conf[nodes] += part.confidence
        count[nodes] += 1
        other = nodes[~own]  # neighbour lists of other crops: matched to the owner's
        if len(other):
            ref = res["edge_index"][other]  # [m, k]
            mine = part.edge_index[~own]  # [m, k]
            match = (ref[:, :, None] == mine[:, None, :]) & (ref[:, :, None] >= 0)  # [m, k, k]
            edge_sum[other] += (match * part.edge_logits[~own][:, None, :]).sum(-1)
            next_sum[other] += (match * part.next_logits[~own][:, None, :]).sum(-1)
            edge_count[other] += match.any(-1)
    res["aa_logits"] = (aa / count[:, None]).astype(np.float32)
    tors /= np.maximum(np.linalg.norm(tors, axis=-1, keepdims=True), 1e-6)
    res["torsions"] = tors.astype(np.float32)
    res["confidence"] = (conf / count).astype(np.float32)
    present = res["edge_index"] >= 0
    res["edge_logits"] = np.where(present, (res["edge_logits"] + edge_sum) / (1 + edge_count),
                                  res["edge_logits"]).astype(np.float32)
    res["next_logits"] = np.where(present, (res["next_logits"] + next_sum) / (1 + edge_count),
                                  res["next_logits"]).astype(np.float32)
    return GraphPrediction(**res)


def plan_crops(positions: np.ndarray, crop_nodes: int,
               overlap: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Overlapping spatial crops covering every node.

    Returns the crops (index arrays of up to ``crop_nodes`` nodes: the nodes nearest a
    centre node, chosen by farthest-point sampling among nodes not yet covered; the
    nearest ``crop_nodes - overlap`` count as covered) and ``owner`` [N]: for each node,
    the crop holding it with the most room around it (largest crop radius minus the
    node's distance from the crop centre), so its neighbours are most likely inside.
    """
    pos = np.asarray(positions, np.float64).reshape(-1, 3)
    n = len(pos)
    if n <= crop_nodes:
        return [np.arange(n)], np.zeros(n, np.int64)
    core = max(1, crop_nodes - overlap)
    covered = np.zeros(n, bool)
    min_d = np.full(n, np.inf)
    best = np.full(n, -np.inf)  # margin of the node inside its owner crop
    owner = np.full(n, -1, np.int64)
    crops: list[np.ndarray] = []
    seed = int(np.argmax(np.linalg.norm(pos - pos.mean(0), axis=1)))
    while True:
        d = np.linalg.norm(pos - pos[seed], axis=1)  # [N]
        idx = np.argpartition(d, crop_nodes - 1)[:crop_nodes]
        idx = idx[np.argsort(d[idx], kind="stable")]
        ci = len(crops)
        crops.append(idx)
        covered[idx[:core]] = True
        margin = crop_margins(pos, idx)  # [crop_nodes] room between node and crop edge
        better = margin > best[idx]
        best[idx[better]] = margin[better]
        owner[idx[better]] = ci
        min_d = np.minimum(min_d, d)
        if covered.all():
            break
        cand = np.nonzero(~covered)[0]
        seed = int(cand[np.argmax(min_d[cand])])
    return crops, owner


# ====================================================================================
# Training targets and losses
# ====================================================================================


def targets_from_protein(protein, device=None, max_peptide_bond: float = 2.0) -> dict:
    """Per-node targets for nodes that are the residues of ``protein`` (same order).

    Returns tensors: ``atom_positions`` [N, 37, 3], ``atom_mask`` [N, 37], ``aatype`` [N],
    ``residue_mask`` [N] (True: the node is a real residue), ``prev_node`` / ``next_node``
    [N] (row of the chain neighbour, -1 = none; neighbours are consecutive rows of one
    chain joined by a peptide bond shorter than ``max_peptide_bond``), ``torsions``
    [N, 7, 2] and ``torsion_mask`` [N, 7]. To add false-positive nodes, append rows with
    ``residue_mask`` False (positions ignored) and ``prev_node``/``next_node`` -1; to
    shuffle nodes, permute every tensor and remap prev/next.
    """
    pos = torch.as_tensor(protein.atom_positions, dtype=torch.float32, device=device)
    mask = torch.as_tensor(protein.atom_mask, dtype=torch.bool, device=device)
    aatype = torch.as_tensor(protein.aatype, dtype=torch.long, device=device)
    chain = torch.as_tensor(protein.chain_index, dtype=torch.long, device=device)
    n = pos.shape[0]
    prev = torch.arange(n, device=pos.device) - 1
    ok = prev >= 0
    pc = prev.clamp_min(0)
    ok &= chain[pc] == chain
    ok &= mask[pc, rc.C_IDX] & mask[:, rc.N_IDX]
    ok &= (pos[:, rc.N_IDX] - pos[pc, rc.C_IDX]).norm(dim=-1) < max_peptide_bond
    prev = torch.where(ok, prev, torch.full_like(prev, -1))
    nxt = torch.full_like(prev, -1)
    has = prev >= 0
    nxt[prev[has]] = torch.nonzero(has)[:, 0]
    tors, tmask = geo.torsions_from_atom37(pos, mask, aatype, prev_index=prev)
    return {
        "atom_positions": pos, "atom_mask": mask, "aatype": aatype,
        "residue_mask": torch.ones(n, dtype=torch.bool, device=pos.device),
        "prev_node": prev, "next_node": nxt, "torsions": tors, "torsion_mask": tmask,
    }


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def _safe_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return torch.sqrt((x * x).sum(-1) + eps)


def gnn_loss(outputs: dict, targets: dict, cfg: GNNConfig) -> tuple[torch.Tensor, dict]:
    """Training loss of one graph: ``(total, terms)``.

    Per layer (averaged over layers): CA distance (``ca``, Eq. 1), backbone N/CA/C RMSD
    (``backbone``), residue-type cross-entropy (``aa``), torsion MSE on (sin, cos) for
    the true residue type with pi-periodic alternatives (``torsion``) plus AF2's
    angle-norm penalty (``torsion_norm``), edge BCE (``edge``: neighbour is the previous
    or next residue; ``next``: neighbour is the next residue), and the sequence pointer's
    cross-entropy against each node's position in the sequences (``seq_position``, when
    ``targets`` has it). Last layer: all-atom
    per-residue RMSD with symmetric-atom renaming (``full_atom``) and confidence
    cross-entropy against the binned actual CA error, stop-gradient (``confidence``).
    Distances are clamped at ``cfg.loss_clamp``. Nodes with ``residue_mask`` False (no
    true residue) count only in ``edge``/``next`` (no neighbours) and ``confidence``
    (last bin: "not a residue"). ``terms`` holds detached values plus metrics
    ``ca_rmsd`` and ``aa_accuracy`` of the last layer.
    """
    pos_t = targets["atom_positions"]  # [N, 37, 3]
    amask = targets["atom_mask"].bool()  # [N, 37]
    aatype = targets["aatype"].long()  # [N]
    rmask = targets["residue_mask"].bool()  # [N]
    prev_node, next_node = targets["prev_node"].long(), targets["next_node"].long()  # [N]
    if "torsions" in targets:
        tor_t, tmask = targets["torsions"], targets["torsion_mask"].bool()
    else:
        tor_t, tmask = geo.torsions_from_atom37(pos_t, amask, aatype, prev_index=prev_node)
    aat = aatype.clamp(0, rc.NUM_RESTYPES - 1)
    known = rmask & (aatype < rc.NUM_RESTYPES)  # [N]
    bb_ok = rmask & amask[:, :3].all(-1)  # [N]
    ca_ok = rmask & amask[:, rc.CA_IDX]
    clamp = cfg.loss_clamp
    n = pos_t.shape[0]
    ar = torch.arange(n, device=pos_t.device)
    tor_alt = geo.torsion_alternatives(tor_t, aat)
    tmask = tmask & known[:, None]

    seq_pos = targets.get("seq_position")  # [N] index into the sequences, -1 = none
    per_layer: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("ca", "backbone", "aa", "torsion", "torsion_norm", "edge", "next",
                        "seq_position")}
    for lo in outputs["layers"]:
        rot, trans = lo["rotations"], lo["translations"]
        ca_err = _safe_norm(trans - pos_t[:, rc.CA_IDX])  # [N]
        per_layer["ca"].append(_masked_mean(ca_err.clamp(max=clamp), ca_ok))
        bb = geo.backbone_from_frames(rot, trans)  # [N, 3, 3]
        bb_rmsd = torch.sqrt(((bb - pos_t[:, :3]) ** 2).sum(-1).mean(-1) + 1e-6)
        per_layer["backbone"].append(_masked_mean(bb_rmsd.clamp(max=clamp), bb_ok))
        ce = F.cross_entropy(lo["aa_logits"].float(), aat, reduction="none")
        per_layer["aa"].append(_masked_mean(ce, known))
        pred = lo["torsions"][ar, aat]  # [N, 7, 2]
        err = ((pred - tor_t) ** 2).sum(-1)
        err_alt = ((pred - tor_alt) ** 2).sum(-1)
        per_layer["torsion"].append(_masked_mean(torch.minimum(err, err_alt), tmask))
        raw = lo["torsions_unnorm"][ar, aat]  # [N, 7, 2]
        per_layer["torsion_norm"].append(_masked_mean((_safe_norm(raw) - 1.0).abs(), tmask))
        e_idx = lo["edge_index"]  # [N, k]
        if e_idx.shape[1] > 0:
            is_next = (e_idx == next_node[:, None]) & (next_node[:, None] >= 0)
            is_prev = (e_idx == prev_node[:, None]) & (prev_node[:, None] >= 0)
            tgt = (is_next | is_prev).float()
            per_layer["edge"].append(F.binary_cross_entropy_with_logits(
                lo["edge_logits"].float(), tgt))
            per_layer["next"].append(F.binary_cross_entropy_with_logits(
                lo["next_logits"].float(), is_next.float()))
        else:
            zero = trans.sum() * 0.0
            per_layer["edge"].append(zero)
            per_layer["next"].append(zero)
        per_layer["seq_position"].append(_position_nll(lo.get("seq_position"), seq_pos, trans))
    terms = {k: torch.stack(v).mean() for k, v in per_layer.items()}

    # Last layer: full atom from predicted frames + torsions of the true residue type.
    last = outputs["layers"][-1]
    pred_tor = last["torsions"][ar, aat]  # [N, 7, 2]
    atoms, pmask = geo.atom37_from_frames(last["rotations"], last["translations"], aat,
                                          pred_tor)  # [N, 37, 3]
    pos_sw, amask_sw = geo.swap_symmetric_atoms(pos_t, amask, aat)
    m1 = (pmask & amask).to(atoms.dtype)
    m2 = (pmask & amask_sw).to(atoms.dtype)
    r1 = torch.sqrt((((atoms - pos_t) ** 2).sum(-1) * m1).sum(-1) / m1.sum(-1).clamp_min(1) + 1e-6)
    r2 = torch.sqrt((((atoms - pos_sw) ** 2).sum(-1) * m2).sum(-1) / m2.sum(-1).clamp_min(1)
                    + 1e-6)
    terms["full_atom"] = _masked_mean(torch.minimum(r1, r2).clamp(max=clamp), known & bb_ok)

    # Confidence: bins of the actual CA error after the last layer (stop-grad).
    with torch.no_grad():
        ca_err = (last["translations"] - pos_t[:, rc.CA_IDX]).norm(dim=-1)
        edges = torch.tensor(cfg.confidence_bins, device=ca_err.device, dtype=ca_err.dtype)
        bins = torch.bucketize(ca_err, edges)
        bins = torch.where(ca_ok, bins, torch.full_like(bins, len(cfg.confidence_bins)))
    terms["confidence"] = F.cross_entropy(outputs["confidence_logits"].float(), bins)

    weights = {
        "ca": cfg.loss_ca, "backbone": cfg.loss_backbone, "aa": cfg.loss_aa,
        "torsion": cfg.loss_torsion, "torsion_norm": cfg.loss_torsion_norm,
        "edge": cfg.loss_edge, "next": cfg.loss_edge, "full_atom": cfg.loss_full_atom,
        "confidence": cfg.loss_confidence, "seq_position": cfg.loss_seq_position,
    }
    total = sum(weights[k] * terms[k] for k in weights)
    out_terms = {k: v.detach() for k, v in terms.items()}
    with torch.no_grad():
        err = (last["translations"] - pos_t[:, rc.CA_IDX]).norm(dim=-1)
        out_terms["ca_rmsd"] = torch.sqrt(_masked_mean(err ** 2, ca_ok))
        acc = (last["aa_logits"].argmax(-1) == aatype).float()
        out_terms["aa_accuracy"] = _masked_mean(acc, known)
        if last.get("seq_position") is not None and seq_pos is not None:
            has = seq_pos >= 0
            hit = (last["seq_position"].argmax(-1) == seq_pos).float()
            out_terms["seq_position_accuracy"] = _masked_mean(hit, has)
    return total, out_terms


def _position_nll(logp: torch.Tensor | None, target: torch.Tensor | None,
                  like: torch.Tensor) -> torch.Tensor:
    """Mean -log p(true position) over nodes with one; logp [N, L], target [N] (-1 = none).
    Zero (keeping the graph) when there is no sequence or no target."""
    if logp is None or target is None:
        return like.sum() * 0.0
    has = (target >= 0) & (target < logp.shape[1])
    if not bool(has.any()):
        return like.sum() * 0.0
    picked = logp[has].gather(1, target[has].long()[:, None])[:, 0]  # [M]
    return -picked.float().mean()
