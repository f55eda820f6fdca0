"""Linking refined residues (graph nodes) into chains (method 3.3).

The graph network returns an unordered set of residues, each with a backbone (N, CA, C)
and, for each of its ``k`` neighbours, the probability that the neighbour is bonded to
it (the previous or the next residue). Chains follow from the peptide bond: for the
residue ``i`` that precedes ``j``, ``|C(i) - N(j)|`` is ~1.33 A, while in the reverse
direction ``|C(j) - N(i)|`` is ~3.5 A or more. So the geometry of a predicted backbone
gives the chain direction as well as the connectivity.

Algorithm (:func:`link_chains`):

1. **Duplicates.** Two nodes whose CAs lie closer than ``cfg.duplicate_distance`` are
   the same residue seen twice (for example from overlapping inference crops); the more
   confident one is kept, the other takes no part in any chain (:func:`find_duplicates`).
2. **Candidate links** ``i -> j`` (C of ``i`` bonded to N of ``j``): ``j`` is a
   neighbour of ``i`` or ``i`` of ``j``, the edge probability (the larger of the two
   rows' predictions) is at least ``cfg.edge_prob_threshold``, ``|C(i) - N(j)| <=
   cfg.max_peptide_bond`` and ``|CA(i) - CA(j)| <= cfg.max_ca_ca``. Its cost is the
   peptide-bond length plus ``cfg.edge_cost_weight * -ln(p)`` (and the same term for the
   learned direction probability when the network gives ``next_logits``).
3. **Assignment.** Each node gets at most one successor and one predecessor: a
   minimum-cost bipartite matching (predecessor side x successor side) on the sparse
   candidate graph, made "optional" with one dummy partner per node whose cost exceeds
   any link, so the matching links as many residues as possible and, among those
   choices, minimises the summed peptide-bond length (the paper's criterion). Branches
   (a node with two plausible successors) are resolved by this optimum. Solved with
   :func:`scipy.sparse.csgraph.min_weight_full_bipartite_matching` (sparse LAPJV).
4. **Cycles** cannot be chains; each is opened at its most expensive link.
5. Chains are read off in N -> C order and returned longest first.

:func:`link_ca_only` is the fallback for CA-only input (no trained graph network, so no
N/C atoms and no edge predictions): CA pairs at ``cfg.ca_only_ca_ca +-
cfg.ca_only_tolerance`` are joined greedily (closest to the ideal first) into
unbranched, acyclic paths. **The direction of such chains is unknown**: each path is
returned starting from its end with the lower node index, which is arbitrary.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

from .config import PostprocessConfig

_N, _CA, _C = 0, 1, 2


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50.0, 50.0)))


def find_duplicates(ca: np.ndarray, score: np.ndarray, distance: float) -> np.ndarray:
    """Keep-mask ``[N]`` with one node of every group of CAs closer than ``distance``.

    Greedy by ``score`` (highest first; ties to the lower index): a node is dropped when
    a kept node lies within ``distance`` of it.
    """
    ca = np.asarray(ca, np.float64)
    n = len(ca)
    keep = np.ones(n, bool)
    if n < 2 or distance <= 0:
        return keep
    pairs = cKDTree(ca).query_pairs(distance, output_type="ndarray")
    if len(pairs) == 0:
        return keep
    order = np.lexsort((np.arange(n), -np.asarray(score, np.float64)))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    neighbours: dict[int, list[int]] = {}
    for a, b in pairs:
        neighbours.setdefault(int(a), []).append(int(b))
        neighbours.setdefault(int(b), []).append(int(a))
    for i in sorted(neighbours, key=lambda v: rank[v]):
        if keep[i]:
            for j in neighbours[i]:
                if rank[j] > rank[i]:
                    keep[j] = False
    return keep


def candidate_links(
    backbone: np.ndarray,
    edge_index: np.ndarray,
    edge_logits: np.ndarray,
    cfg: PostprocessConfig,
    *,
    next_logits: np.ndarray | None = None,
    active: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Possible peptide bonds ``i -> j``: ``(src [M], dst [M], cost [M])``.

    ``backbone`` [N, 3, 3] holds N, CA, C; ``edge_index``/``edge_logits`` [N, k] the
    neighbour lists (-1 = none); ``active`` [N] masks nodes that may take part.
    """
    backbone = np.asarray(backbone, np.float64)
    n = len(backbone)
    edge_index = np.asarray(edge_index, np.int64).reshape(n, -1)
    prob = _sigmoid(np.asarray(edge_logits, np.float64).reshape(n, -1))
    active = np.ones(n, bool) if active is None else np.asarray(active, bool)
    rows = np.repeat(np.arange(n), edge_index.shape[1])
    cols = edge_index.ravel()
    p = prob.ravel()
    nxt = None if next_logits is None else _sigmoid(
        np.asarray(next_logits, np.float64).reshape(n, -1)).ravel()
    ok = (cols >= 0) & (cols < n) & (cols != rows)
    rows, cols, p = rows[ok], cols[ok], p[ok]
    if nxt is not None:
        nxt = nxt[ok]
    ok = active[rows] & active[cols]
    rows, cols, p = rows[ok], cols[ok], p[ok]
    if nxt is not None:
        nxt = nxt[ok]
    if len(rows) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)

    # Undirected edge probability: the larger of the two rows' predictions.
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    key = lo * n + hi
    ukey, inv = np.unique(key, return_inverse=True)
    p_pair = np.zeros(len(ukey))
    np.maximum.at(p_pair, inv, p)
    a, b = ukey // n, ukey % n

    # Both directions of every pair; direction probability where the network gives one:
    # row i says P(j is next of i); row j says P(i is next of j) = 1 - P(j is next of i).
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    pp = np.concatenate([p_pair, p_pair])
    cost = np.zeros(len(src))
    if nxt is not None:
        fwd_key = rows * n + cols  # "cols is next of rows", as predicted by row ``rows``
        order = np.argsort(fwd_key, kind="stable")
        sorted_key, sorted_val = fwd_key[order], nxt[order]

        def lookup(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            at = np.clip(np.searchsorted(sorted_key, keys), 0, len(sorted_key) - 1)
            found = sorted_key[at] == keys
            return found, np.where(found, sorted_val[at], 0.0)

        f1, v1 = lookup(src * n + dst)  # row src: P(dst is next of src)
        f2, v2 = lookup(dst * n + src)  # row dst: P(src is next of dst) = 1 - P(src -> dst)
        count = f1.astype(float) + f2.astype(float)
        p_dir = np.where(count > 0, (v1 + np.where(f2, 1.0 - v2, 0.0)) / np.maximum(count, 1), 1.0)
        cost += cfg.edge_cost_weight * -np.log(np.clip(p_dir, 1e-6, 1.0))

    d_cn = np.linalg.norm(backbone[src, _C] - backbone[dst, _N], axis=1)
    d_ca = np.linalg.norm(backbone[src, _CA] - backbone[dst, _CA], axis=1)
    ok = ((pp >= cfg.edge_prob_threshold) & (d_cn <= cfg.max_peptide_bond)
          & (d_ca <= cfg.max_ca_ca))
    cost = cost + d_cn + cfg.edge_cost_weight * -np.log(np.clip(pp, 1e-6, 1.0))
    return src[ok].astype(np.int64), dst[ok].astype(np.int64), cost[ok]


def match_links(n: int, src: np.ndarray, dst: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Successor of each node (``-1`` = none) from a min-cost optional bipartite matching.

    Rows 0..n-1 are nodes as predecessors, columns 0..n-1 nodes as successors. Row ``n+j``
    (dummy) pairs with column ``j`` ("j has no predecessor") and column ``n+i`` with row
    ``i`` ("i has no successor"), both at cost ``U``; dummy row ``n+j`` and dummy column
    ``n+i`` pair at cost 0 when ``i -> j`` is a candidate (so a chosen link frees both
    dummies), and every dummy row ``n+j`` pairs with dummy column ``n+j``. ``U`` exceeds
    half the dearest link, so adding a link always lowers the total.
    """
    succ = np.full(n, -1, np.int64)
    if len(src) == 0:
        return succ
    big = float(cost.max()) + 1.0
    offset = 1.0  # the sparse solver treats 0 as "no edge": shift every weight
    ar = np.arange(n)
    r = np.concatenate([src, ar, n + ar, n + dst, n + ar])
    c = np.concatenate([dst, n + ar, ar, n + src, n + ar])
    w = np.concatenate([cost, np.full(n, big), np.full(n, big), np.zeros(len(src)),
                        np.zeros(n)]) + offset
    graph = coo_matrix((w, (r, c)), shape=(2 * n, 2 * n)).tocsr()
    graph.sum_duplicates()
    row_ind, col_ind = min_weight_full_bipartite_matching(graph)
    real = (row_ind < n) & (col_ind < n)
    succ[row_ind[real]] = col_ind[real]
    return succ


def break_cycles(succ: np.ndarray, link_cost: dict[tuple[int, int], float]) -> np.ndarray:
    """Open every cycle of the successor map at its most expensive link."""
    succ = succ.copy()
    n = len(succ)
    state = np.zeros(n, np.int8)  # 0 unseen, 1 on current walk, 2 done
    for start in range(n):
        if state[start]:
            continue
        walk = []
        v = start
        while v >= 0 and state[v] == 0:
            state[v] = 1
            walk.append(v)
            v = succ[v]
        if v >= 0 and state[v] == 1:  # closed a cycle starting at v
            cyc = walk[walk.index(v):]
            worst = max(cyc, key=lambda u: link_cost.get((u, int(succ[u])), 0.0))
            succ[worst] = -1
        for u in walk:
            state[u] = 2
    return succ


def chains_from_successors(succ: np.ndarray, active: np.ndarray | None = None) -> list[np.ndarray]:
    """Chains (node indices, N -> C) of an acyclic successor map; longest first.

    Every active node is in exactly one chain (unlinked nodes are chains of length 1).
    """
    n = len(succ)
    active = np.ones(n, bool) if active is None else np.asarray(active, bool)
    has_pred = np.zeros(n, bool)
    has_pred[succ[succ >= 0]] = True
    chains = []
    for start in np.flatnonzero(active & ~has_pred):
        chain = [int(start)]
        v = succ[start]
        while v >= 0:
            chain.append(int(v))
            v = succ[v]
        chains.append(np.asarray(chain, np.int64))
    chains.sort(key=lambda c: (-len(c), int(c[0])))
    return chains


def link_chains(
    backbone: np.ndarray,
    edge_index: np.ndarray,
    edge_logits: np.ndarray,
    cfg: PostprocessConfig,
    *,
    next_logits: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Chains of node indices in N -> C order, longest first (see the module docstring).

    ``backbone`` [N, 3, 3] (N, CA, C; Angstrom), ``edge_index``/``edge_logits`` [N, k],
    optional ``next_logits`` [N, k] and ``confidence`` [N] (decides between duplicates).
    Duplicate nodes are left out; every other node is in exactly one chain.
    """
    backbone = np.asarray(backbone, np.float64)
    n = len(backbone)
    if n == 0:
        return []
    score = np.zeros(n) if confidence is None else np.asarray(confidence, np.float64)
    active = find_duplicates(backbone[:, _CA], score, cfg.duplicate_distance)
    src, dst, cost = candidate_links(backbone, edge_index, edge_logits, cfg,
                                     next_logits=next_logits, active=active)
    succ = match_links(n, src, dst, cost)
    link_cost = {(int(s), int(d)): float(c) for s, d, c in zip(src, dst, cost)}
    succ = break_cycles(succ, link_cost)
    return chains_from_successors(succ, active)


def link_ca_only(
    ca: np.ndarray, cfg: PostprocessConfig, *, score: np.ndarray | None = None
) -> list[np.ndarray]:
    """Chains from CA positions alone (no orientation): greedy CA-CA paths.

    Pairs whose distance is within ``cfg.ca_only_tolerance`` of ``cfg.ca_only_ca_ca`` are
    taken closest-to-ideal first whenever both ends still have fewer than two partners
    and the pair does not close a cycle. The direction is unknown: each path starts at
    its end with the lower node index. Duplicates (``cfg.duplicate_distance``, decided
    by ``score``) are left out. Returned longest first.
    """
    ca = np.asarray(ca, np.float64)
    n = len(ca)
    if n == 0:
        return []
    score = np.zeros(n) if score is None else np.asarray(score, np.float64)
    active = find_duplicates(ca, score, cfg.duplicate_distance)
    pairs = cKDTree(ca).query_pairs(cfg.ca_only_ca_ca + cfg.ca_only_tolerance,
                                    output_type="ndarray")
    adj: list[list[int]] = [[] for _ in range(n)]
    if len(pairs):
        d = np.linalg.norm(ca[pairs[:, 0]] - ca[pairs[:, 1]], axis=1)
        dev = np.abs(d - cfg.ca_only_ca_ca)
        ok = (dev <= cfg.ca_only_tolerance) & active[pairs[:, 0]] & active[pairs[:, 1]]
        pairs, dev = pairs[ok], dev[ok]
        parent = np.arange(n)

        def root(v: int) -> int:
            while parent[v] != v:
                parent[v] = parent[parent[v]]
                v = parent[v]
            return v

        for a, b in pairs[np.argsort(dev, kind="stable")].tolist():
            if len(adj[a]) >= 2 or len(adj[b]) >= 2:
                continue
            ra, rb = root(a), root(b)
            if ra == rb:
                continue
            parent[ra] = rb
            adj[a].append(b)
            adj[b].append(a)
    seen = ~active
    chains = []
    for start in range(n):
        if seen[start] or len(adj[start]) > 1:
            continue
        chain = [start]
        seen[start] = True
        prev, v = -1, start
        while True:
            nxt = [u for u in adj[v] if u != prev]
            if not nxt:
                break
            prev, v = v, nxt[0]
            chain.append(v)
            seen[v] = True
        chains.append(np.asarray(chain, np.int64))
    chains.sort(key=lambda c: (-len(c), int(c[0])))
    return chains
