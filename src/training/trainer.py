"""The resumable training loop both networks share (:class:`BaseTrainer`).

A trainer (:class:`.train_cnn.Trainer`, :class:`.train_gnn.GNNTrainer`) keeps its state
in a run folder:

* ``checkpoint.pt``: the latest state, written atomically (:func:`.common.save_atomic`)
  every ``checkpoint_every`` steps, after each validation and when :meth:`BaseTrainer.train`
  ends. Keys: ``model`` and ``opt`` (state dicts), ``step``, ``best_score``, ``rng`` (the
  numpy generator's state), ``torch_rng`` (torch's CPU RNG state; only for trainers with
  ``keep_torch_rng``), ``config`` (``Config.to_dict()``), ``elapsed`` (training seconds
  over all runs), ``ema`` (only with ``TrainConfig.ema_decay``: the moving average of
  the weights, a state dict), plus the trainer's own (:meth:`BaseTrainer._checkpoint_extras`).
* ``best.pt``: the best validation so far: ``model``, ``config``, the trainer's own keys
  (:meth:`BaseTrainer._best_extras`), ``step`` and ``validation`` (the validator's scores,
  with ``score`` and ``step``).
* ``log.jsonl``: one JSON line per ``LOG_EVERY`` steps (:meth:`BaseTrainer._log_line`:
  ``step``, the loss terms, ``elapsed_s``) and one ``{"validation": scores}`` per validation.
  Resuming drops the records of steps after the checkpoint (they are run again).
* ``commands.txt``: the commands that (re)started the run (:func:`.common.record_command`,
  written by the ``train-*`` commands).

**Weight averaging.** With ``TrainConfig.ema_decay`` = d > 0 the trainer keeps an
exponential moving average of the weights (after each optimiser step ``ema = d * ema +
(1 - d) * weights``, integer buffers copied), started from the current weights when a run
(or a resumed run without one) turns it on. Validation scores the average, not the raw
weights, and ``best.pt`` holds the average that scored: it is smoother than the weights
of any one step (steps see one example each).

**Starting from other weights.** A new run may start from another run's weights
(``init_weights``, e.g. a deeper network from a shallower one's checkpoint): every tensor
of those weights must exist in the new network with the same shape; tensors the new
network has beyond them (extra layers) keep their initialisation. Residual layers whose
output projections start at zero (the GNN's) then start as the identity, so the new
network first predicts exactly what the old one did. ``checkpoint.pt`` keeps
``init_from`` (where the weights came from) for the training record.

A trainer made on a folder that holds ``checkpoint.pt`` resumes it: the network config,
weights, optimiser, step, best score, RNG states and elapsed time come from the
checkpoint (``cfg.train``, the training-loop settings, from the caller), so many short
runs add up to one long one drawing the same random stream.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from . import splits as _splits
from .common import ProteinCache, save_atomic

LOG_EVERY = 10  # steps per log line


def cpu_state(obj):
    """``obj`` (a state dict, nested dicts/lists of tensors) with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: cpu_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_state(v) for v in obj)
    return obj


def load_initial_weights(model: torch.nn.Module, state: dict) -> list[str]:
    """Copy ``state`` into ``model``; return the names of the model's tensors it did not
    hold (left as initialised). A tensor of ``state`` that the model lacks or holds with
    another shape is an error: the weights do not fit this network."""
    from ..errors import ModelAngeloError

    own = model.state_dict()
    extra = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if extra or wrong:
        what = "; ".join(
            ([f"{len(extra)} tensors the network lacks (e.g. {extra[0]})"] if extra else []) +
            ([f"{len(wrong)} of another shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} "
              f"here {tuple(own[wrong[0]].shape)})"] if wrong else []))
        raise ModelAngeloError(f"the initial weights do not fit this network: {what}")
    model.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in state.items()}})
    return sorted(set(own) - set(state))


def load_checkpoint(run_dir: Path) -> dict | None:
    """``run_dir/checkpoint.pt`` (None for a new run)."""
    path = Path(run_dir) / "checkpoint.pt"
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def run_config(ckpt: dict | None, cfg: Config) -> Config:
    """A run's config: a resumed run's from its checkpoint with ``cfg.train`` (training-loop
    settings may change between runs), a new run's ``cfg``."""
    if ckpt is None:
        return cfg
    resumed = Config.from_dict(ckpt["config"])
    resumed.train = cfg.train
    return resumed


class BaseTrainer:
    """Resumable training in a run folder (see the module docstring).

    A new run uses ``cfg``; a resumed one the checkpoint's config with ``cfg.train``.
    Training draws structures (by name, ``train_names``, default the 'train' split) from
    ``data_root``, and its randomness from ``self.rng`` (seeded by ``cfg.train.seed``).

    Subclasses supply the network (:meth:`_build_model`), one optimiser step
    (:meth:`train_step`) and a log line (:meth:`_log_line`), and where they have settings
    of their own :meth:`_configure`, :meth:`_checkpoint_extras` and :meth:`_best_extras`.
    """

    initial_best_score = -math.inf  # best_score before the first validation
    keep_torch_rng = False  # whether checkpoint.pt holds torch's RNG state too

    def __init__(self, run_dir: Path, cfg: Config, *, data_root: Path | None = None,
                 train_names: list[str] | None = None, log: Callable[[str], None] = print,
                 device: torch.device | str = "cpu",
                 init_weights: tuple[str, dict] | None = None):
        """``init_weights``: ``(where from, state dict)`` for a new run (see the module
        docstring; ignored when resuming)."""
        self.device = torch.device(device)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.data_root = data_root
        ckpt_path = self.run_dir / "checkpoint.pt"
        ckpt = load_checkpoint(self.run_dir)
        self.cfg = run_config(ckpt, cfg)
        self._configure(ckpt)
        torch.manual_seed(self.cfg.train.seed)
        self.model = self._build_model().to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.train.lr,
                                     weight_decay=self.cfg.train.weight_decay)
        self.step = 0
        self.best_score = self.initial_best_score
        self.rng = np.random.default_rng(self.cfg.train.seed)
        self.elapsed = 0.0
        self.ema: dict[str, torch.Tensor] | None = None  # weight average (ema_decay > 0)
        self.init_from: str | None = None  # where a new run's weights came from
        if ckpt is None and init_weights is not None:
            self.init_from, state = init_weights
            new = load_initial_weights(self.model, state)
            layers = sorted({k.split(".")[1] for k in new if k.startswith("layers.")}, key=int)
            self.log(f"weights from {self.init_from}: {len(state)} tensors; "
                     f"{len(new)} new tensors" + (f" (layers {', '.join(layers)})" if layers else ""))
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"])
            self.opt.load_state_dict(ckpt["opt"])
            self.step = int(ckpt["step"])
            self.best_score = float(ckpt["best_score"])
            self.rng.bit_generator.state = ckpt["rng"]
            if "torch_rng" in ckpt:
                torch.set_rng_state(ckpt["torch_rng"])
            self.elapsed = float(ckpt.get("elapsed", 0.0))
            self.init_from = ckpt.get("init_from")
            if self.cfg.train.ema_decay > 0 and "ema" in ckpt:
                self.ema = {k: v.to(self.device) for k, v in ckpt["ema"].items()}
            self._trim_log(self.step)
            self.log(f"resumed from {ckpt_path} at step {self.step}")
        if self.cfg.train.ema_decay > 0 and self.ema is None:
            self.ema = {k: v.detach().clone().float() if v.is_floating_point() else v.clone()
                        for k, v in self.model.state_dict().items()}
        self.train_names = train_names if train_names is not None else _splits.load_split("train")
        self.protein = ProteinCache(self.data_root)

    # What subclasses supply.

    def _configure(self, ckpt: dict | None) -> None:
        """Settings of the subclass's own, from the checkpoint when resuming (``ckpt``,
        else None); called once ``self.cfg`` is set, before the model is built."""

    def _build_model(self) -> torch.nn.Module:
        """The network of ``self.cfg`` (built right after ``torch.manual_seed``)."""
        raise NotImplementedError

    def train_step(self) -> dict | None:
        """One optimiser step (``self.step`` steps done before it; :meth:`train` counts
        it): its loss terms for the log (numbers), or None when the step was skipped."""
        raise NotImplementedError

    def _log_line(self, window: list[dict]) -> dict:
        """The log record of the steps since the last one (``window``: their
        :meth:`train_step` records, not empty)."""
        raise NotImplementedError

    def _checkpoint_extras(self) -> dict:
        """Keys of the subclass's own in ``checkpoint.pt``."""
        return {}

    def _best_extras(self) -> dict:
        """Keys of the subclass's own in ``best.pt``."""
        return {}

    # The shared machinery.

    def checkpoint(self) -> None:
        """Write ``checkpoint.pt`` (keys in the module docstring)."""
        state = {
            "model": cpu_state(self.model.state_dict()),
            "opt": cpu_state(self.opt.state_dict()),
            "step": self.step,
            "best_score": self.best_score,
            "rng": self.rng.bit_generator.state,
        }
        if self.keep_torch_rng:
            state["torch_rng"] = torch.get_rng_state()
        if self.ema is not None:
            state["ema"] = cpu_state(self.ema)
        if self.init_from is not None:
            state["init_from"] = self.init_from
        state.update(config=self.cfg.to_dict(), elapsed=self.elapsed, **self._checkpoint_extras())
        save_atomic(state, self.run_dir / "checkpoint.pt")

    def _trim_log(self, step: int) -> None:
        """Drop the log records of steps after ``step`` (run after the last checkpoint by
        a run that was stopped): the resumed run logs those steps again."""
        path = self.run_dir / "log.jsonl"
        if not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                at = record["validation"]["step"] if "validation" in record else record["step"]
            except (ValueError, KeyError, TypeError):
                at = None  # not ours to judge: kept
            if at is None or at <= step:
                kept.append(line)
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)

    def _write_log(self, record: dict) -> None:
        with open(self.run_dir / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def train(self, steps: int, *, validate=None, time_limit_s: float | None = None) -> None:
        """Train until ``steps`` total steps (resuming counts earlier ones) or until
        ``time_limit_s`` seconds of this call have passed; always ends with a checkpoint.
        ``validate`` (see :meth:`validate`) runs every ``validate_every`` steps."""
        tc = self.cfg.train
        self.model.train()
        window: list[dict] = []
        t_start = t_last = time.time()
        while self.step < steps:
            if time_limit_s is not None and time.time() - t_start > time_limit_s:
                self.log(f"time limit reached at step {self.step}")
                break
            rec = self.train_step()
            self.step += 1
            now = time.time()
            self.elapsed += now - t_last
            t_last = now
            if rec is not None:
                window.append(rec)
                self._update_ema()
            if self.step % LOG_EVERY == 0 and window:
                line = self._log_line(window)
                self._write_log(line)
                self.log(json.dumps(line))
                window.clear()
            if self.step % tc.checkpoint_every == 0:
                self.checkpoint()
            if validate is not None and self.step % tc.validate_every == 0:
                self.validate(validate)
                t_last = time.time()  # validation time is not training time
        self.checkpoint()

    @torch.no_grad()
    def _update_ema(self) -> None:
        """One step of the weight average (module docstring); no-op when it is off."""
        if self.ema is None:
            return
        d = self.cfg.train.ema_decay
        for k, v in self.model.state_dict().items():
            if v.is_floating_point():
                self.ema[k].mul_(d).add_(v.detach().float(), alpha=1.0 - d)
            else:
                self.ema[k].copy_(v)

    def validate(self, validate) -> dict:
        """Run ``validate(model, cfg) -> dict with 'score'`` (higher is better) on the
        weight average when ``ema_decay`` is on (else the model's own weights), log it,
        keep those weights in ``best.pt`` when they are the best so far, checkpoint."""
        raw = None
        if self.ema is not None:  # score the average in place of the raw weights
            raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(self.ema)
        self.model.eval()
        try:
            scores = validate(self.model, self.cfg)
        finally:
            if raw is not None:
                self.model.load_state_dict(raw)
            self.model.train()
        scores["step"] = self.step
        if self.ema is not None:
            scores["weights"] = f"ema {self.cfg.train.ema_decay:g}"
        self._write_log({"validation": scores})
        self.log(f"validation: {json.dumps(scores)}")
        if scores["score"] > self.best_score:
            self.best_score = float(scores["score"])
            scored = self.ema if self.ema is not None else self.model.state_dict()
            save_atomic({"model": cpu_state(scored), "config": self.cfg.to_dict(),
                         **self._best_extras(), "step": self.step, "validation": scores},
                        self.run_dir / "best.pt")
        self.checkpoint()
        return scores
