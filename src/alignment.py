"""Profile HMMs from the network's residue-type probabilities; alignment and search (pyhmmer).

A built chain is a row of nodes, each with a probability over the 20 residue types.
That is a profile, so each chain becomes a Plan7 profile HMM with one match state per
node, and HMMER does the rest: the chain's HMM is searched against the user's
sequences to find which protein the chain is and in which register (``align_chains``),
or, with no sequence given, against a FASTA database (``search_profiles``, the
``modelangelo search`` command).

How the HMM is made (:func:`build_hmm`) - built directly, not via a consensus sequence:

* **Match emissions** of node ``i``: ``w_i * p_i + (1 - w_i) * background``, where
  ``p_i`` are the network's probabilities and ``w_i`` rises linearly with the node's
  confidence (0..100) over ``cfg.hmm_prob_weight`` (default 0.5..0.9). Mixing in the
  background keeps a confidently wrong prediction from vetoing an alignment, and lets
  low-confidence nodes count for little. Insert emissions are the background.
* **Transitions** as HMMER's single-sequence models (phmmer): gap open
  ``cfg.hmm_gap_open`` (M->I and M->D each), gap extend ``cfg.hmm_gap_extend``.
  A missing residue in the built chain is an insertion in the sequence (I state); an
  extra node is a deletion (D state).
* **E-value calibration.** HMMER's E-values need per-model Gumbel/exponential
  parameters, which ``hmmbuild`` gets by simulation (``p7_Calibrate``); pyhmmer offers
  that only inside :class:`pyhmmer.plan7.Builder`. So a count-based twin of the model -
  an ungapped alignment of ``_TWIN_SEQUENCES`` sequences whose columns hold the residue
  counts of the match emissions - is built with the Builder (no weighting, effective
  number = number of sequences) and its calibration is copied onto the exact model.
  Checked against 5,000 random sequences: E <= 10 gave 63 hits over 6 models where 60
  are expected (a calibration run on the exact model with pyhmmer's MSV/Forward scores
  was twice too conservative). Takes ~10 ms per chain.

Alternative kept out: a per-chain consensus sequence searched with phmmer would throw
away the per-node uncertainty that makes low-confidence regions cheap to mismatch.

Node/sequence mapping: HMM match state ``k`` is node ``k - 1`` of the chain; from each
accepted domain's alignment, a node on a match column maps to the sequence position on
that column (0-based), nodes on deletion columns and outside the domains map to -1.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyhmmer import easel, plan7

from . import residue_constants as rc
from .config import PostprocessConfig
from .errors import ModelAngeloError, OutputError, SequenceError

AMINO = easel.Alphabet.amino()
_BACKGROUND = plan7.Background(AMINO)
# Column j of easel's amino order (ACDEFGHIKLMNPQRSTVWY) is our residue type _EASEL_TO_RC[j].
_EASEL_TO_RC = np.array([rc.RESTYPE_ORDER[a] for a in AMINO.symbols[:20]], np.int64)
_BG_RC = np.zeros(20)  # background frequencies in our residue order
_BG_RC[_EASEL_TO_RC] = np.asarray(_BACKGROUND.residue_frequencies, np.float64)[:20]
_BG_RC /= _BG_RC.sum()
_TWIN_SEQUENCES = 100  # sequences of the calibration twin (emission resolution 1%)
_CALIBRATION_SEED = 42
_T = plan7.Transitions


@dataclass
class ChainAlignment:
    """Best sequence for one chain (``sequence_index`` None: no significant hit)."""

    chain: int  # index into the chains given to align_chains
    sequence_index: int | None  # index into the sequences, None = not assigned
    sequence_name: str | None
    evalue: float | None  # of the best hit (also reported when not significant)
    score: float | None  # bit score of the best hit
    mapping: np.ndarray  # [L] node -> 0-based position in the sequence, -1 = unaligned
    identity: float  # aligned nodes whose most probable type is the sequence's residue
    aligned_fraction: float  # aligned nodes / chain nodes
    gap_filled: bool = False  # assigned by gap filling (second pass), not the first search

    @property
    def assigned(self) -> bool:
        return self.sequence_index is not None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["mapping"] = self.mapping.tolist()
        return d


@dataclass
class SearchHit:
    """One database sequence hit by a chain's profile (``modelangelo search``)."""

    rank: int  # 1 = best
    name: str
    description: str
    evalue: float
    score: float  # bits
    node_from: int  # first and last aligned node of the chain (1-based, inclusive)
    node_to: int
    target_from: int  # first and last aligned residue of the target (1-based, inclusive)
    target_to: int
    target_length: int


# ----------------------------------------------------------------------------------
# Building profile HMMs
# ----------------------------------------------------------------------------------


def match_emissions(probs: np.ndarray, confidence: np.ndarray | None = None,
                    cfg: PostprocessConfig | None = None) -> np.ndarray:
    """Match emission probabilities [L, 20] (our residue order) of a chain's nodes.

    ``probs`` [L, 20] residue-type probabilities, ``confidence`` [L] 0..100 (None = 100).
    """
    cfg = cfg or PostprocessConfig()
    p = np.asarray(probs, np.float64).reshape(-1, 20)
    p = np.clip(np.nan_to_num(p, nan=0.0), 0.0, None)
    total = p.sum(1, keepdims=True)
    p = np.where(total > 0, p / np.where(total > 0, total, 1.0), _BG_RC)
    conf = np.full(len(p), 100.0) if confidence is None else np.asarray(confidence, np.float64)
    lo, hi = cfg.hmm_prob_weight
    w = lo + (hi - lo) * np.clip(conf, 0.0, 100.0)[:, None] / 100.0
    em = w * p + (1.0 - w) * _BG_RC
    return em / em.sum(1, keepdims=True)


def _twin_counts(em_easel: np.ndarray, k: int) -> np.ndarray:
    """Residue (easel code) of each of ``k`` sequences per column, counts ~ k * emission."""
    cols = []
    for row in em_easel:
        counts = np.floor(row * k).astype(np.int64)
        rest = k - int(counts.sum())
        if rest > 0:
            counts[np.argsort(-(row * k - counts), kind="stable")[:rest]] += 1
        cols.append(np.repeat(np.arange(20), counts))
    return np.stack(cols, 1).astype(np.uint8)  # [k, L]


def _calibrated_twin(em_easel: np.ndarray, name: str) -> plan7.HMM:
    """HMMER's own build + calibration (p7_Calibrate) of a count-based twin model."""
    k = _TWIN_SEQUENCES
    rows = _twin_counts(em_easel, k)
    msa = easel.DigitalMSA(
        AMINO, name=name,
        sequences=[easel.DigitalSequence(AMINO, name=f"t{i}", sequence=rows[i]) for i in range(k)])
    builder = plan7.Builder(AMINO, weighting="none", effective_number=float(k),
                            seed=_CALIBRATION_SEED)
    twin, _, _ = builder.build_msa(msa, _BACKGROUND)
    if twin.M != len(em_easel):
        raise RuntimeError("calibration twin has the wrong length")
    return twin


def build_hmm(probs: np.ndarray, name: str, *, confidence: np.ndarray | None = None,
              cfg: PostprocessConfig | None = None, description: str | None = None) -> plan7.HMM:
    """A calibrated Plan7 profile HMM with one match state per node (module docstring).

    ``probs`` [L, 20] residue-type probabilities in :data:`residue_constants.RESTYPES`
    order, ``confidence`` [L] 0..100. ``L`` must be at least 1.

    The calibrated twin is returned with its probabilities replaced by the exact ones
    (pyhmmer cannot mark E-value parameters set on a fresh ``HMM`` as valid, so they
    would not be written to HMM files).
    """
    cfg = cfg or PostprocessConfig()
    em = match_emissions(probs, confidence, cfg)
    n = len(em)
    if n < 1:
        raise ValueError("a profile HMM needs at least one node")
    em_easel = em[:, _EASEL_TO_RC]  # easel column j <- our type _EASEL_TO_RC[j]
    hmm = _calibrated_twin(em_easel, name)
    np.asarray(hmm.match_emissions)[1:] = em_easel
    np.asarray(hmm.insert_emissions)[:] = _BG_RC[_EASEL_TO_RC]
    t = np.asarray(hmm.transition_probabilities)
    go, ge = cfg.hmm_gap_open, cfg.hmm_gap_extend
    t[:, _T.MM], t[:, _T.MI], t[:, _T.MD] = 1.0 - 2.0 * go, go, go
    t[:, _T.IM], t[:, _T.II] = 1.0 - ge, ge
    t[:, _T.DM], t[:, _T.DD] = 1.0 - ge, ge
    t[0, _T.DM], t[0, _T.DD] = 1.0, 0.0  # node 0 has no D state
    t[n, _T.MM], t[n, _T.MI], t[n, _T.MD] = 1.0 - go, go, 0.0  # last node: no D(n+1)
    t[n, _T.DM], t[n, _T.DD] = 1.0, 0.0
    hmm.name = name
    hmm.description = description or f"ChimeraX-ModelAngelo chain profile, {n} nodes"
    hmm.set_consensus()
    hmm.set_composition()
    hmm.validate()
    return hmm


def write_hmm(hmm: plan7.HMM | Sequence[plan7.HMM], path: str | Path, *,
              overwrite: bool = True) -> Path:
    """Write one HMM (or several) in HMMER3 text format."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; refusing to overwrite it")
    hmms = [hmm] if isinstance(hmm, plan7.HMM) else list(hmm)
    buf = io.BytesIO()
    for h in hmms:
        h.write(buf)
    try:
        path.write_bytes(buf.getvalue())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc
    return path


def read_hmms(path: str | Path) -> list[plan7.HMM]:
    """HMMs of a HMMER3 file, or of every ``*.hmm`` file of a folder (sorted by name)."""
    path = Path(path)
    files = sorted(path.glob("*.hmm")) if path.is_dir() else [path]
    if not path.exists():
        raise ModelAngeloError(f"no such HMM file or folder: {path}")
    out: list[plan7.HMM] = []
    for f in files:
        try:
            with plan7.HMMFile(f, alphabet=AMINO) as fh:
                out.extend(fh)
        except (OSError, ValueError, EOFError) as exc:
            raise ModelAngeloError(f"cannot read HMM file {f}: {exc}") from exc
    return out


# ----------------------------------------------------------------------------------
# Sequences
# ----------------------------------------------------------------------------------

_VALID = set(AMINO.symbols[:20])


def _digital(name: str, sequence: str, description: str = "") -> easel.DigitalSequence:
    text = "".join(ch if ch in _VALID else "X" for ch in sequence.upper())
    return easel.TextSequence(name=name, description=description, sequence=text).digitize(AMINO)


def sequence_block(sequences: Sequence) -> easel.DigitalSequenceBlock:
    """Digital sequences named by their index ("0", "1", ...), for search by index.

    Anything other than the 20 standard letters is searched as X.
    """
    return easel.DigitalSequenceBlock(AMINO, [
        _digital(str(i), s.sequence, s.name) for i, s in enumerate(sequences)])


def read_database(path: str | Path) -> easel.DigitalSequenceBlock:
    """A protein FASTA database, digitised (``SequenceError`` when unreadable)."""
    path = Path(path)
    if not path.is_file():
        raise SequenceError(f"sequence database {path} does not exist")
    try:
        with easel.SequenceFile(path, format="fasta", digital=True, alphabet=AMINO) as fh:
            block = fh.read_block()
    except (OSError, ValueError, EOFError) as exc:
        raise SequenceError(f"cannot read protein FASTA database {path}: {exc}") from exc
    if len(block) == 0:
        raise SequenceError(f"sequence database {path} holds no sequences")
    return block


# ----------------------------------------------------------------------------------
# Alignment
# ----------------------------------------------------------------------------------


def domain_mapping(ali: plan7.Alignment, n_nodes: int) -> np.ndarray:
    """Node -> 0-based target position (-1 = none) from one domain's alignment."""
    mapping = np.full(n_nodes, -1, np.int64)
    k, t = ali.hmm_from - 1, ali.target_from - 1
    for h, s in zip(ali.hmm_sequence, ali.target_sequence):
        if h == ".":  # target residue in an insert state
            t += 1
        elif s == "-":  # node on a delete state
            k += 1
        else:
            mapping[k] = t
            k += 1
            t += 1
    if k != ali.hmm_to or t != ali.target_to:
        raise RuntimeError("unexpected HMMER alignment layout")
    return mapping


def _hit_mapping(hit: plan7.Hit, n_nodes: int, max_evalue: float) -> np.ndarray:
    """Combine a hit's domains (best first) into one co-linear node -> position map."""
    mapping = np.full(n_nodes, -1, np.int64)
    domains = sorted(hit.domains, key=lambda d: -d.score)
    for i, dom in enumerate(domains):
        if i > 0 and dom.i_evalue > max_evalue:
            continue
        m = domain_mapping(dom.alignment, n_nodes)
        nodes = np.flatnonzero(m >= 0)
        if len(nodes) == 0 or (mapping[nodes.min():nodes.max() + 1] >= 0).any():
            continue
        merged = mapping.copy()
        merged[nodes] = m[nodes]
        pos = merged[merged >= 0]
        if np.all(np.diff(pos) > 0):  # keep nodes and sequence in the same order
            mapping = merged
    return mapping


def _pipeline(z: float | None = None, *, max_sensitivity: bool) -> plan7.Pipeline:
    if max_sensitivity:  # small target sets: no filters (every target gets Forward)
        return plan7.Pipeline(AMINO, _BACKGROUND, bias_filter=False, F1=1.0, F2=1.0, F3=1.0,
                              Z=z, domZ=z)
    return plan7.Pipeline(AMINO, _BACKGROUND, Z=z, domZ=z)


def _best_hit(hmm: plan7.HMM, block: easel.DigitalSequenceBlock) -> plan7.Hit | None:
    """The lowest-E-value hit of ``hmm`` in ``block`` (all targets get Forward)."""
    hits = sorted(_pipeline(max_sensitivity=True).search_hmm(hmm, block),
                  key=lambda h: (h.evalue, -h.score))
    return hits[0] if hits else None


def _chain_alignment(ci: int, si: int, record, evalue: float, score: float,
                     mapping: np.ndarray, probs: np.ndarray) -> ChainAlignment:
    """An assigned :class:`ChainAlignment` with identity and aligned fraction filled in."""
    seq = record.sequence.upper()
    aligned = mapping >= 0
    argmax = probs.argmax(1)
    same = [rc.RESTYPE_ORDER.get(seq[p], -1) == a
            for p, a in zip(mapping[aligned], argmax[aligned])]
    return ChainAlignment(ci, si, record.name, float(evalue), float(score), mapping,
                          float(np.mean(same)) if same else 0.0, float(aligned.mean()))


def align_to_segments(
    probs: np.ndarray,
    sequences: Sequence,
    segments: Sequence[tuple[int, int, int]],
    *,
    chain: int,
    hmm: plan7.HMM,
    cfg: PostprocessConfig | None = None,
) -> ChainAlignment | None:
    """Best alignment of one chain to parts of the sequences (the gaps the assigned chains
    leave, :func:`~.postprocess.fill_sequence_gaps`).

    ``segments``: ``(sequence index, start, end)``, 0-based, end exclusive. The chain's
    profile ``hmm`` (:func:`build_hmm` of ``probs``) is searched against each segment as a
    separate target (E-values over
    ``len(segments)`` targets); the best hit with E-value at most ``cfg.gap_fill_evalue``
    is returned as a :class:`ChainAlignment` whose mapping holds positions in the whole
    sequence, else None.
    """
    cfg = cfg or PostprocessConfig()
    probs = np.asarray(probs, np.float64).reshape(-1, 20)
    if len(probs) == 0 or not segments:
        return None
    block = easel.DigitalSequenceBlock(AMINO, [
        _digital(str(k), sequences[si].sequence[a:b]) for k, (si, a, b) in enumerate(segments)])
    best = _best_hit(hmm, block)
    if best is None or best.evalue > cfg.gap_fill_evalue:
        return None
    si, start, _ = segments[int(best.name)]
    mapping = _hit_mapping(best, len(probs), cfg.gap_fill_evalue)
    mapping = np.where(mapping >= 0, mapping + start, -1)
    ali = _chain_alignment(chain, si, sequences[si], best.evalue, best.score, mapping, probs)
    ali.gap_filled = True
    return ali


def align_chains(
    chain_probs: Sequence[np.ndarray],
    sequences: Sequence,
    *,
    confidences: Sequence[np.ndarray] | None = None,
    cfg: PostprocessConfig | None = None,
    hmms: Sequence[plan7.HMM] | None = None,
) -> list[ChainAlignment]:
    """Best sequence for each chain, with a node -> sequence-position map.

    ``chain_probs``: per chain, residue-type probabilities [L, 20]; ``sequences``: records
    with ``.name`` and ``.sequence`` (:class:`~.sequences.SequenceRecord`). A chain is
    assigned to its best hit when the hit's E-value (over ``len(sequences)`` targets) is
    at most ``cfg.hmm_evalue``; several chains may take the same sequence
    (homo-oligomers). ``hmms`` may pass HMMs already built from ``chain_probs``.
    """
    cfg = cfg or PostprocessConfig()
    out: list[ChainAlignment] = []
    if not sequences:
        raise SequenceError("no sequences to align the chains to")
    block = sequence_block(sequences)
    for ci, probs in enumerate(chain_probs):
        probs = np.asarray(probs, np.float64).reshape(-1, 20)
        n = len(probs)
        none = ChainAlignment(ci, None, None, None, None, np.full(n, -1, np.int64), 0.0, 0.0)
        if n == 0:
            out.append(none)
            continue
        if hmms is not None:
            hmm = hmms[ci]
        else:
            conf = None if confidences is None else confidences[ci]
            hmm = build_hmm(probs, f"chain_{ci}", confidence=conf, cfg=cfg)
        best = _best_hit(hmm, block)
        if best is None:
            out.append(none)
            continue
        none.evalue, none.score = float(best.evalue), float(best.score)
        if best.evalue > cfg.hmm_evalue:
            out.append(none)
            continue
        si = int(best.name)
        out.append(_chain_alignment(ci, si, sequences[si], best.evalue, best.score,
                                    _hit_mapping(best, n, cfg.hmm_evalue), probs))
    return out


def search_profiles(
    hmms: Sequence[plan7.HMM],
    database: str | Path | easel.DigitalSequenceBlock | Sequence,
    *,
    top: int | None = 5,
    max_evalue: float = 10.0,
) -> list[list[SearchHit]]:
    """Ranked database hits (best first) for each HMM, as ``hmmsearch`` would report them.

    ``database``: a protein FASTA path, a block from :func:`read_database`, or a list of
    records (``.name``, ``.sequence``).
    E-values are over the database size. At most ``top`` hits per HMM (None = all).
    """
    if isinstance(database, (str, Path)):
        block = read_database(database)
        names = None
    elif isinstance(database, easel.DigitalSequenceBlock):
        block, names = database, None
    else:
        block = sequence_block(database)
        names = [(s.name, getattr(s, "description", "")) for s in database]
    results: list[list[SearchHit]] = []
    for hmm in hmms:
        pli = _pipeline(float(len(block)), max_sensitivity=False)
        pli.E = max_evalue
        hits = sorted((h for h in pli.search_hmm(hmm, block) if h.reported),
                      key=lambda h: (h.evalue, -h.score))
        ranked: list[SearchHit] = []
        for hit in hits:
            if hit.evalue > max_evalue:
                continue
            dom = max(hit.domains, key=lambda d: d.score).alignment
            if names is None:
                name, desc = hit.name, hit.description or ""
            else:
                name, desc = names[int(hit.name)]
            ranked.append(SearchHit(
                len(ranked) + 1, name, desc, float(hit.evalue), float(hit.score),
                dom.hmm_from, dom.hmm_to, dom.target_from, dom.target_to, int(hit.length)))
            if top is not None and len(ranked) >= top:
                break
        results.append(ranked)
    return results
