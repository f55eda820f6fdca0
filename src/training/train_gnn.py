"""Training the graph network on simulated maps, resumable, for hours on 2 CPU cores.

Each step draws one structure from the training split and makes one example
(:func:`draw_example`, a pure function of the step: its random generator is seeded with
``(cfg.train.seed, step)``; ``data_workers`` processes make the next steps' examples
ahead, :mod:`.prefetch`; :func:`.gnn_data.make_example`: a crop of up to ``crop_nodes`` residues, its simulated
and normalised map, noisy or CNN-like or CNN-detected nodes with random initial
frames, full chain sequences). The GNN runs with a random number of recycles
(0..``GNNConfig.recycles``, gradient-free, then one pass with gradient, as AF2) under
bf16 autocast; :func:`..model.gnn.gnn_loss` (per-layer CA, backbone, residue type,
torsion and edge terms; last-layer full-atom and confidence terms) is minimised with
AdamW, a linear warm-up of ``WARMUP_STEPS`` steps and gradient clipping at ``GRAD_CLIP``.
A step whose loss is not finite is skipped (logged).

State lives in a run folder, kept by :class:`.trainer.BaseTrainer` as for the CNN (its
module docstring lists the contents): ``checkpoint.pt`` (latest, written atomically every
``checkpoint_every`` steps and at the end: model, optimiser, step, best score, numpy and
torch RNG states, config, elapsed seconds, and here also ``data_config`` and ``skipped``,
the count of skipped steps), ``best.pt`` (best validation score so far, see
:mod:`.validate_gnn`; with ``data_config``), ``log.jsonl`` (every 10 steps the means of
the loss terms, ``elapsed_s`` and ``skipped``; each validation) and ``commands.txt``
(written by the CLI). Re-running the same command resumes from ``checkpoint.pt`` with the
same torch RNG state and the same per-step examples, so many short runs add up to one
long one. (Until step 11,800 of the shipped run, examples came from one sequential
numpy stream kept in the checkpoint; that state is still saved but no longer drawn
from.)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import Config, section_from_dict
from ..model.common import DensityGrid
from ..model.gnn import GNN, gnn_loss
from .common import ProteinCache
from .gnn_data import GNNDataConfig, GNNExample, make_example
from .prefetch import Prefetcher
from .trainer import BaseTrainer, cpu_state

WARMUP_STEPS = 200  # linear learning-rate warm-up
GRAD_CLIP = 1.0  # global gradient-norm clip


def example_tensors(ex: GNNExample, device=None) -> tuple[dict, dict]:
    """``(inputs, targets)`` of one example as tensors.

    ``inputs``: ``node_ca`` [M, 3], ``density`` (:class:`DensityGrid`),
    ``init_rotations`` [M, 3, 3]. ``targets``: the dict :func:`..model.gnn.gnn_loss`
    reads (``atom_positions``, ``atom_mask``, ``aatype``, ``residue_mask``,
    ``prev_node``, ``next_node``, ``torsions``, ``torsion_mask``, ``seq_position``).
    """
    def t(x, dtype=None):
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)

    inputs = {
        "node_ca": t(ex.node_xyz, torch.float32),
        "density": DensityGrid.from_map(ex.grid, device),
        "init_rotations": t(ex.init_rotations, torch.float32),
    }
    targets = {
        "atom_positions": t(ex.atom_positions, torch.float32),
        "atom_mask": t(ex.atom_mask, torch.bool),
        "aatype": t(ex.aatype, torch.long),
        "residue_mask": t(ex.target_mask, torch.bool),
        "prev_node": t(ex.prev_node, torch.long),
        "next_node": t(ex.next_node, torch.long),
        "torsions": t(ex.torsions, torch.float32),
        "torsion_mask": t(ex.torsion_mask, torch.bool),
        "seq_position": t(ex.seq_position, torch.long),
    }
    return inputs, targets


def draw_example(step: int, *, seed: int, names: list[str], protein: Callable, cfg: Config,
                 dcfg: GNNDataConfig, cnn=None) -> tuple[GNNExample, int]:
    """The example of training step ``step`` and its number of recycles: a structure
    from ``names`` (loaded by ``protein(name)``), :func:`.gnn_data.make_example`, a
    recycle count, all drawn from a generator seeded with ``(seed, step)``."""
    rng = np.random.default_rng([seed, step])
    name = names[int(rng.integers(len(names)))]
    ex = make_example(protein(name), rng, cfg, dcfg, cnn=cnn)
    ex.params["name"] = name
    return ex, int(rng.integers(cfg.gnn.recycles + 1))


_WORKER: dict = {}  # a data worker's state (set by _init_worker)


def _init_worker(kwargs: dict, cnn_state, data_root) -> None:
    """Set up a data worker: one torch thread, its own structure cache, the CNN rebuilt
    from ``cnn_state`` ``(state_dict, CNNConfig)`` (None: no CNN-node examples)."""
    torch.set_num_threads(1)
    cnn = None
    if cnn_state is not None:
        from ..model.cnn import CAUNet

        state_dict, cnn_cfg = cnn_state
        model = CAUNet(cnn_cfg)
        model.load_state_dict(state_dict)
        cnn = (model.eval(), cnn_cfg)
    _WORKER.clear()
    _WORKER.update(kwargs, cnn=cnn, protein=ProteinCache(data_root))


def _worker_example(step: int) -> tuple[GNNExample, int]:
    return draw_example(step, **_WORKER)


def run_model(model: GNN, ex: GNNExample, recycles: int, *, bf16: bool, device=None) -> dict:
    """The GNN's outputs on one example (``recycles`` gradient-free passes first)."""
    inputs, _ = example_tensors(ex, device)
    dev = inputs["node_ca"].device
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        emb, mask = model.embed_sequences(ex.sequences, dev)
        return model.forward_recycled(inputs["node_ca"], inputs["density"], emb, mask,
                                      inputs["init_rotations"], recycles=recycles)


def learning_rate(step: int, base: float) -> float:
    """Linear warm-up over ``WARMUP_STEPS``, then constant."""
    return base * min(1.0, (step + 1) / WARMUP_STEPS)


def run_data_config(ckpt: dict | None, dcfg: GNNDataConfig,
                    overrides: dict | None = None) -> GNNDataConfig:
    """A run's data config: a resumed run's from its checkpoint (a new run's ``dcfg``),
    then ``overrides`` (:class:`GNNDataConfig` fields that may change between runs)."""
    if ckpt is not None:
        dcfg = section_from_dict(GNNDataConfig, ckpt.get("data_config", {}))
    return dataclasses.replace(dcfg, **overrides) if overrides else dcfg


class GNNTrainer(BaseTrainer):
    """Resumable training of :class:`..model.gnn.GNN` (see the module docstring).

    ``cfg`` and ``dcfg`` are used for a new run; a resumed run takes the network config
    and data config from its checkpoint, except ``cfg.train`` and any data settings in
    ``data_overrides`` (dict of :class:`GNNDataConfig` fields), which may change between
    runs. ``cnn`` is ``(CAUNet, CNNConfig)`` on the CPU for the CNN-node mode (examples
    are made on the CPU; the GNN trains on ``device``). ``data_workers``
    processes make examples ahead (0: in this process; the same examples, see
    :mod:`.prefetch`). ``init_weights`` ``(where from, state dict)``: a new run's
    starting weights (:class:`.trainer.BaseTrainer`).
    Call :meth:`close` when done to stop them.
    """

    keep_torch_rng = True  # GNN checkpoints hold torch's RNG state as well

    def __init__(self, run_dir: Path, cfg: Config, dcfg: GNNDataConfig | None = None, *,
                 data_root: Path | None = None, cnn=None, data_overrides: dict | None = None,
                 train_names: list[str] | None = None, log: Callable[[str], None] = print,
                 data_workers: int = 0, device: torch.device | str = "cpu",
                 init_weights: tuple[str, dict] | None = None):
        self.cnn = cnn
        self.dcfg = dcfg or GNNDataConfig()
        self.data_overrides = data_overrides or {}
        self.data_workers = data_workers
        self._examples: Prefetcher | None = None
        super().__init__(run_dir, cfg, data_root=data_root, train_names=train_names, log=log,
                         device=device, init_weights=init_weights)

    def _configure(self, ckpt: dict | None) -> None:
        """Data config and skip count (a resumed run's from its checkpoint), then
        ``data_overrides``."""
        self.skipped = int(ckpt.get("skipped", 0)) if ckpt is not None else 0
        self.dcfg = run_data_config(ckpt, self.dcfg, self.data_overrides)
        if self.cnn is None and self.dcfg.cnn_nodes_prob > 0:
            raise ValueError("cnn_nodes_prob > 0 needs a CNN")

    def _build_model(self) -> GNN:
        return GNN(self.cfg.gnn)

    def _checkpoint_extras(self) -> dict:
        return {"data_config": dataclasses.asdict(self.dcfg), "skipped": self.skipped}

    def _best_extras(self) -> dict:
        return {"data_config": dataclasses.asdict(self.dcfg)}

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def next_example(self) -> tuple[GNNExample, int]:
        """The example of the next step (step ``self.step``) and its number of recycles."""
        if self._examples is None:
            kwargs = {"seed": self.cfg.train.seed, "names": list(self.train_names),
                      "cfg": self.cfg, "dcfg": self.dcfg}
            if self.data_workers == 0:
                self._examples = Prefetcher(functools.partial(
                    draw_example, protein=self.protein, cnn=self.cnn, **kwargs))
            else:
                cnn_state = None if self.cnn is None else (
                    cpu_state(self.cnn[0].state_dict()), self.cnn[1])
                self._examples = Prefetcher(_worker_example, self.data_workers,
                                            initializer=_init_worker,
                                            initargs=(kwargs, cnn_state, self.data_root))
        return self._examples.get(self.step)

    def close(self) -> None:
        """Stop the data workers (if any)."""
        if self._examples is not None:
            self._examples.close()
            self._examples = None

    def train_step(self) -> dict | None:
        """One optimiser step; returns its loss terms (None when skipped)."""
        tc = self.cfg.train
        ex, recycles = self.next_example()
        if int(ex.target_mask.sum()) == 0:
            self.skipped += 1
            return None
        for group in self.opt.param_groups:
            group["lr"] = learning_rate(self.step, tc.lr)
        out = run_model(self.model, ex, recycles, bf16=tc.bf16, device=self.device)
        _, targets = example_tensors(ex, self.device)
        loss, terms = gnn_loss(out, targets, self.cfg.gnn)
        if not torch.isfinite(loss):
            self.skipped += 1
            self.log(f"step {self.step + 1}: non-finite loss on {ex.params['name']}, skipped")
            return None
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        if not torch.isfinite(grad_norm):
            self.skipped += 1
            self.opt.zero_grad(set_to_none=True)
            self.log(f"step {self.step + 1}: non-finite gradient on {ex.params['name']}, "
                     "skipped")
            return None
        self.opt.step()
        rec = {k: float(v) for k, v in terms.items()}
        rec.update(loss=float(loss.detach()), grad_norm=float(grad_norm), nodes=len(ex),
                   recycles=recycles, mode=ex.mode)
        return rec

    def _log_line(self, window: list[dict]) -> dict:
        """The means of the numeric terms over ``window``, and the skip count."""
        keys = [k for k, v in window[0].items() if isinstance(v, (int, float))]
        return {"step": self.step,
                **{k: round(float(np.mean([w[k] for w in window if k in w])), 4) for k in keys},
                "elapsed_s": round(self.elapsed, 1), "skipped": self.skipped}
