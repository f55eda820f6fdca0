"""Validation of the GNN on fixed simulated examples from the validation split.

The examples (:func:`validation_examples`) are drawn from fixed seeds, each example from
its own generator (seeded ``(seed, i)``, so a change in one example's draws, e.g. the number
of a new CNN's peaks, leaves the others as they were): structures
of the ``val`` split, resolutions cycling through :data:`VAL_RESOLUTIONS`, node modes
cycling through ``noise``, ``cnn-like`` (misses and false positives) and, when a CNN is
given, ``cnn`` (the CNN's own peaks); always with sequences. The model runs in eval mode
with the examples' fixed initial frames and ``GNNConfig.recycles`` recycles.
Examples and model run in fp32 whatever ``TrainConfig.bf16`` says (training may use bf16
where the CPU or GPU has it natively): the figures then compare across machines and
match inference, which runs in fp32.

Metrics (pooled over the nodes of all examples; "true nodes" have a target residue):

* ``ca_rmsd``: CA RMSD (A) after the last layer over true nodes (``input_ca_rmsd``: of
  the input nodes, for reference);
* ``backbone_rmsd``: N, CA, C RMSD (A) of the predicted backbone;
* ``full_atom_rmsd``: all-atom RMSD (A) from predicted frames and torsions with the true
  residue type (symmetric atoms swapped where that is closer);
* ``aa_accuracy``: residue type accuracy over true nodes of known type;
* ``torsion_mae_deg`` / ``chi1_mae_deg``: mean absolute error (degrees) of all defined
  torsions / chi1 of the true residue type (pi-periodic side chains: the closer of the
  two equivalent angles);
* ``edge_precision``, ``edge_recall``, ``edge_f1``: kNN edges predicted (p > 0.5) to join
  chain neighbours vs the true ones; ``direction_accuracy``: of true neighbour edges,
  the share whose next-residue logit has the right sign;
* ``confidence_corr``: Pearson correlation of the confidence (0..100) with minus the CA
  error over true nodes (positive = confident nodes are accurate); ``fp_confidence`` /
  ``true_confidence``: mean confidence of false-positive and true nodes;
* ``seq_position_accuracy``: of true nodes given their sequence, the share whose
  sequence pointer (``GNNConfig.seq_position_heads``) peaks at their own residue;
* ``loss``: mean :func:`..model.gnn.gnn_loss` total;
* ``by_resolution``: residue types, backbone RMSD, edge F1 and direction accuracy per
  map resolution (:func:`by_resolution`); ``by_mode``: the same per node mode
  (:func:`by_mode`).

``score`` (higher is better; it picks ``best.pt``) =
``aa_accuracy + 0.25 * edge_f1 - 0.2 * ca_rmsd``: residue types matter most for the
sequence alignment, chain links second; the CA term keeps the geometry honest (an
untrained network scores about -0.15, one placing CAs to 0.5 A with 60% residue types and
0.9 edge F1 about 0.7).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .. import geometry as geo
from .. import residue_constants as rc
from ..config import Config
from ..model.gnn import gnn_loss
from .gnn_data import GNNDataConfig, GNNExample, edge_targets, make_example
from .simulate import load_training_protein
from .splits import load_split
from .train_gnn import example_tensors, run_model
from .trainer import cpu_state

VAL_RESOLUTIONS = (2.5, 3.0, 3.5, 4.0)
SCORE_EDGE_WEIGHT = 0.25
SCORE_CA_WEIGHT = 0.2


def validation_examples(cfg: Config, dcfg: GNNDataConfig | None = None, n_maps: int = 6,
                        seed: int = 1234, data_root=None, cnn=None,
                        names: list[str] | None = None) -> list[GNNExample]:
    """Fixed validation examples (see the module docstring)."""
    dcfg = GNNDataConfig(**{**(dcfg or GNNDataConfig()).__dict__, "no_sequence_prob": 0.0})
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, bf16=False))  # fp32 peaks
    names = names if names is not None else load_split("val")
    modes = ["noise", "cnn-like"] + (["cnn"] if cnn is not None else [])
    out = []
    for i in range(n_maps):
        rng = np.random.default_rng([seed, i])  # one stream per example
        name = names[int(rng.integers(len(names)))]
        protein = load_training_protein(name, data_root)
        ex = make_example(protein, rng, cfg, dcfg, cnn=cnn, mode=modes[i % len(modes)],
                          resolution=VAL_RESOLUTIONS[i % len(VAL_RESOLUTIONS)])
        ex.params["name"] = name
        out.append(ex)
    return out


def _angle(sc: torch.Tensor) -> torch.Tensor:  # [..., 2] (sin, cos) -> radians
    return torch.atan2(sc[..., 0], sc[..., 1])


def _wrap(a: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


@torch.no_grad()
def example_metrics(out: dict, ex: GNNExample) -> dict[str, np.ndarray]:
    """Per-node / per-edge arrays of one example's errors (pooled by :func:`summarise`)."""
    _, tg = example_tensors(ex)
    true = tg["residue_mask"]
    aat = tg["aatype"].clamp(0, rc.NUM_RESTYPES - 1)
    known = true & (tg["aatype"] < rc.NUM_RESTYPES)
    trans = out["translations"].float()
    rot = out["rotations"].float()
    ca_t = tg["atom_positions"][:, rc.CA_IDX]
    ca_err = (trans - ca_t).norm(dim=-1)  # [M]
    in_err = (torch.as_tensor(ex.node_xyz) - ca_t).norm(dim=-1)
    bb_ok = true & tg["atom_mask"][:, :3].all(-1)
    bb_sq = ((out["backbone"].float() - tg["atom_positions"][:, :3]) ** 2).sum(-1)  # [M, 3]
    ar = torch.arange(len(ex))
    # Full atom with the true residue type.
    tor = out["torsions"].float()[ar, aat]  # [M, 7, 2]
    atoms, pmask = geo.atom37_from_frames(rot, trans, aat, tor)
    pos_sw, mask_sw = geo.swap_symmetric_atoms(tg["atom_positions"], tg["atom_mask"], aat)
    d1 = ((atoms - tg["atom_positions"]) ** 2).sum(-1) * (pmask & tg["atom_mask"])
    d2 = ((atoms - pos_sw) ** 2).sum(-1) * (pmask & mask_sw)
    n_at = (pmask & tg["atom_mask"]).sum(-1)
    fa_sq = torch.minimum(d1.sum(-1), d2.sum(-1))  # [M] per-residue sum of squares
    # Torsions.
    tmask = tg["torsion_mask"] & known[:, None]
    alt = geo.torsion_alternatives(tg["torsions"], aat)
    err = torch.minimum(_wrap(_angle(tor) - _angle(tg["torsions"])).abs(),
                        _wrap(_angle(tor) - _angle(alt)).abs())  # [M, 7]
    # Edges.
    e_idx = out["edge_index"]
    is_nb, is_next = edge_targets(e_idx, tg["prev_node"], tg["next_node"])
    pred_nb = out["edge_logits"].float() > 0
    nb = is_nb.bool()
    direction_ok = (out["next_logits"].float() > 0) == is_next.bool()
    conf = out["confidence"].float()
    pos_t = tg["seq_position"]
    has_pos = pos_t >= 0
    pos_ok = (out["seq_position"].argmax(-1)[has_pos] == pos_t[has_pos]
              if out.get("seq_position") is not None else torch.zeros(0, dtype=torch.bool))
    return {
        "ca_sq": (ca_err[true] ** 2).numpy(),
        "ca_err": ca_err[true].numpy(),
        "in_sq": (in_err[true] ** 2).numpy(),
        "bb_sq": bb_sq[bb_ok].reshape(-1).numpy(),
        "fa_sq": fa_sq[known & bb_ok].numpy(),
        "fa_n": n_at[known & bb_ok].numpy(),
        "aa_ok": (out["aa_logits"].argmax(-1) == tg["aatype"])[known].numpy(),
        "tors_err": err[tmask].numpy(),
        "chi1_err": err[:, 3][tmask[:, 3]].numpy(),
        "tp": np.array([int((pred_nb & nb).sum())]),
        "fp": np.array([int((pred_nb & ~nb).sum())]),
        "fn": np.array([int((~pred_nb & nb).sum())]),
        "dir_ok": direction_ok[nb].numpy(),
        "conf_true": conf[true].numpy(),
        "conf_fp": conf[~true].numpy(),
        "pos_ok": pos_ok.numpy(),
    }


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None


def summarise(parts: list[dict[str, np.ndarray]], losses: list[float]) -> dict:
    """Pooled metrics and the score (see the module docstring)."""
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    tp, fp, fn = (int(cat[k].sum()) for k in ("tp", "fp", "fn"))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    conf, err = cat["conf_true"], cat["ca_err"]
    corr = None
    if len(conf) >= 3 and np.std(conf) > 1e-6 and np.std(err) > 1e-6:
        corr = float(np.corrcoef(conf, -err)[0, 1])
    ca_rmsd = math.sqrt(float(np.mean(cat["ca_sq"]))) if len(cat["ca_sq"]) else float("nan")
    aa_acc = _mean(cat["aa_ok"].astype(np.float64)) or 0.0
    m = {
        "ca_rmsd": ca_rmsd,
        "input_ca_rmsd": math.sqrt(float(np.mean(cat["in_sq"]))) if len(cat["in_sq"]) else None,
        "backbone_rmsd": math.sqrt(float(np.mean(cat["bb_sq"]))) if len(cat["bb_sq"]) else None,
        "full_atom_rmsd": (math.sqrt(float(cat["fa_sq"].sum() / max(cat["fa_n"].sum(), 1)))
                           if len(cat["fa_sq"]) else None),
        "aa_accuracy": aa_acc,
        "torsion_mae_deg": (math.degrees(_mean(cat["tors_err"]))
                            if len(cat["tors_err"]) else None),
        "chi1_mae_deg": math.degrees(_mean(cat["chi1_err"])) if len(cat["chi1_err"]) else None,
        "edge_precision": prec, "edge_recall": rec, "edge_f1": f1,
        "direction_accuracy": _mean(cat["dir_ok"].astype(np.float64)),
        "seq_position_accuracy": _mean(cat["pos_ok"].astype(np.float64)),
        "confidence_corr": corr,
        "true_confidence": _mean(cat["conf_true"]),
        "fp_confidence": _mean(cat["conf_fp"]),
        "loss": float(np.mean(losses)) if losses else None,
        "nodes": int(len(cat["conf_true"]) + len(cat["conf_fp"])),
    }
    ca_term = ca_rmsd if math.isfinite(ca_rmsd) else 10.0
    m["score"] = aa_acc + SCORE_EDGE_WEIGHT * f1 - SCORE_CA_WEIGHT * ca_term
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}


BY_RESOLUTION_KEYS = ("aa_accuracy", "backbone_rmsd", "edge_f1", "direction_accuracy")


def _pooled_by(groups: list[str], parts: list[dict[str, np.ndarray]],
               losses: list[float]) -> dict[str, dict]:
    """:data:`BY_RESOLUTION_KEYS` pooled over the examples of each group (``groups[i]``
    is example i's group), groups in sorted order."""
    out = {}
    for g in sorted(set(groups)):
        idx = [i for i, gi in enumerate(groups) if gi == g]
        m = summarise([parts[i] for i in idx], [losses[i] for i in idx])
        out[g] = {k: m[k] for k in BY_RESOLUTION_KEYS}
    return out


def by_resolution(examples: list[GNNExample], parts: list[dict[str, np.ndarray]],
                  losses: list[float]) -> dict[str, dict]:
    """A few metrics (:data:`BY_RESOLUTION_KEYS`) pooled per map resolution (keys
    like ``"4.0"``): the pooled figures hide how much worse the network is at 4 A."""
    return _pooled_by([f"{float(ex.resolution):.1f}" for ex in examples], parts, losses)


def by_mode(examples: list[GNNExample], parts: list[dict[str, np.ndarray]],
            losses: list[float]) -> dict[str, dict]:
    """The same figures per node mode (``noise``, ``cnn-like``, ``cnn``): every real
    build runs on the CNN's own nodes, which at 4 A are the hardest (session 8)."""
    return _pooled_by([ex.mode for ex in examples], parts, losses)


class GNNValidator:
    """Callable used by the trainer: ``validator(model, cfg) -> metrics with 'score'``."""

    def __init__(self, cfg: Config, dcfg: GNNDataConfig | None = None, n_maps: int = 6,
                 data_root=None, cnn=None, names: list[str] | None = None):
        self.examples = validation_examples(cfg, dcfg, n_maps=n_maps, data_root=data_root,
                                            cnn=cnn, names=names)

    @torch.no_grad()
    def __call__(self, model, cfg: Config) -> dict:
        was_training = model.training
        model.eval()
        parts, losses = [], []
        device = next(model.parameters()).device
        for ex in self.examples:
            out = run_model(model, ex, cfg.gnn.recycles, bf16=False, device=device)
            _, targets = example_tensors(ex, device)
            loss, _ = gnn_loss(out, targets, cfg.gnn)
            losses.append(float(loss))
            parts.append(example_metrics(cpu_state(out), ex))
        model.train(was_training)
        out = summarise(parts, losses)
        out["by_resolution"] = by_resolution(self.examples, parts, losses)
        out["by_mode"] = by_mode(self.examples, parts, losses)
        return out
