"""Compare a built model with a deposited model (and CA point sets with deposited CAs).

Residues are paired by their CA atoms: every deposited CA is matched to at most one
predicted CA, and every predicted CA to at most one deposited CA, and only pairs no
farther apart than ``match_distance`` (3 A, as in the method paper) can be matched.
Among all such one-to-one matchings the one with the most pairs is taken and, among
those, the one with the smallest sum of CA-CA distances (an optimal assignment, solved
exactly on the sparse graph of candidate pairs, one connected component at a time).

Figures (``None`` where the denominator is zero):

* residue recall = matched pairs / deposited residues
* precision = matched pairs / predicted residues
* sequence recall = matched pairs whose residue types agree / deposited residues
  (the paper's "sequence recall"; a deposited unknown residue (UNK) never agrees)
* sequence match = matched pairs whose residue types agree / matched pairs
* backbone RMSD = root mean square distance over the N, CA, C, O atoms of matched pairs,
  counting an atom only where both residues have it
* CA RMSD = root mean square CA-CA distance over matched pairs
* confidence correlation = Pearson correlation, over matched pairs, between the
  predicted model's CA B-factor (read as confidence, higher = more confident) and minus
  the CA-CA distance; positive when confident residues are the accurate ones. ``None``
  with fewer than 3 pairs, constant confidence, or CA distances that all agree within
  1e-3 A.

Pure numpy/scipy: no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

from . import residue_constants as rc
from .errors import ModelAngeloError
from .protein import Protein, load_protein

BACKBONE_ATOMS: tuple[int, ...] = (rc.N_IDX, rc.CA_IDX, rc.C_IDX, rc.O_IDX)
CONFIDENCE_MODES: tuple[str, ...] = ("auto", "bfactor", "none")
# Components of the candidate graph with more (rows x columns) than this are solved with
# the sparse assignment solver instead of a dense cost matrix.
DENSE_LIMIT: int = 250_000


# --------------------------------------------------------------------------- matching


def _as_points(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 3), np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{what} must have shape [N, 3], got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} holds non-finite coordinates")
    return a


def match_points(
    deposited: np.ndarray,
    predicted: np.ndarray,
    max_distance: float,
    *,
    dense_limit: int = DENSE_LIMIT,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimal one-to-one matching of two point sets within ``max_distance``.

    Returns ``(dep_idx, pred_idx, distance)``, each ``[K]``, sorted by ``dep_idx``: the
    matching with the largest number of pairs at distance <= ``max_distance`` and, among
    those, the smallest sum of distances.
    """
    a = _as_points(deposited, "deposited points")
    b = _as_points(predicted, "predicted points")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if len(a) == 0 or len(b) == 0:
        return empty
    pairs = cKDTree(a).sparse_distance_matrix(cKDTree(b), float(max_distance),
                                             output_type="ndarray")
    if len(pairs) == 0:
        return empty
    ei = pairs["i"].astype(np.int64)  # [E] deposited index
    ej = pairs["j"].astype(np.int64)  # [E] predicted index
    ed = pairs["v"].astype(np.float64)  # [E] distance
    na, nb = len(a), len(b)
    # Connected components of the bipartite candidate graph (deposited nodes first).
    graph = coo_matrix((np.ones(len(ei)), (ei, na + ej)), shape=(na + nb, na + nb))
    _, labels = connected_components(graph, directed=False)
    edge_comp = labels[ei]  # [E]
    order = np.argsort(edge_comp, kind="stable")
    ei, ej, ed, edge_comp = ei[order], ej[order], ed[order], edge_comp[order]
    starts = np.flatnonzero(np.r_[True, edge_comp[1:] != edge_comp[:-1]])
    ends = np.r_[starts[1:], len(edge_comp)]
    single = ends - starts == 1
    # A component with one candidate pair is matched as it is.
    out_i = [ei[starts[single]]]
    out_j = [ej[starts[single]]]
    out_d = [ed[starts[single]]]
    for s, e in zip(starts[~single], ends[~single]):
        i_loc, j_loc, d_loc = _assign_component(ei[s:e], ej[s:e], ed[s:e], max_distance,
                                                dense_limit)
        out_i.append(i_loc)
        out_j.append(j_loc)
        out_d.append(d_loc)
    mi = np.concatenate(out_i)
    mj = np.concatenate(out_j)
    md = np.concatenate(out_d)
    order = np.argsort(mi, kind="stable")
    return mi[order], mj[order], md[order]


def _assign_component(ei: np.ndarray, ej: np.ndarray, ed: np.ndarray, max_distance: float,
                      dense_limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max-cardinality, min-total-distance matching of one component's candidate pairs."""
    rows, ri = np.unique(ei, return_inverse=True)
    cols, ci = np.unique(ej, return_inverse=True)
    nr, nc = len(rows), len(cols)
    # A missing pair costs more than any possible sum of pair costs, so the solver first
    # uses as many real pairs as it can and only then minimises their total distance.
    big = (float(max_distance) + 2.0) * (min(nr, nc) + 1)
    if nr * nc <= dense_limit:
        cost = np.full((nr, nc), big)
        cost[ri, ci] = ed
        is_edge = np.zeros((nr, nc), bool)
        is_edge[ri, ci] = True
        r, c = linear_sum_assignment(cost)
        keep = is_edge[r, c]
        r, c = r[keep], c[keep]
        return rows[r], cols[c], cost[r, c]
    # Sparse solver: every row also gets a private "unmatched" column costing ``big``, so a
    # full matching of the rows always exists. Real pairs cost 1 + d (weights must be > 0).
    data = np.r_[1.0 + ed, np.full(nr, big)]
    r_idx = np.r_[ri, np.arange(nr)]
    c_idx = np.r_[ci, nc + np.arange(nr)]
    biadj = csr_matrix((data, (r_idx, c_idx)), shape=(nr, nc + nr))
    r, c = min_weight_full_bipartite_matching(biadj)
    keep = c < nc
    r, c = r[keep], c[keep]
    dist = np.asarray(biadj[r, c]).ravel() - 1.0
    return rows[r], cols[c], dist


# --------------------------------------------------------------------------- results


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def _rms(sq_sum: float, n: int) -> float | None:
    return float(np.sqrt(sq_sum / n)) if n else None


@dataclass
class ChainEvaluation:
    """Figures for one deposited chain."""

    name: str
    n_residues: int
    n_matched: int
    n_sequence_matched: int
    recall: float | None
    sequence_recall: float | None
    sequence_match: float | None
    backbone_rmsd: float | None
    ca_rmsd: float | None
    # Predicted chains holding residues matched to this chain -> matched residues, most first.
    predicted_chains: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_residues": self.n_residues,
            "n_matched": self.n_matched,
            "n_sequence_matched": self.n_sequence_matched,
            "recall": self.recall,
            "sequence_recall": self.sequence_recall,
            "sequence_match": self.sequence_match,
            "backbone_rmsd": self.backbone_rmsd,
            "ca_rmsd": self.ca_rmsd,
            "predicted_chains": dict(self.predicted_chains),
        }


@dataclass
class EvaluationResult:
    """A predicted model compared with a deposited model (see the module docstring)."""

    match_distance: float
    n_deposited: int
    n_predicted: int
    n_matched: int
    n_sequence_matched: int
    n_deposited_chains: int
    n_predicted_chains: int
    residue_recall: float | None
    precision: float | None
    sequence_recall: float | None
    sequence_match: float | None
    backbone_rmsd: float | None
    n_backbone_atoms: int  # atom pairs behind backbone_rmsd
    ca_rmsd: float | None
    confidence_correlation: float | None
    confidence_source: str  # "bfactor" when B-factors were read as confidence, else "none"
    chains: list[ChainEvaluation]
    # Matched pairs: residue indices into the deposited / predicted Protein, CA distances.
    matched_deposited: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    matched_predicted: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    ca_distances: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    predicted_path: str | None = None
    deposited_path: str | None = None

    def to_dict(self, include_pairs: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "predicted_path": self.predicted_path,
            "deposited_path": self.deposited_path,
            "match_distance": self.match_distance,
            "n_deposited": self.n_deposited,
            "n_predicted": self.n_predicted,
            "n_matched": self.n_matched,
            "n_sequence_matched": self.n_sequence_matched,
            "n_deposited_chains": self.n_deposited_chains,
            "n_predicted_chains": self.n_predicted_chains,
            "residue_recall": self.residue_recall,
            "precision": self.precision,
            "sequence_recall": self.sequence_recall,
            "sequence_match": self.sequence_match,
            "backbone_rmsd": self.backbone_rmsd,
            "n_backbone_atoms": self.n_backbone_atoms,
            "ca_rmsd": self.ca_rmsd,
            "confidence_correlation": self.confidence_correlation,
            "confidence_source": self.confidence_source,
            "chains": [c.to_dict() for c in self.chains],
        }
        if include_pairs:
            d["pairs"] = {
                "deposited": self.matched_deposited.tolist(),
                "predicted": self.matched_predicted.tolist(),
                "ca_distance": [round(float(x), 4) for x in self.ca_distances],
            }
        return d

    def to_json(self, include_pairs: bool = False, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(include_pairs), indent=indent)

    def format_table(self) -> str:
        """A readable text table: totals, then one row per deposited chain."""

        def pct(x: float | None) -> str:
            return "-" if x is None else f"{100.0 * x:.1f} %"

        def ang(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f} A"

        lines = []
        if self.predicted_path or self.deposited_path:
            lines.append(f"predicted  {self.predicted_path or '-'}")
            lines.append(f"deposited  {self.deposited_path or '-'}")
        lines.append(f"predicted {self.n_predicted} residues in {self.n_predicted_chains} chains; "
                     f"deposited {self.n_deposited} residues in {self.n_deposited_chains} chains")
        lines.append(f"residues paired one-to-one by CA within {self.match_distance:g} A")
        lines.append("")
        rows = [
            ("residue recall", pct(self.residue_recall),
             f"{self.n_matched} / {self.n_deposited} deposited residues"),
            ("precision", pct(self.precision),
             f"{self.n_matched} / {self.n_predicted} predicted residues"),
            ("sequence recall", pct(self.sequence_recall),
             f"{self.n_sequence_matched} / {self.n_deposited} deposited residues"),
            ("sequence match", pct(self.sequence_match),
             f"{self.n_sequence_matched} / {self.n_matched} matched residues"),
            ("backbone RMSD", ang(self.backbone_rmsd),
             f"N, CA, C, O: {self.n_backbone_atoms} atoms"),
            ("CA RMSD", ang(self.ca_rmsd), f"{self.n_matched} matched residues"),
        ]
        if self.confidence_source == "none":
            rows.append(("confidence vs -CA error", "-", "no confidence in predicted B-factors"))
        else:
            r = self.confidence_correlation
            rows.append(("confidence vs -CA error", "-" if r is None else f"r = {r:+.3f}",
                         "Pearson, predicted CA B-factor as confidence"))
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines += [f"{a:<{w0}}  {b:>{w1}}   {c}" for a, b, c in rows]
        lines.append("")
        header = ("chain", "residues", "matched", "recall", "seq.recall", "bb RMSD", "CA RMSD",
                  "predicted chains")
        table = [header]
        for c in self.chains:
            cover = ", ".join(f"{k} ({v})" for k, v in c.predicted_chains.items()) or "-"
            table.append((c.name, str(c.n_residues), str(c.n_matched), pct(c.recall),
                          pct(c.sequence_recall), ang(c.backbone_rmsd), ang(c.ca_rmsd), cover))
        widths = [max(len(row[k]) for row in table) for k in range(len(header) - 1)]
        for row in table:
            cells = [row[0].ljust(widths[0])]
            cells += [row[k].rjust(widths[k]) for k in range(1, len(widths))]
            lines.append("  ".join(cells + [row[-1]]).rstrip())
        return "\n".join(lines)


# --------------------------------------------------------------------------- models


def _confidence_values(predicted: Protein, mode: str) -> np.ndarray | None:
    """Predicted per-residue confidence [N] from CA B-factors, or None."""
    if mode == "none" or len(predicted) == 0:
        return None
    conf = predicted.b_factors[:, rc.CA_IDX].astype(np.float64)
    if mode == "bfactor":
        return conf
    # auto: confidence is written as 0..100 (higher = more confident); a constant column
    # (e.g. every B-factor 0 or 20) carries no confidence.
    if conf.min() < 0.0 or conf.max() > 100.0 or np.ptp(conf) == 0.0:
        return None
    return conf


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation of ``x`` and ``y``; None for fewer than 3 values or no spread."""
    if len(x) < 3:
        return None
    x = x - x.mean()
    y = y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    if not den > 0.0:
        return None
    return float((x * y).sum() / den)


def evaluate_models(
    predicted: Protein,
    deposited: Protein,
    *,
    match_distance: float = 3.0,
    confidence: str = "auto",
) -> EvaluationResult:
    """Compare ``predicted`` with ``deposited`` (see the module docstring for the figures).

    ``confidence``: "auto" reads the predicted CA B-factors as confidence when they vary
    and lie in 0..100 (how built models store it), "bfactor" always reads them, "none"
    never does.
    """
    if not match_distance > 0.0 or not np.isfinite(match_distance):
        raise ModelAngeloError(f"match distance must be a positive number of Angstrom, "
                               f"got {match_distance}")
    if confidence not in CONFIDENCE_MODES:
        raise ModelAngeloError(f"confidence must be one of {', '.join(CONFIDENCE_MODES)}, "
                               f"got {confidence!r}")
    di, pj, dist = match_points(deposited.ca, predicted.ca, match_distance)
    k = len(di)
    dep_type = deposited.aatype[di]
    same = (dep_type == predicted.aatype[pj]) & (dep_type < rc.NUM_RESTYPES)  # [K]

    bb = list(BACKBONE_ATOMS)
    both = deposited.atom_mask[di][:, bb] & predicted.atom_mask[pj][:, bb]  # [K, 4]
    diff = (deposited.atom_positions[di][:, bb].astype(np.float64)
            - predicted.atom_positions[pj][:, bb].astype(np.float64))  # [K, 4, 3]
    sq_bb = np.where(both, (diff * diff).sum(-1), 0.0)  # [K, 4]
    sq_ca = dist * dist  # [K]

    conf_all = _confidence_values(predicted, confidence)
    # Errors that differ only by float32 rounding (e.g. a rigid shift) correlate with nothing.
    corr = None
    if conf_all is not None and k and np.ptp(dist) > 1e-3:
        corr = pearson(conf_all[pj], -dist)

    chains = []
    pred_names = list(predicted.chain_names)
    for ci, name in enumerate(deposited.chain_names):
        n_res = int((deposited.chain_index == ci).sum())
        sel = deposited.chain_index[di] == ci  # [K]
        n_m = int(sel.sum())
        n_s = int(same[sel].sum())
        cover: dict[str, int] = {}
        if n_m:
            idx, counts = np.unique(predicted.chain_index[pj[sel]], return_counts=True)
            for pi, cnt in sorted(zip(idx.tolist(), counts.tolist()), key=lambda t: (-t[1], t[0])):
                cover[pred_names[pi]] = cover.get(pred_names[pi], 0) + int(cnt)
        chains.append(ChainEvaluation(
            name=name, n_residues=n_res, n_matched=n_m, n_sequence_matched=n_s,
            recall=_ratio(n_m, n_res), sequence_recall=_ratio(n_s, n_res),
            sequence_match=_ratio(n_s, n_m),
            backbone_rmsd=_rms(float(sq_bb[sel].sum()), int(both[sel].sum())),
            ca_rmsd=_rms(float(sq_ca[sel].sum()), n_m),
            predicted_chains=cover,
        ))

    n_s = int(same.sum())
    return EvaluationResult(
        match_distance=float(match_distance),
        n_deposited=len(deposited),
        n_predicted=len(predicted),
        n_matched=k,
        n_sequence_matched=n_s,
        n_deposited_chains=len(np.unique(deposited.chain_index)),
        n_predicted_chains=len(np.unique(predicted.chain_index)),
        residue_recall=_ratio(k, len(deposited)),
        precision=_ratio(k, len(predicted)),
        sequence_recall=_ratio(n_s, len(deposited)),
        sequence_match=_ratio(n_s, k),
        backbone_rmsd=_rms(float(sq_bb.sum()), int(both.sum())),
        n_backbone_atoms=int(both.sum()),
        ca_rmsd=_rms(float(sq_ca.sum()), k),
        confidence_correlation=corr,
        confidence_source="none" if conf_all is None else "bfactor",
        chains=chains,
        matched_deposited=di,
        matched_predicted=pj,
        ca_distances=dist,
    )


def evaluate_files(
    predicted_path: str | Path,
    deposited_path: str | Path,
    **kw: Any,
) -> EvaluationResult:
    """:func:`evaluate_models` on two structure files (mmCIF/PDB, optionally ``.gz``)."""
    proteins = []
    for what, path in (("predicted", predicted_path), ("deposited", deposited_path)):
        path = Path(path)
        if not path.is_file():
            raise ModelAngeloError(f"{what} model {path} does not exist or is not a file")
        proteins.append(load_protein(path))
    result = evaluate_models(proteins[0], proteins[1], **kw)
    result.predicted_path = str(predicted_path)
    result.deposited_path = str(deposited_path)
    return result


# --------------------------------------------------------------------------- points


@dataclass
class PointEvaluation:
    """Detected CA points compared with deposited CAs (the CNN stage)."""

    n_points: int
    n_deposited: int
    radius: float  # distance for precision and the one-to-one figures
    recall_2a: float | None  # deposited CAs with any point within 2 A / deposited CAs
    recall_3a: float | None  # deposited CAs with any point within 3 A / deposited CAs
    precision: float | None  # points within `radius` of any deposited CA / points
    n_matched: int  # one-to-one pairs within `radius`
    recall_one_to_one: float | None  # n_matched / deposited CAs
    precision_one_to_one: float | None  # n_matched / points
    rmsd_one_to_one: float | None  # RMS distance of the one-to-one pairs

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_points": self.n_points,
            "n_deposited": self.n_deposited,
            "radius": self.radius,
            "recall_2a": self.recall_2a,
            "recall_3a": self.recall_3a,
            "precision": self.precision,
            "n_matched": self.n_matched,
            "recall_one_to_one": self.recall_one_to_one,
            "precision_one_to_one": self.precision_one_to_one,
            "rmsd_one_to_one": self.rmsd_one_to_one,
        }


def _within(query: np.ndarray, tree: cKDTree | None, r: float) -> np.ndarray:
    """[len(query)] bool: a tree point lies within ``r`` (inclusive) of each query point."""
    if tree is None or len(query) == 0:
        return np.zeros(len(query), bool)
    d, _ = tree.query(query, k=1, distance_upper_bound=r * (1 + 1e-12))
    return np.isfinite(d) & (d <= r)


def evaluate_points(points: np.ndarray, deposited_ca: np.ndarray, *,
                    radius: float = 3.0) -> PointEvaluation:
    """Compare points ``[M, 3]`` (e.g. CNN CA peaks) with deposited CA positions ``[N, 3]``.

    Recall at 2 and 3 A counts each deposited CA that has any point that close (points may
    be shared); precision counts each point within ``radius`` of any deposited CA. The
    one-to-one figures use the same optimal matching as :func:`evaluate_models`.
    """
    if not radius > 0.0 or not np.isfinite(radius):
        raise ValueError(f"radius must be positive, got {radius}")
    p = _as_points(points, "points")
    a = _as_points(deposited_ca, "deposited CA positions")
    tp = cKDTree(p) if len(p) else None
    ta = cKDTree(a) if len(a) else None
    di, _, dist = match_points(a, p, radius)
    k = len(di)
    return PointEvaluation(
        n_points=len(p),
        n_deposited=len(a),
        radius=float(radius),
        recall_2a=_ratio(_within(a, tp, 2.0).sum(), len(a)),
        recall_3a=_ratio(_within(a, tp, 3.0).sum(), len(a)),
        precision=_ratio(_within(p, ta, radius).sum(), len(p)),
        n_matched=k,
        recall_one_to_one=_ratio(k, len(a)),
        precision_one_to_one=_ratio(k, len(p)),
        rmsd_one_to_one=_rms(float((dist * dist).sum()), k),
    )
