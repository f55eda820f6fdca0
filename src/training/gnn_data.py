"""Training examples for the graph network (method 3.2), from simulated maps.

One example (:func:`make_example`), all randomness from the caller's
``numpy.random.Generator`` (same generator state, same example):

1. **Crop.** A random residue of the structure is the centre; the ``crop_nodes``
   residues whose CA is nearest to it (spatially contiguous, all chains) are the crop.
   Residues whose CA lies within ``context`` A of a crop CA, and ligand atoms within
   ``context`` A of a crop CA, are simulated with it, so nodes at the crop's edge see the
   density of their neighbours, as they do inside a large map.
2. **Map.** :func:`.simulate.simulate_map` (resolution, noise, blur, missing chains or
   segments, ligand blobs, detergent, masking all drawn there), then
   :func:`..mapio.normalise` exactly as inference does, then a random contrast scale
   and offset. Residues that the simulation left out (no density) are neither nodes nor
   targets; their sequence stays in the chain sequences.
3. **Nodes**, one of three modes:

   * ``"noise"`` (the paper's recipe): every crop residue is a node at its true CA plus
     Gaussian noise ``e ~ N(0, sigma)`` per coordinate, ``sigma = 1 / sqrt(3)`` A, so
     ``E|e| ~ 0.92 A`` and ``sqrt(E|e|^2) = 1 A``;
   * ``"cnn-like"`` (probability ``cnn_like_prob``): as ``"noise"``, but a fraction of
     the residues is dropped (misses) and false-positive nodes with no target are added:
     on side-chain atoms, on ligand atoms, or at random points in the molecule's
     envelope, always at least ``fp_min_ca_distance`` A from every true CA (so a 3 A
     match could not claim them);
   * ``"cnn"`` (probability ``cnn_nodes_prob``, when a CNN is given): the CA CNN's own
     peaks on the simulated map (:func:`..inference.predict_ca`,
     :func:`..inference.pick_peaks`), matched one-to-one to the true CAs within
     ``match_distance`` A (:func:`..evaluate.match_points`); matched peaks take their
     residue's targets, unmatched peaks near the crop are nodes with target mask 0.

   Node order is shuffled; each node gets a uniformly random initial rotation.
4. **Targets per node** (zeros where ``target_mask`` is 0): atom37 positions and mask,
   residue type, the seven torsions (:func:`..geometry.torsions_from_atom37`, with the
   chain predecessor from the peptide bond), the node indices of the previous and next
   residue of the chain (``-1`` when that residue is not a node), which give the
   chain-neighbour target of every kNN edge (:func:`edge_targets`), and the residue's
   position in the concatenated sequences.
5. **Sequences**: the full sequences of the chains that have nodes, each distinct
   sequence once (homo-oligomer copies once, as :func:`..sequences.unique_sequences`
   gives), in chain order, tokenised as :class:`..model.esm_encoder.ESMEncoder` does.
   With probability ``no_sequence_prob`` there are none (the no-sequence mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from .. import residue_constants as rc
from ..config import Config
from ..mapio import MapGrid, normalise
from ..model.esm_encoder import tokenize
from ..protein import Protein
from .simulate import simulate_map

# atom37 slots that are side chain beyond CB (false positives sit on these).
_SIDE_CHAIN_SLOTS = np.array(
    [i for i, name in enumerate(rc.ATOM_TYPES) if name not in ("N", "CA", "C", "O", "CB", "OXT")]
)


@dataclass
class GNNDataConfig:
    """How training examples are drawn (see the module docstring)."""

    crop_nodes: int = 400  # residues per crop (the paper's crops; GNNConfig.crop_nodes at inference)
    context: float = 10.0  # A: residues / ligands this close to a crop CA are simulated too
    noise_sigma: float = 1.0 / math.sqrt(3.0)  # A per coordinate (paper: N(0, 1/sqrt(3)))
    cnn_like_prob: float = 0.4  # misses + false positives
    cnn_nodes_prob: float = 0.0  # nodes from the CA CNN's peaks (needs a CNN)
    miss_fraction_range: tuple[float, float] = (0.0, 0.08)
    fp_fraction_range: tuple[float, float] = (0.0, 0.10)  # false positives / true nodes
    fp_min_ca_distance: float = 3.0  # A from every true CA
    fp_min_node_distance: float = 2.0  # A from every other node (CNN peaks are NMS'd)
    fp_jitter: float = 0.5  # A, Gaussian jitter of a false positive around its anchor
    match_distance: float = 3.0  # A, peak <-> true CA matching in "cnn" mode
    max_peptide_bond: float = 2.0  # A, C(i-1)-N(i) of chain neighbours
    max_ca_ca_fallback: float = 4.2  # A, chain neighbours when N or C is missing
    no_sequence_prob: float = 0.1
    contrast_range: tuple[float, float] = (0.7, 1.4)
    offset_sd: float = 0.05


@dataclass
class GNNExample:
    """One training example; per-node arrays are ``[M, ...]`` in shuffled node order."""

    grid: MapGrid  # normalised simulated map at the working voxel size
    node_xyz: np.ndarray  # [M, 3] float32 initial CA positions
    init_rotations: np.ndarray  # [M, 3, 3] float32 random initial frames
    target_mask: np.ndarray  # [M] bool: node has a true residue
    residue_index: np.ndarray  # [M] int64 row in ``protein`` (-1: false positive)
    atom_positions: np.ndarray  # [M, 37, 3] float32 true atoms (map frame)
    atom_mask: np.ndarray  # [M, 37] bool
    aatype: np.ndarray  # [M] int64 0..19, 20 = unknown (and false positives)
    torsions: np.ndarray  # [M, 7, 2] float32 (sin, cos)
    torsion_mask: np.ndarray  # [M, 7] bool
    prev_node: np.ndarray  # [M] int64 node index of the previous residue (-1 none)
    next_node: np.ndarray  # [M] int64 node index of the next residue (-1 none)
    seq_position: np.ndarray  # [M] int64 residue's index in the concatenated sequences (-1)
    sequences: list[str]  # distinct full chain sequences of the chains with nodes
    seq_tokens: torch.Tensor  # [B, T] int64 ESM tokens (BOS + residues + EOS, padded)
    protein: Protein  # simulated residues (crop + context) in the map frame
    resolution: float
    mode: str  # "noise", "cnn-like" or "cnn"
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.node_xyz.shape[0])

    @property
    def backbone(self) -> np.ndarray:  # [M, 3, 3] true N, CA, C
        return self.atom_positions[:, [rc.N_IDX, rc.CA_IDX, rc.C_IDX]]


# ------------------------------------------------------------------------ helpers


_ALPHABET = None


def tokenize_sequences(sequences: list[str]) -> torch.Tensor:
    """One-letter sequences -> ESM tokens [B, T], exactly as ``ESMEncoder.tokenize``."""
    global _ALPHABET
    if _ALPHABET is None:
        import esm

        _ALPHABET = esm.Alphabet.from_architecture("ESM-1b")
    return tokenize(sequences, _ALPHABET)


def chain_predecessors(protein: Protein, max_peptide_bond: float = 2.0,
                       max_ca_ca: float = 4.2) -> np.ndarray:
    """Row of each residue's chain predecessor [N] (-1 none).

    Row ``i - 1`` precedes row ``i`` when both are in the same chain and C(i-1)-N(i) is
    at most ``max_peptide_bond`` A (CA-CA at most ``max_ca_ca`` when N or C is missing),
    so chain breaks and left-out residues end a chain.
    """
    n = len(protein)
    prev = np.full(n, -1, np.int64)
    if n < 2:
        return prev
    pos, mask = protein.atom_positions, protein.atom_mask
    same = protein.chain_index[1:] == protein.chain_index[:-1]  # [N-1]
    has_cn = mask[:-1, rc.C_IDX] & mask[1:, rc.N_IDX]
    cn = np.linalg.norm(pos[:-1, rc.C_IDX] - pos[1:, rc.N_IDX], axis=1)
    caca = np.linalg.norm(pos[:-1, rc.CA_IDX] - pos[1:, rc.CA_IDX], axis=1)
    linked = same & np.where(has_cn, cn <= max_peptide_bond, caca <= max_ca_ca)
    prev[1:][linked] = np.arange(n - 1)[linked]
    return prev


def edge_targets(edge_index: torch.Tensor, prev_node: torch.Tensor, next_node: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chain-neighbour targets of kNN edges.

    edge_index [M, k] (-1 = no edge), prev_node / next_node [M] -> (is_neighbour [M, k],
    is_next [M, k]), float 0/1: whether neighbour j of node i is i's previous or next
    residue, and whether it is i's next residue.
    """
    valid = edge_index >= 0
    is_next = (edge_index == next_node[:, None]) & (next_node[:, None] >= 0) & valid
    is_prev = (edge_index == prev_node[:, None]) & (prev_node[:, None] >= 0) & valid
    return (is_next | is_prev).float(), is_next.float()


def _crop_rows(protein: Protein, centre_row: int, crop_nodes: int) -> np.ndarray:
    """Rows of the ``crop_nodes`` residues whose CA is nearest the centre residue's CA."""
    d = np.linalg.norm(protein.ca - protein.ca[centre_row], axis=1)
    k = min(crop_nodes, len(protein))
    rows = np.argpartition(d, k - 1)[:k] if k < len(protein) else np.arange(len(protein))
    return np.sort(rows)


def _sub_protein(protein: Protein, crop: np.ndarray, context: float) -> Protein:
    """Crop + context residues (and nearby ligand atoms); residue_number = full-row index."""
    tree = cKDTree(protein.ca[crop])
    near = np.isfinite(tree.query(protein.ca, distance_upper_bound=context)[0])
    near[crop] = True
    rows = np.flatnonzero(near)
    tagged = Protein(
        atom_positions=protein.atom_positions, atom_mask=protein.atom_mask,
        aatype=protein.aatype, residue_number=np.arange(len(protein), dtype=np.int64),
        chain_index=protein.chain_index, chain_names=list(protein.chain_names),
        b_factors=protein.b_factors,
    )
    sub = tagged.select(np.isin(np.arange(len(protein)), rows))
    other = protein.other_positions.reshape(-1, 3)
    if len(other):
        keep = np.isfinite(tree.query(other, distance_upper_bound=context)[0])
        sub.other_positions = other[keep].astype(np.float32)
        sub.other_elements = [e for e, k in zip(protein.other_elements, keep) if k]
    else:
        sub.other_positions = np.zeros((0, 3), np.float32)
        sub.other_elements = []
    return sub


def _false_positives(rng: np.random.Generator, n_fp: int, target: Protein,
                     crop_rows: np.ndarray, nodes: np.ndarray, dcfg: GNNDataConfig
                     ) -> np.ndarray:
    """Up to ``n_fp`` false-positive points [F, 3] (side chains, ligands, envelope)."""
    if n_fp <= 0 or len(crop_rows) == 0:
        return np.zeros((0, 3), np.float32)
    ca_tree = cKDTree(target.ca)
    sc_mask = target.atom_mask[crop_rows][:, _SIDE_CHAIN_SLOTS]  # [C, S]
    sc_atoms = target.atom_positions[crop_rows][:, _SIDE_CHAIN_SLOTS][sc_mask]  # [A, 3]
    if len(sc_atoms):
        sc_atoms = sc_atoms[ca_tree.query(sc_atoms)[0] >= dcfg.fp_min_ca_distance]
    ligands = target.other_positions.reshape(-1, 3)
    all_atoms = target.atom_positions[crop_rows][target.atom_mask[crop_rows]]  # [A, 3]
    placed: list[np.ndarray] = []
    taken = list(nodes)
    node_tree = cKDTree(np.asarray(taken)) if taken else None
    for _ in range(20 * n_fp):
        if len(placed) >= n_fp:
            break
        kind = rng.random()
        if kind < 0.5 and len(sc_atoms):
            p = sc_atoms[rng.integers(len(sc_atoms))] + rng.normal(0, dcfg.fp_jitter, 3)
        elif kind < 0.7 and len(ligands):
            p = ligands[rng.integers(len(ligands))] + rng.normal(0, dcfg.fp_jitter, 3)
        else:  # somewhere in the envelope: near a random atom of the crop
            p = all_atoms[rng.integers(len(all_atoms))] + rng.normal(0, 1.5, 3)
        if ca_tree.query(p)[0] < dcfg.fp_min_ca_distance:
            continue
        if node_tree is not None and node_tree.query(p)[0] < dcfg.fp_min_node_distance:
            continue
        if placed and np.min(np.linalg.norm(np.asarray(placed) - p, axis=1)) < dcfg.fp_min_node_distance:
            continue
        placed.append(p)
    return np.asarray(placed, np.float32).reshape(-1, 3)


def cnn_peaks(cnn, grid: MapGrid, *, bf16: bool = True) -> np.ndarray:
    """CA peaks [P, 3] of the CNN ``(model, CNNConfig)`` on a normalised map; ``bf16``
    autocast only where the CNN's device has native bf16 (emulated bf16 is many times
    slower, e.g. a GNN trained in bf16 on a GPU while examples are made on the CPU)."""
    from ..inference import pick_peaks, predict_ca
    from .common import native_bf16

    model, cnn_cfg = cnn
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    pred = predict_ca(model, grid, cnn_cfg, device=device, bf16=bf16 and native_bf16(device))
    return pick_peaks(pred, cnn_cfg)[0]


# ------------------------------------------------------------------------ example


def make_example(
    protein: Protein,
    rng: np.random.Generator,
    cfg: Config,
    dcfg: GNNDataConfig | None = None,
    *,
    cnn=None,
    mode: str | None = None,
    resolution: float | None = None,
) -> GNNExample:
    """One training example from ``protein`` (see the module docstring).

    ``cnn`` is ``(CAUNet, CNNConfig)`` for the ``"cnn"`` node mode; ``mode`` forces a
    node mode (``"noise"``, ``"cnn-like"``, ``"cnn"``) instead of drawing it.
    """
    dcfg = dcfg or GNNDataConfig()
    if mode is None:
        r = rng.random()
        if cnn is not None and r < dcfg.cnn_nodes_prob:
            mode = "cnn"
        elif r < dcfg.cnn_nodes_prob + dcfg.cnn_like_prob:
            mode = "cnn-like"
        else:
            mode = "noise"
    if mode == "cnn" and cnn is None:
        raise ValueError("node mode 'cnn' needs a CNN")
    if mode not in ("noise", "cnn-like", "cnn"):
        raise ValueError(f"unknown node mode {mode!r}")

    # 1. Crop and its context.
    centre = int(rng.integers(len(protein)))
    crop_full = _crop_rows(protein, centre, dcfg.crop_nodes)
    sub = _sub_protein(protein, crop_full, dcfg.context)

    # 2. Map.
    sim = simulate_map(sub, rng, cfg.simulation, voxel_size=cfg.map.voxel_size,
                       resolution=resolution)
    grid = normalise(sim.grid)
    contrast = float(rng.uniform(*dcfg.contrast_range))
    offset = float(rng.normal(0.0, dcfg.offset_sd))
    grid = MapGrid(data=(grid.data * contrast + offset).astype(np.float32),
                   voxel_size=grid.voxel_size, origin=grid.origin)
    target = sim.protein  # residue_number = row in the full protein
    full_row = target.residue_number.copy()
    in_crop = np.isin(full_row, crop_full)  # [R]
    crop_rows = np.flatnonzero(in_crop)  # rows of ``target``

    # Chain predecessors and torsions over all simulated residues (context included).
    prev_row = chain_predecessors(target, dcfg.max_peptide_bond, dcfg.max_ca_ca_fallback)
    next_row = np.full(len(target), -1, np.int64)
    has_prev = prev_row >= 0
    next_row[prev_row[has_prev]] = np.flatnonzero(has_prev)
    from ..geometry import torsions_from_atom37

    tors, tors_mask = torsions_from_atom37(
        torch.from_numpy(target.atom_positions.astype(np.float64)),
        torch.from_numpy(target.atom_mask), torch.from_numpy(target.aatype),
        prev_index=torch.from_numpy(prev_row))
    tors = tors.float().numpy()
    tors_mask = tors_mask.numpy()

    # 3. Nodes: (position, target row or -1).
    true_ca = target.ca.astype(np.float64)
    if mode == "cnn":
        peaks = cnn_peaks(cnn, grid, bf16=cfg.train.bf16).astype(np.float64)
        from ..evaluate import match_points

        dep_i, peak_i, _ = match_points(true_ca, peaks, dcfg.match_distance)
        row_of_peak = np.full(len(peaks), -1, np.int64)
        row_of_peak[peak_i] = dep_i
        if len(target) and len(peaks):
            nearest = cKDTree(true_ca).query(peaks)[1]
            near_crop = in_crop[nearest]
        else:
            near_crop = np.zeros(len(peaks), bool)
        keep = np.where(row_of_peak >= 0, in_crop[row_of_peak.clip(0)], near_crop)
        node_xyz = peaks[keep]
        node_row = row_of_peak[keep]
        params = {"cnn_peaks": int(len(peaks)), "cnn_matched_crop": int((node_row >= 0).sum()),
                  "cnn_false": int((node_row < 0).sum())}
    else:
        rows = crop_rows
        params = {}
        if mode == "cnn-like":
            miss = float(rng.uniform(*dcfg.miss_fraction_range))
            rows = rows[rng.random(len(rows)) >= miss]
            params["miss_fraction"] = miss
        noise = rng.normal(0.0, dcfg.noise_sigma, (len(rows), 3))
        node_xyz = true_ca[rows] + noise
        node_row = rows.astype(np.int64)
        if mode == "cnn-like":
            frac = float(rng.uniform(*dcfg.fp_fraction_range))
            n_fp = int(round(frac * len(rows)))
            fp = _false_positives(rng, n_fp, target, crop_rows, node_xyz, dcfg)
            node_xyz = np.concatenate([node_xyz, fp.astype(np.float64)])
            node_row = np.concatenate([node_row, np.full(len(fp), -1, np.int64)])
            params.update(fp_fraction=frac, false_positives=int(len(fp)))
    perm = rng.permutation(len(node_row))
    node_xyz, node_row = node_xyz[perm], node_row[perm]
    m = len(node_row)

    # 4. Targets.
    has = node_row >= 0
    r = node_row.clip(0)
    atom_positions = np.where(has[:, None, None], target.atom_positions[r], 0).astype(np.float32)
    atom_mask = target.atom_mask[r] & has[:, None]
    aatype = np.where(has, target.aatype[r], rc.UNK_INDEX).astype(np.int64)
    torsions = np.where(has[:, None, None], tors[r], np.array([0.0, 1.0], np.float32))
    torsion_mask = tors_mask[r] & has[:, None]
    node_of_row = np.full(len(target), -1, np.int64)
    node_of_row[node_row[has]] = np.flatnonzero(has)
    prev_node = np.where(has & (prev_row[r] >= 0), node_of_row[prev_row[r].clip(0)], -1)
    next_node = np.where(has & (next_row[r] >= 0), node_of_row[next_row[r].clip(0)], -1)

    # 5. Sequences of the chains with nodes (full chains of the input structure).
    chain_start = np.zeros(len(protein.chain_names), np.int64)
    for ci in range(len(protein.chain_names)):
        chain_start[ci] = int(np.flatnonzero(protein.chain_index == ci)[0])
    full_seqs = protein.chain_sequences()  # name -> sequence, in chain order
    node_full_row = np.where(has, full_row[r], -1)
    chains_present = np.unique(protein.chain_index[node_full_row[has]])
    sequences: list[str] = []
    offset_of_seq: dict[str, int] = {}
    total = 0
    seq_position = np.full(m, -1, np.int64)
    use_seq = rng.random() >= dcfg.no_sequence_prob
    if use_seq:
        for ci in chains_present:
            s = full_seqs[protein.chain_names[ci]]
            if s not in offset_of_seq:
                offset_of_seq[s] = total
                sequences.append(s)
                total += len(s)
        node_chain = protein.chain_index[node_full_row.clip(0)]
        for i in np.flatnonzero(has):
            ci = node_chain[i]
            s = full_seqs[protein.chain_names[ci]]
            seq_position[i] = offset_of_seq[s] + node_full_row[i] - chain_start[ci]

    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    from ..geometry import random_rotations

    init_rot = random_rotations(m, generator=gen).numpy().astype(np.float32)
    params.update(sim=sim.params, crop_size=int(len(crop_full)), centre_row=centre,
                  contrast=contrast, offset=offset, n_nodes=m, n_targets=int(has.sum()))
    return GNNExample(
        grid=grid,
        node_xyz=node_xyz.astype(np.float32),
        init_rotations=init_rot,
        target_mask=has,
        residue_index=node_row,
        atom_positions=atom_positions,
        atom_mask=atom_mask,
        aatype=aatype,
        torsions=torsions.astype(np.float32),
        torsion_mask=torsion_mask,
        prev_node=prev_node.astype(np.int64),
        next_node=next_node.astype(np.int64),
        seq_position=seq_position,
        sequences=sequences,
        seq_tokens=tokenize_sequences(sequences),
        protein=target,
        resolution=sim.resolution,
        mode=mode,
        params=params,
    )
