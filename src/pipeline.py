"""The whole build, map in, two models out: ``run_build``.

Stages (names reported through ``progress(stage, fraction)``):

1. ``prepare``  - check the map, resample to the working voxel size, normalise
2. ``detect``   - C-alpha CNN on overlapping tiles, peak picking -> graph nodes
3. ``refine``   - graph network (cryo-EM, sequence and point attention; recycles)
4. ``chains``   - link residues into chains, side chains, sequence alignment, pruning
5. ``write``    - mmCIF files (and HMM profiles when no sequence was given)

Coordinates stay in the frame of the input ``MapGrid`` throughout. Nothing here
imports ChimeraX; the ChimeraX command and the CLI both call :func:`run_build`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Config, MapConfig
from .errors import JobStopped, ModelAngeloError, OutputError
from .mapio import MapGrid, auto_sharpen, check_size, normalise, resample
from .sequences import SequenceRecord

STAGES = ("prepare", "detect", "refine", "chains", "write")
VERSION = "0.1.0"


@dataclass
class BuildResult:
    unpruned_path: Path
    pruned_path: Path | None
    summary: dict
    warnings: list[str] = field(default_factory=list)


def map_name(path: Path) -> str:
    """Base name for a build's files: the map file name without map suffixes."""
    name = Path(path).name
    for suffix in (".gz", ".bz2", ".mrc", ".map", ".ccp4", ".mrcs"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or "map"


def output_paths(output_dir: Path, name: str) -> dict[str, Path]:
    """Every file a build writes into ``output_dir``."""
    return {
        "pruned": output_dir / f"{name}.cif",
        "unpruned": output_dir / f"{name}_unpruned.cif",
        "summary": output_dir / "summary.json",
        "hmm_dir": output_dir / "hmm_profiles",
    }


def prepare_output_dir(output_dir: Path, name: str, overwrite: bool) -> dict[str, Path]:
    """Create ``output_dir``; refuse (OutputError) if it already holds a build's results."""
    paths = output_paths(output_dir, name)
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"output path {output_dir} exists and is not a folder")
    existing = [p for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise OutputError(
            f"output folder {output_dir} already holds results ({existing[0].name}); "
            "choose another folder or pass --overwrite to replace them"
        )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {output_dir}: {exc}") from exc
    return paths


def resolve_device(device: str):
    """``auto`` -> CUDA if available, else CPU; ``cuda``/``gpu`` without CUDA is an error."""
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise ModelAngeloError(
                "device 'cuda' was asked for but PyTorch sees no CUDA GPU "
                "(use --device cpu, or install a CUDA build of torch)")
        return torch.device("cuda")
    if device == "cpu":
        return torch.device("cpu")
    raise ModelAngeloError(f"unknown device '{device}' (use auto, cpu or cuda)")


class _Reporter:
    def __init__(self, progress, should_stop, log):
        self.progress = progress
        self.should_stop = should_stop
        self.log = log or (lambda msg: None)
        self.timings: dict[str, float] = {}
        self._stage: str | None = None
        self._t0 = 0.0

    def stage(self, name: str, message: str) -> None:
        self.finish()
        self.check_stop()
        self._stage, self._t0 = name, time.perf_counter()
        self.log(f"[{name}] {message}")
        self.report(0.0)

    def report(self, fraction: float) -> None:
        if self.progress is not None and self._stage is not None:
            self.progress(self._stage, float(fraction))

    def check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise JobStopped(f"stopped by the user during '{self._stage or 'start'}'")

    def finish(self) -> None:
        if self._stage is not None:
            self.timings[self._stage] = round(time.perf_counter() - self._t0, 3)
            self.report(1.0)
            self._stage = None


def graph_network_map(work: MapGrid, cfg: MapConfig) -> tuple[MapGrid, float]:
    """The working map as the graph network reads it: sharpened by
    :func:`~.mapio.auto_sharpen` when ``cfg.gnn_sharpen_target_b`` is set, with the B
    applied (0: unchanged)."""
    if cfg.gnn_sharpen_target_b is None:
        return work, 0.0
    return auto_sharpen(work, cfg.gnn_sharpen_target_b, cfg.gnn_sharpen_max_b)


def run_build(
    grid: MapGrid,
    sequences: list[SequenceRecord] | None,
    output_dir: Path,
    name: str,
    *,
    config: Config | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: Callable[[str, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build atomic models into ``grid``; write them to ``output_dir``.

    ``sequences`` None or empty means the no-sequence mode: the unpruned model and one
    HMM profile per chain (for ``modelangelo search``).
    """
    from .model.loading import load_cnn, load_gnn
    from .postprocess import build_models
    from .structure_output import write_mmcif

    cfg = config or Config()
    output_dir = Path(output_dir)
    rep = _Reporter(progress, should_stop, log)
    warnings: list[str] = []
    paths = prepare_output_dir(output_dir, name, overwrite)
    torch_device = resolve_device(device)
    t_start = time.perf_counter()

    rep.stage("prepare", f"resampling the map to {cfg.map.voxel_size} A voxels")
    check_size(grid, cfg.map.max_voxels, voxel_size=cfg.map.voxel_size)
    work = resample(grid, voxel_size=cfg.map.voxel_size, method=cfg.map.resample_method)
    map_warnings: list[str] = []
    work = normalise(work, warnings=map_warnings)
    for w in map_warnings:
        warnings.append(w)
        rep.log(f"[prepare] WARNING: {w}")

    rep.stage("detect", "detecting C-alpha atoms (CNN)")
    cnn, cnn_cfg, cnn_record = load_cnn(torch_device)
    nodes, node_prob = _with_oom_fallback(
        lambda dev: _detect(cnn.to(dev), work, cnn_cfg, dev, rep), torch_device, warnings, rep)
    rep.log(f"[detect] {len(nodes)} C-alpha candidates")
    if len(nodes) == 0:
        raise ModelAngeloError(
            "no C-alpha atoms were found in the map: is it a protein map at better than "
            "~4.5 A resolution, with the protein density positive (not inverted)?")

    rep.stage("refine", "refining residues with the graph network")
    gnn = load_gnn(torch_device)
    sharpened_b = 0.0
    if gnn is None:
        msg = ("the graph network has no trained weights yet: residues are placed at the "
               "CNN's C-alpha points, residue types and side chains are not predicted")
        warnings.append(msg)
        rep.log(f"[refine] WARNING: {msg}")
        from .postprocess import prediction_from_points

        pred = prediction_from_points(nodes, node_prob)
    else:
        model, _ = gnn
        gnn_map, sharpened_b = graph_network_map(work, cfg.map)
        if sharpened_b:
            rep.log(f"[refine] the graph network reads the map sharpened by "
                    f"B = {sharpened_b:.0f} A^2")
        pred = _with_oom_fallback(
            lambda dev: model.to(dev).predict_map(nodes, gnn_map, sequences, device=dev,
                                                  should_stop=rep.check_stop,
                                                  progress=rep.report),
            torch_device, warnings, rep)

    rep.stage("chains", "linking chains, building side chains, aligning sequences")
    built = build_models(pred, sequences or None, cfg.postprocess)

    if len(built.unpruned) == 0:
        msg = (f"no chains could be linked from the {len(nodes)} residues found: the unpruned "
               "model is empty (is the map's resolution better than ~4.5 A?)")
        warnings.append(msg)
        rep.log(f"[chains] WARNING: {msg}")

    rep.stage("write", f"writing models to {output_dir}")
    metadata = {
        "software": f"ChimeraX-ModelAngelo {VERSION}",
        "map": name,
        "voxel_size_input": [float(v) for v in grid.voxel_size],
        "device": str(torch_device),
        "cnn_weights": cnn_record.get("summary", "shipped"),
        "gnn_weights": "none (untrained)" if gnn is None else "shipped",
        "config": cfg.to_dict()["postprocess"],
    }
    write_mmcif(built.unpruned, paths["unpruned"], entities=sequences or None,
                chain_entity=built.chain_entity, metadata=metadata, overwrite=overwrite)
    pruned_path = None
    if built.pruned is not None and len(built.pruned) == 0:
        evalues = [c["evalue"] for c in built.chain_info if c["evalue"] is not None]
        best = f" (best E-value {min(evalues):.2g} over {len(evalues)} chains)" if evalues else ""
        msg = (f"no chain matched a sequence well enough{best}: the pruned model is empty and "
               "not written. The unpruned model holds everything built. If the sequences are "
               "this map's, its chains may be too short or too uncertain to align (maps worse "
               "than ~3.8 A); if they may not be, build without sequences and run "
               "'modelangelo search' on the output folder to find the protein")
        warnings.append(msg)
        rep.log(f"[write] {msg}")
    elif built.pruned is not None:
        write_mmcif(built.pruned, paths["pruned"], entities=sequences or None,
                    chain_entity=built.pruned_chain_entity, metadata=metadata, overwrite=overwrite)
        pruned_path = paths["pruned"]
    if not sequences:
        from .alignment import write_hmm

        paths["hmm_dir"].mkdir(exist_ok=True)
        for i, hmm in enumerate(built.hmms):
            write_hmm(hmm, paths["hmm_dir"] / f"chain_{i + 1:04d}.hmm")
    rep.finish()

    summary = {
        "map": name,
        "residues_unpruned": len(built.unpruned),
        "chains_unpruned": len(built.unpruned.chain_names),
        "residues_pruned": None if built.pruned is None else len(built.pruned),
        "chains_pruned": None if built.pruned is None else len(built.pruned.chain_names),
        "chains": built.chain_info,
        "gnn_map_sharpening_b": round(sharpened_b, 1),
        "timings_s": rep.timings,
        "total_s": round(time.perf_counter() - t_start, 3),
        "warnings": warnings,
        "device": str(torch_device),
    }
    tmp = paths["summary"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=_json_default))
    tmp.replace(paths["summary"])
    return BuildResult(paths["unpruned"], pruned_path, summary, warnings)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


def _detect(model, work: MapGrid, cnn_cfg, device, rep: _Reporter):
    from .inference import pick_peaks, predict_ca

    pred = predict_ca(model, work, cnn_cfg, device=device, bf16=False,
                      progress=rep.report, should_stop=lambda: bool(
                          rep.should_stop and rep.should_stop()))
    return pick_peaks(pred, cnn_cfg)


def _with_oom_fallback(fn, device, warnings: list[str], rep: _Reporter):
    """Run ``fn(device)``; on CUDA out-of-memory, retry once on the CPU with a warning."""
    import torch

    try:
        return fn(device)
    except torch.cuda.OutOfMemoryError:
        if device.type != "cuda":
            raise
        torch.cuda.empty_cache()
        msg = "the GPU ran out of memory; this stage was re-run on the CPU (slower)"
        warnings.append(msg)
        rep.log(f"WARNING: {msg}")
        return fn(torch.device("cpu"))
