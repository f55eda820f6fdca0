"""From the graph network's residues to the two models (method 3.3): ``build_models``.

Steps:

1. **Chains** (:mod:`.chains`): nodes linked by peptide bonds, N -> C; chains shorter than
   ``cfg.unpruned_min_chain_length`` are dropped. CA-only predictions (no trained graph
   network, :func:`prediction_from_points`) use the greedy CA-CA fallback, whose chain
   direction is arbitrary, and give CA-only residues of unknown type (UNK).
2. **Sequences** (:mod:`.alignment`): each chain's profile HMM (from the network's
   residue-type probabilities and confidence) is aligned to the given sequences; a chain
   is *assigned* to its best hit when the E-value is at most ``cfg.hmm_evalue``.
   Then gap filling (:func:`fill_sequence_gaps`): chains still unassigned are aligned
   to the stretches of sequence the pruned chains leave uncovered, and assigned when the
   hit is good enough there and their ends can reach the flanking residues in space.
   Without sequences, one HMM per chain is returned instead (``BuiltModels.hmms``, named
   by chain ID) for ``modelangelo search``.
3. **Residue types and numbers.** Unassigned chains: the network's most probable type,
   numbered 1..n. Assigned chains: nodes aligned to the sequence are numbered by their
   sequence position (1-based); walking N -> C, a node that is not aligned, or whose
   position would not increase the numbering (after an insertion), takes the previous
   number + 1, and the nodes before the first aligned one count down from it (numbers
   may go below 1 or past the sequence end). In the unpruned model a residue whose
   number lies inside the sequence takes the sequence's residue there (the alignment's
   register carried over small gaps and chain ends), others keep the network's type.
   An unpruned chain points at its FASTA entity in the mmCIF only when every number
   lies inside the sequence; otherwise it gets its own entity (``chain_entity`` None).
4. **Atoms**: :func:`.geometry.atom37_from_frames` from the node's backbone frame and
   the torsions the network predicted for the chosen residue type (ideal bond
   geometry); the C-terminal OXT is added when writing.
5. **Pruned model** (only with sequences) - a chain is kept when it is assigned,
   has at least ``cfg.min_chain_length`` nodes, ``aligned_fraction >=
   cfg.prune_min_aligned_fraction`` (nodes on HMM match states / nodes) and ``identity >=
   cfg.prune_min_identity`` (aligned nodes whose most probable type is the sequence's
   residue). Of a kept chain only the aligned residues stay, plus unaligned runs that
   exactly fill the sequence gap between two aligned residues; all take the sequence's
   residue types and positions. Fragments of one sequence that follow each other in
   sequence and can reach each other in space join into one chain with a numbering gap
   (:func:`merge_fragments`). Chain names are those of the unpruned model (a merged
   chain takes its first fragment's).
6. **B-factors** = the node's confidence (0-100) on every atom.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import residue_constants as rc
from .alignment import ChainAlignment, align_chains, align_to_segments, build_hmm
from .chains import link_ca_only, link_chains
from .config import PostprocessConfig
from .prediction import GraphPrediction
from .protein import Protein
from .structure_output import chain_id

CA_ONLY_TOLERANCE = 1e-3  # A: N and C on top of CA marks a CA-only prediction


@dataclass
class BuiltModels:
    unpruned: Protein
    pruned: Protein | None  # None without sequences
    chain_info: list[dict]  # one per unpruned chain (JSON-ready)
    hmms: list = field(default_factory=list)  # plan7.HMM per unpruned chain, no-sequence mode
    chain_entity: list[int | None] = field(default_factory=list)  # per unpruned chain
    pruned_chain_entity: list[int | None] | None = None  # per pruned chain
    chains: list[np.ndarray] = field(default_factory=list)  # node indices per unpruned chain


# ----------------------------------------------------------------------------------
# CA-only predictions
# ----------------------------------------------------------------------------------


def prediction_from_points(xyz: np.ndarray, prob: np.ndarray | None = None,
                           k: int = 8) -> GraphPrediction:
    """A CA-only :class:`GraphPrediction` from detected CA points (no graph network).

    N and C sit on CA (no orientation), frames are identities, residue types uniform,
    edges the ``k`` nearest points with probability 0.5; confidence = ``prob`` * 100.
    ``build_models`` recognises such predictions (:func:`is_ca_only`).
    """
    from scipy.spatial import cKDTree

    xyz = np.asarray(xyz, np.float32).reshape(-1, 3)
    n = len(xyz)
    prob = np.ones(n, np.float32) if prob is None else np.asarray(prob, np.float32)
    kk = min(k, max(n - 1, 0))
    edge_index = np.full((n, k), -1, np.int64)
    if kk > 0:
        _, nb = cKDTree(xyz).query(xyz, kk + 1)
        edge_index[:, :kk] = nb[:, 1:]
    torsions = np.zeros((n, 20, 7, 2), np.float32)
    torsions[..., 1] = 1.0
    return GraphPrediction(
        rotations=np.repeat(np.eye(3, dtype=np.float32)[None], n, 0),
        translations=xyz.copy(),
        backbone=np.repeat(xyz[:, None], 3, 1),
        aa_logits=np.zeros((n, 20), np.float32),
        torsions=torsions,
        edge_index=edge_index,
        edge_logits=np.zeros((n, k), np.float32),
        confidence=np.clip(prob * 100.0, 0.0, 100.0).astype(np.float32),
    )


def is_ca_only(pred: GraphPrediction) -> bool:
    """True when the prediction has no backbone orientation (N and C on CA)."""
    if len(pred) == 0:
        return False
    bb = np.asarray(pred.backbone, np.float64)
    d = np.linalg.norm(bb[:, [0, 2]] - bb[:, 1:2], axis=-1)
    return bool(d.max() < CA_ONLY_TOLERANCE)


# ----------------------------------------------------------------------------------
# Numbering
# ----------------------------------------------------------------------------------


def residue_numbers(mapping: np.ndarray) -> np.ndarray:
    """Residue numbers of a chain's nodes from its node -> 0-based sequence-position map.

    Aligned nodes take position + 1 when that increases the numbering; other nodes the
    previous number + 1; nodes before the first aligned one count down from it. With no
    aligned node: 1..n.
    """
    mapping = np.asarray(mapping, np.int64)
    n = len(mapping)
    aligned = np.flatnonzero(mapping >= 0)
    if len(aligned) == 0:
        return np.arange(1, n + 1, dtype=np.int64)
    first = int(aligned[0])
    numbers = np.zeros(n, np.int64)
    numbers[first] = mapping[first] + 1
    numbers[:first] = numbers[first] - np.arange(first, 0, -1)
    for i in range(first + 1, n):
        want = mapping[i] + 1
        numbers[i] = want if mapping[i] >= 0 and want > numbers[i - 1] else numbers[i - 1] + 1
    return numbers


def pruned_nodes(mapping: np.ndarray) -> np.ndarray:
    """Positions (chain-local) kept in the pruned model: aligned nodes plus unaligned runs
    that exactly fill the sequence gap between two aligned nodes."""
    mapping = np.asarray(mapping, np.int64)
    keep = mapping >= 0
    aligned = np.flatnonzero(keep)
    for a, b in zip(aligned[:-1], aligned[1:]):
        if b - a > 1 and mapping[b] - mapping[a] == b - a:
            keep[a + 1:b] = True
    return np.flatnonzero(keep)


def pruned_numbering(mapping: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chain-local positions kept in the pruned model (:func:`pruned_nodes`) and their
    1-based residue numbers (aligned: sequence position + 1; exact gap fill: previous + 1)."""
    mapping = np.asarray(mapping, np.int64)
    local = pruned_nodes(mapping)
    numbers = np.empty(len(local), np.int64)
    aligned = mapping[local] >= 0
    numbers[aligned] = mapping[local][aligned] + 1
    for j in np.flatnonzero(~aligned):
        numbers[j] = numbers[j - 1] + 1
    return local, numbers


def keeps_chain(n_nodes: int, ali: ChainAlignment, cfg: PostprocessConfig) -> bool:
    """Whether an aligned chain goes into the pruned model (module docstring, step 5)."""
    return (ali.assigned and n_nodes >= cfg.min_chain_length
            and ali.aligned_fraction >= cfg.prune_min_aligned_fraction
            and ali.identity >= cfg.prune_min_identity)


def _uncovered_segments(covered: dict[int, set[int]], lengths: list[int],
                        min_length: int) -> list[tuple[int, int, int]]:
    """Maximal runs ``(sequence, start, end)`` (0-based, end exclusive) of at least
    ``min_length`` positions no pruned residue covers, of sequences with a covered
    position (a run must have an assigned neighbour to be checked against)."""
    out = []
    for si, cov in covered.items():
        start = None
        for p in range(lengths[si] + 1):
            free = p < lengths[si] and p not in cov
            if free and start is None:
                start = p
            elif not free and start is not None:
                if p - start >= min_length:
                    out.append((si, start, p))
                start = None
    return out


def _reaches(ca: np.ndarray, flank: list[np.ndarray], residues_between: int,
             cfg: PostprocessConfig) -> bool:
    """Can a chain of ``residues_between`` peptide steps join ``ca`` to any flank CA?"""
    limit = cfg.ca_only_ca_ca * residues_between + cfg.reach_slack
    return any(float(np.linalg.norm(ca - f)) <= limit for f in flank)


def fill_sequence_gaps(chains: list[np.ndarray], alignments: list[ChainAlignment],
                       chain_probs: list[np.ndarray], hmms: list, ca: np.ndarray,
                       sequences: list, cfg: PostprocessConfig) -> list[ChainAlignment]:
    """Second pass of sequence assignment: chains the first search left unassigned (too
    short or too uncertain for a significant hit against whole sequences) are aligned to
    the stretches of sequence the pruned chains leave uncovered (with its profile HMM from
    ``hmms``, one per chain).

    A chain is assigned to its best such stretch when the E-value (over the stretches) is
    at most ``cfg.gap_fill_evalue`` and its first and last aligned CA can reach the
    pruned residues flanking the stretch (any copy, for homo-oligomers): CA distance at
    most ``cfg.ca_only_ca_ca`` per residue between plus ``cfg.reach_slack``; at least
    one flank must be at most ``cfg.reach_max_separation`` residues away (further
    away the distance bound says little, and a short chain's best hit in a long stretch
    is often in the wrong register). Chains are accepted best E-value first; one whose
    residues would overlap positions already covered is skipped. Returns the alignments
    with the new assignments in place.
    """
    if cfg.gap_fill_evalue <= 0:  # off
        return alignments
    lengths = [len(s.sequence) for s in sequences]
    covered: dict[int, set[int]] = {}
    flank_ca: dict[tuple[int, int], list[np.ndarray]] = {}

    def cover(ci: int, ali: ChainAlignment) -> None:
        local, numbers = pruned_numbering(ali.mapping)
        cov = covered.setdefault(ali.sequence_index, set())
        for j, num in zip(local, numbers):
            cov.add(int(num) - 1)
            flank_ca.setdefault((ali.sequence_index, int(num) - 1), []).append(
                ca[chains[ci][j]])

    for ci, ali in enumerate(alignments):
        if keeps_chain(len(chains[ci]), ali, cfg):
            cover(ci, ali)
    segments = _uncovered_segments(covered, lengths, cfg.min_chain_length)
    if not segments:
        return alignments
    candidates = []
    for ci, ali in enumerate(alignments):
        if ali.assigned or len(chains[ci]) < cfg.min_chain_length:
            continue
        new = align_to_segments(chain_probs[ci], sequences, segments, chain=ci,
                                hmm=hmms[ci], cfg=cfg)
        if new is None or not keeps_chain(len(chains[ci]), new, cfg):
            continue
        aligned = np.flatnonzero(new.mapping >= 0)
        i1, i2 = int(aligned[0]), int(aligned[-1])
        q1, q2 = int(new.mapping[i1]), int(new.mapping[i2])
        seg = next(sg for sg in segments if sg[0] == new.sequence_index and sg[1] <= q1 < sg[2])
        si, a, b = seg
        flanks = []  # (flank CA list, residues between)
        if a > 0:
            flanks.append((flank_ca[(si, a - 1)], ca[chains[ci][i1]], q1 - (a - 1)))
        if b < lengths[si]:
            flanks.append((flank_ca[(si, b)], ca[chains[ci][i2]], b - q2))
        if (all(_reaches(end, fl, n, cfg) for fl, end, n in flanks)
                and any(n <= cfg.reach_max_separation for _, _, n in flanks)):
            candidates.append(new)
    out = list(alignments)
    for new in sorted(candidates, key=lambda x: x.evalue):
        _, numbers = pruned_numbering(new.mapping)
        if any(int(n) - 1 in covered.get(new.sequence_index, set()) for n in numbers):
            continue
        out[new.chain] = new
        cover(new.chain, new)
    return out


def merge_fragments(numbers: list[np.ndarray], entity: list[int], first_ca: np.ndarray,
                    last_ca: np.ndarray, cfg: PostprocessConfig) -> list[list[int]]:
    """Group pruned fragments into chains: lists of fragment indices in N -> C order.

    Fragments are taken in order of their first residue number; each joins the chain of
    the same sequence whose last residue precedes its first by at most
    ``cfg.reach_max_separation`` and whose last CA it can reach (``cfg.ca_only_ca_ca``
    per residue between plus ``cfg.reach_slack``), the one with the fewest residues
    between (then the shortest distance); else it starts a chain. Copies of one sequence
    (homo-oligomers) stay apart because a copy's fragments cannot reach the other's.
    """
    order = sorted(range(len(numbers)), key=lambda i: (entity[i], int(numbers[i][0])))
    groups: list[list[int]] = []
    for i in order:
        best, best_key = None, None
        for gi, g in enumerate(groups):
            last = g[-1]
            between = int(numbers[i][0]) - int(numbers[last][-1])
            if entity[last] != entity[i] or not 0 < between <= cfg.reach_max_separation:
                continue
            dist = float(np.linalg.norm(first_ca[i] - last_ca[last]))
            if not _reaches(first_ca[i], [last_ca[last]], between, cfg):
                continue
            key = (between, dist)
            if best_key is None or key < best_key:
                best, best_key = gi, key
        if best is None:
            groups.append([i])
        else:
            groups[best].append(i)
    return groups  # in the order of their first fragments


def _sequence_types(sequence: str, numbers: np.ndarray) -> np.ndarray:
    """Residue types of ``sequence`` at 1-based ``numbers`` (-1 outside the sequence)."""
    seq = np.asarray(rc.aatype_from_sequence(sequence), np.int64)
    out = np.full(len(numbers), -1, np.int64)
    inside = (numbers >= 1) & (numbers <= len(seq))
    out[inside] = seq[numbers[inside] - 1]
    return out


# ----------------------------------------------------------------------------------
# Atoms
# ----------------------------------------------------------------------------------


def _atoms(pred: GraphPrediction, nodes: np.ndarray, aatype: np.ndarray,
           ca_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Atom37 positions [M, 37, 3] and mask [M, 37] for ``nodes`` with types ``aatype``."""
    m = len(nodes)
    if m == 0:
        return np.zeros((0, 37, 3), np.float32), np.zeros((0, 37), bool)
    if ca_only:
        pos = np.zeros((m, 37, 3), np.float32)
        mask = np.zeros((m, 37), bool)
        pos[:, rc.CA_IDX] = pred.translations[nodes]
        mask[:, rc.CA_IDX] = True
        return pos, mask
    import torch

    from .geometry import atom37_from_frames

    probs_type = np.asarray(pred.aa_logits)[nodes].argmax(1)
    tor_type = np.where(aatype < rc.NUM_RESTYPES, aatype, probs_type)  # UNK: any type's psi
    torsions = np.asarray(pred.torsions)[nodes, tor_type]  # [M, 7, 2]
    with torch.no_grad():
        pos, mask = atom37_from_frames(
            torch.as_tensor(np.asarray(pred.rotations)[nodes], dtype=torch.float32),
            torch.as_tensor(np.asarray(pred.translations)[nodes], dtype=torch.float32),
            torch.as_tensor(aatype, dtype=torch.long),
            torch.as_tensor(torsions, dtype=torch.float32))
    return pos.numpy().astype(np.float32), mask.numpy().astype(bool)


def _protein(pred: GraphPrediction, chains: list[np.ndarray], types: list[np.ndarray],
             numbers: list[np.ndarray], names: list[str], ca_only: bool) -> Protein:
    nodes = np.concatenate(chains) if chains else np.zeros(0, np.int64)
    aatype = np.concatenate(types) if types else np.zeros(0, np.int64)
    pos, mask = _atoms(pred, nodes, aatype, ca_only)
    conf = np.clip(np.asarray(pred.confidence, np.float32)[nodes], 0.0, 100.0)
    return Protein(
        atom_positions=pos,
        atom_mask=mask,
        aatype=aatype.astype(np.int64),
        residue_number=(np.concatenate(numbers) if numbers else np.zeros(0)).astype(np.int64),
        chain_index=np.repeat(np.arange(len(chains)), [len(c) for c in chains]).astype(np.int64),
        chain_names=list(names),
        b_factors=np.repeat(conf[:, None], rc.NUM_ATOM_TYPES, 1).astype(np.float32),
    )


# ----------------------------------------------------------------------------------
# build_models
# ----------------------------------------------------------------------------------


def build_models(pred: GraphPrediction, sequences: list | None,
                 cfg: PostprocessConfig | None = None) -> BuiltModels:
    """Chains, residue types, atoms, numbering and pruning (see the module docstring).

    ``sequences``: :class:`~.sequences.SequenceRecord` list, or None/empty for the
    no-sequence mode (unpruned model + one HMM per chain).
    """
    cfg = cfg or PostprocessConfig()
    ca_only = is_ca_only(pred)
    if ca_only:
        chains = link_ca_only(pred.translations, cfg, score=pred.confidence)
    else:
        chains = link_chains(pred.backbone, pred.edge_index, pred.edge_logits, cfg,
                             next_logits=pred.next_logits, confidence=pred.confidence)
    chains = [c for c in chains if len(c) >= cfg.unpruned_min_chain_length]
    names = [chain_id(i) for i in range(len(chains))]
    probs = pred.aa_probs if len(pred) else np.zeros((0, 20))
    conf = np.asarray(pred.confidence, np.float64)
    chain_probs = [probs[c] for c in chains]
    argmax = [p.argmax(1) if not ca_only else np.full(len(p), rc.UNK_INDEX)
              for p in chain_probs]

    sequences = list(sequences or [])
    # One profile HMM per chain: aligned to the sequences (both passes), or returned for
    # ``modelangelo search`` without them.
    chain_hmms = [build_hmm(p, names[i], confidence=conf[c], cfg=cfg,
                            description=f"ChimeraX-ModelAngelo chain {names[i]}, "
                                        f"{len(c)} residues")
                  for i, (c, p) in enumerate(zip(chains, chain_probs))]
    hmms: list = [] if sequences else chain_hmms
    if sequences and chains:
        alignments = align_chains(chain_probs, sequences, cfg=cfg, hmms=chain_hmms)
        if not ca_only:
            alignments = fill_sequence_gaps(chains, alignments, chain_probs, chain_hmms,
                                            pred.translations, sequences, cfg)
    else:
        alignments = [ChainAlignment(i, None, None, None, None, np.full(len(c), -1, np.int64),
                                     0.0, 0.0) for i, c in enumerate(chains)]

    types, numbers, chain_entity = [], [], []
    p_chains, p_types, p_numbers, p_names, p_entity = [], [], [], [], []
    info: list[dict] = []
    for i, (c, ali) in enumerate(zip(chains, alignments)):
        num = residue_numbers(ali.mapping)
        aat = argmax[i].copy()
        entity = None
        kept = 0
        if ali.assigned:
            seq = sequences[ali.sequence_index].sequence
            seq_types = _sequence_types(seq, num)
            inside = seq_types >= 0
            aat[inside] = seq_types[inside]
            if inside.all():
                entity = ali.sequence_index
            if keeps_chain(len(c), ali, cfg):
                local, p_num = pruned_numbering(ali.mapping)
                if len(local) >= cfg.min_chain_length:
                    kept = len(local)
                    p_chains.append(c[local])
                    p_types.append(_sequence_types(seq, p_num))
                    p_numbers.append(p_num)
                    p_names.append(names[i])
                    p_entity.append(ali.sequence_index)
        types.append(aat)
        numbers.append(num)
        chain_entity.append(entity)
        info.append({
            "chain": names[i],
            "residues": int(len(c)),
            "sequence": ali.sequence_name,
            "evalue": ali.evalue,
            "bit_score": ali.score,
            "identity": round(float(ali.identity), 4),
            "aligned_fraction": round(float(ali.aligned_fraction), 4),
            "first_number": int(num[0]),
            "last_number": int(num[-1]),
            "mean_confidence": round(float(conf[c].mean()), 2),
            "gap_filled": bool(ali.gap_filled),
            "in_pruned": kept > 0,
            "pruned_chain": names[i] if kept > 0 else None,  # after merging fragments
            "pruned_residues": int(kept),
        })

    unpruned = _protein(pred, chains, types, numbers, names, ca_only)
    pruned = None
    if sequences and cfg.merge_pruned_fragments and p_chains:
        ca = np.asarray(pred.translations)
        groups = merge_fragments(p_numbers, p_entity, ca[[c[0] for c in p_chains]],
                                 ca[[c[-1] for c in p_chains]], cfg)
        by_name = {i["chain"]: i for i in info}
        for g in groups:
            for k in g:
                by_name[p_names[k]]["pruned_chain"] = p_names[g[0]]
        p_chains = [np.concatenate([p_chains[k] for k in g]) for g in groups]
        p_types = [np.concatenate([p_types[k] for k in g]) for g in groups]
        p_numbers = [np.concatenate([p_numbers[k] for k in g]) for g in groups]
        p_entity = [p_entity[g[0]] for g in groups]
        p_names = [p_names[g[0]] for g in groups]
    if sequences:
        pruned = _protein(pred, p_chains, p_types, p_numbers, p_names, ca_only)
    return BuiltModels(unpruned=unpruned, pruned=pruned, chain_info=info, hmms=hmms,
                       chain_entity=chain_entity,
                       pruned_chain_entity=p_entity if sequences else None, chains=chains)
