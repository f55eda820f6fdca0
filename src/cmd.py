"""ChimeraX commands: ``modelangelo build``, ``modelangelo search``, ``modelangelo stop``.

A thin layer over :mod:`.pipeline`: it turns what ChimeraX holds (a ``Volume``, command
keywords) into the pipeline's inputs (a :class:`~.mapio.MapGrid` in the map data's own
frame, sequences, an output folder), runs the build (in the calling thread with
``wait true``, else in a worker thread) and opens the written mmCIF files on the map.
Errors the user can fix (:class:`~.errors.ModelAngeloError`) become ``UserError``.

Frames: the pipeline works in the map's data coordinates (``origin + ijk * step``, the
frame of the map file and of deposited models). ChimeraX shows that frame at the map
model's ``scene_position``; opened models get the same position, so they land on the
density even if the map was moved.
"""

from __future__ import annotations

import re
import threading
import time
import traceback
import weakref
from pathlib import Path

import numpy as np

HELP_URL = "help:user/commands/modelangelo.html"
DEVICES = ("auto", "cpu", "gpu")
OPEN_CHOICES = ("both", "pruned", "unpruned")


def register_command(command_name: str, logger) -> None:
    """Called by the bundle API the first time a ``modelangelo`` command is used."""
    from chimerax.core.commands import (
        BoolArg,
        CmdDesc,
        EnumOf,
        OpenFileNameArg,
        OpenFolderNameArg,
        PositiveFloatArg,
        PositiveIntArg,
        SaveFolderNameArg,
        register,
    )
    from chimerax.map import MapArg

    if command_name == "modelangelo build":
        desc = CmdDesc(
            required=[("volume", MapArg)],
            keyword=[
                ("sequence", OpenFileNameArg),
                ("device", EnumOf(DEVICES)),
                ("output_folder", SaveFolderNameArg),
                ("open", EnumOf(OPEN_CHOICES)),
                ("wait", BoolArg),
                ("mask", MapArg),
            ],
            synopsis="build protein models into a cryo-EM map",
            url=HELP_URL + "#build",
        )
        register(command_name, desc, modelangelo_build, logger=logger)
    elif command_name == "modelangelo search":
        desc = CmdDesc(
            required=[("build_folder", OpenFolderNameArg)],
            keyword=[("database", OpenFileNameArg), ("top", PositiveIntArg),
                     ("max_evalue", PositiveFloatArg)],
            required_arguments=["database"],
            synopsis="identify the proteins of a no-sequence build in a FASTA database",
            url=HELP_URL + "#search",
        )
        register(command_name, desc, modelangelo_search, logger=logger)
    elif command_name == "modelangelo color":
        from chimerax.atomic import StructuresArg

        desc = CmdDesc(optional=[("structures", StructuresArg)],
                       synopsis="colour built models by per-residue confidence (alphafold palette)",
                       url=HELP_URL + "#color")
        register(command_name, desc, modelangelo_color, logger=logger)
    elif command_name == "modelangelo install":
        desc = CmdDesc(keyword=[("dry_run", BoolArg)],
                       synopsis="install the Python packages ModelAngelo needs (PyTorch, ...)",
                       url=HELP_URL + "#install")
        register(command_name, desc, modelangelo_install, logger=logger)
    elif command_name == "modelangelo stop":
        desc = CmdDesc(synopsis="stop running ModelAngelo builds", url=HELP_URL + "#stop")
        register(command_name, desc, modelangelo_stop, logger=logger)
    else:
        raise ValueError(f"unknown ModelAngelo command {command_name!r}")


# ---------------------------------------------------------------------------------------
# Volume -> MapGrid
# ---------------------------------------------------------------------------------------
def volume_to_grid(volume, mask=None):
    """The whole map (not the displayed subregion/step) as a :class:`~.mapio.MapGrid`.

    The grid is in the map data's own frame (independent of where the map model has
    been moved). Rotated or skewed grids are refused. With ``mask`` (another map), the
    density is multiplied by the mask's values (clipped to [0, 1], 0 outside the mask),
    interpolated at the map's grid points in scene coordinates.
    """
    from chimerax.core.errors import UserError

    from .mapio import MapGrid

    d = volume.data
    tf = np.asarray(d.ijk_to_xyz_transform.matrix, dtype=np.float64)  # [3, 4]
    axes, origin = tf[:, :3], tf[:, 3]
    step = np.diag(axes).copy()
    off_diagonal = axes - np.diag(step)
    if np.any(step <= 0) or np.abs(off_diagonal).max() > 1e-6 * step.max():
        raise UserError(
            f"map {volume.name} (#{volume.id_string}) has a rotated or skewed grid "
            f"(rotation {d.rotation}, cell angles {d.cell_angles}); ModelAngelo needs an "
            "axis-aligned grid: resample it first, e.g. 'volume resample "
            f"#{volume.id_string} onGrid <axis-aligned map>'")
    matrix = volume.full_matrix()  # [nz, ny, nx], step 1, full region
    data = np.array(matrix, dtype=np.float32, copy=True)
    if mask is not None:
        data *= _mask_values(volume, mask)
    return MapGrid(data=data, voxel_size=step, origin=origin)


def _mask_values(volume, mask) -> np.ndarray:
    """``mask`` interpolated at every grid point of ``volume``, clipped to [0, 1]."""
    d = volume.data
    nx, ny, nz = d.size
    values = np.empty((nz, ny, nx), dtype=np.float32)
    ii, jj = np.meshgrid(np.arange(nx), np.arange(ny), indexing="xy")  # [ny, nx]
    tf = d.ijk_to_xyz_transform
    for k in range(nz):  # one z slab at a time bounds memory for large maps
        ijk = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)], axis=1).astype(np.float32)
        xyz = tf.transform_points(ijk)  # map data frame
        vals, _outside = mask.interpolated_values(
            xyz, point_xform=volume.scene_position, out_of_bounds_list=True)
        values[k] = vals.reshape(ny, nx)  # points outside the mask interpolate to 0
    np.clip(values, 0.0, 1.0, out=values)
    return values


# ---------------------------------------------------------------------------------------
# Output folder and names
# ---------------------------------------------------------------------------------------
def output_name(map_name: str) -> str:
    """A file-name-safe base name for a map's outputs (``emd_2566.mrc`` -> ``emd_2566``)."""
    from .pipeline import map_name as strip_suffixes

    stem = strip_suffixes(Path(map_name.strip().replace("/", "_") or "map"))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "map"


def default_output_folder(name: str) -> Path:
    """A new folder ``~/Documents/ModelAngelo/<name>_<date>_<time>[_<n>]`` (never reused)."""
    base = Path.home() / "Documents" / "ModelAngelo"
    stamp = time.strftime("%Y%m%d_%H%M%S")
    base.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = base / (f"{name}_{stamp}" + (f"_{n}" if n > 1 else ""))
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    from chimerax.core.errors import UserError

    raise UserError(f"could not create a new output folder in {base}")


# ---------------------------------------------------------------------------------------
# Build jobs
# ---------------------------------------------------------------------------------------
_jobs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # session -> [BuildJob]


def running_jobs(session) -> list[BuildJob]:
    return [j for j in _jobs.get(session, []) if j.state in ("pending", "running")]


class BuildJob:
    """One ``modelangelo build``: the pipeline run, then the results opened on the map.

    ``run()`` works in the calling (main) thread; ``start()`` runs the pipeline in a worker
    thread and hands progress, log lines and the final opening of models back to the main
    thread through ``session.ui.thread_safe``. ``stop()`` asks the pipeline to stop at
    its next check. Listeners (``add_listener(f)``, ``f(job, event, data)``) hear
    ``"progress"`` ``(stage, fraction)``, ``"log"`` ``message`` and ``"finished"``
    ``state``, always in the main thread.
    """

    def __init__(self, session, volume, grid, sequences, output_dir: Path, name: str,
                 device: str = "auto", open_mode: str = "both"):
        self.session = session
        self.volume = volume
        self.grid = grid
        self.sequences = sequences
        self.output_dir = Path(output_dir)
        self.name = name
        self.device = device
        self.open_mode = open_mode
        # pending -> running -> finished | failed | stopped (the last set in the main thread
        # when the job is wrapped up, so ``state`` is consistent with the opened models)
        self.state = "pending"
        self.result = None  # pipeline.BuildResult
        self.error: str | None = None
        self.exception: BaseException | None = None
        self.structures: list = []
        self.group = None
        self.progress: tuple[str, float] | None = None
        self.thread: threading.Thread | None = None
        self.done = threading.Event()  # set once the results are open (or it failed)
        self._outcome = "failed"
        self._stop_event = threading.Event()
        self._listeners: list = []
        self._logged: list[str] = []  # pipeline log lines, to not repeat its warnings
        self._map_position = volume.scene_position
        self._t0 = 0.0
        _jobs.setdefault(session, []).append(self)

    # -- control -------------------------------------------------------------------
    def add_listener(self, func) -> None:
        self._listeners.append(func)

    def stop(self) -> None:
        self._stop_event.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop_event.is_set()

    def run(self):
        """Build and open the results in this thread; raises UserError on failure."""
        from chimerax.core.errors import UserError

        from .errors import ModelAngeloError

        self.state = "running"
        self._execute()
        self._finish()
        if self.state == "failed":
            if self.exception is not None and not isinstance(self.exception, ModelAngeloError):
                raise self.exception  # a bug: ChimeraX reports it with its traceback
            raise UserError(self.error)
        return self

    def start(self):
        """Build in a worker thread; results open in the main thread when done."""
        self.state = "running"
        self.thread = threading.Thread(target=self._thread_main, name=f"ModelAngelo {self.name}",
                                       daemon=True)
        self.thread.start()
        return self

    # -- worker side ---------------------------------------------------------------
    def _thread_main(self) -> None:
        self._execute()
        self._in_main_thread(self._finish)

    def _execute(self) -> None:
        from .errors import JobStopped, ModelAngeloError
        from .pipeline import run_build

        self._t0 = time.perf_counter()
        try:
            self.result = run_build(
                self.grid, self.sequences, self.output_dir, self.name, device=self.device,
                progress=self._on_progress, should_stop=self._stop_event.is_set,
                log=self._on_log)
        except JobStopped as exc:
            self._outcome, self.error = "stopped", str(exc)
        except ModelAngeloError as exc:
            self._outcome, self.error, self.exception = "failed", str(exc), exc
        except Exception as exc:  # a bug: keep the traceback for the report
            self._outcome, self.exception = "failed", exc
            self.error = (f"ModelAngelo build failed unexpectedly: {exc!r}\n"
                          + traceback.format_exc())
        else:
            self._outcome = "finished"
        finally:
            self.grid = None  # free the map copy

    def _on_progress(self, stage: str, fraction: float) -> None:
        self._in_main_thread(self._report_progress, stage, fraction)

    def _on_log(self, message: str) -> None:
        self._in_main_thread(self._report_log, message)

    def _in_main_thread(self, func, *args) -> None:
        if threading.current_thread() is threading.main_thread():
            func(*args)
        else:
            self.session.ui.thread_safe(func, *args)

    # -- main-thread side ----------------------------------------------------------
    def _notify(self, event: str, data) -> None:
        for func in list(self._listeners):
            try:
                func(self, event, data)
            except Exception:
                self.session.logger.report_exception(f"ModelAngelo {event} listener failed")

    def _report_progress(self, stage: str, fraction: float) -> None:
        self.progress = (stage, fraction)
        if not self.volume.deleted:  # where the models go if the map is closed meanwhile
            self._map_position = self.volume.scene_position
        self.session.logger.status(f"ModelAngelo {self.name}: {stage} {fraction:.0%}")
        self._notify("progress", (stage, fraction))

    def _report_log(self, message: str) -> None:
        self._logged.append(message)
        self.session.logger.info(f"ModelAngelo: {message}")
        self._notify("log", message)

    def _finish(self) -> None:
        logger = self.session.logger
        self.state = self._outcome  # changes only here, in the main thread
        try:
            if self.state == "finished":
                try:
                    self._open_results()
                except Exception as exc:
                    self.state = "failed"
                    self.error = (f"models were written to {self.output_dir} but could not be "
                                  f"opened: {exc}")
                else:
                    self._log_summary()
            if self.state == "stopped":
                logger.info(f"ModelAngelo build of {self.name} stopped ({self.error}); "
                            f"partial files, if any, are in {self.output_dir}")
            elif self.state == "failed" and self.thread is not None:
                logger.error(f"ModelAngelo build of {self.name} failed: {self.error}")
        finally:
            jobs = _jobs.get(self.session, [])
            if self in jobs:
                jobs.remove(self)
            self.done.set()
            self._notify("finished", self.state)

    def _open_results(self) -> None:
        result = self.result
        wanted = []
        if self.open_mode in ("both", "pruned") and result.pruned_path is not None:
            wanted.append(("pruned", result.pruned_path))
        if self.open_mode in ("both", "unpruned") or result.pruned_path is None:
            wanted.append(("unpruned", result.unpruned_path))
        volume = self.volume
        position = self._map_position if volume.deleted else volume.scene_position
        self.group, self.structures = open_models(
            self.session, [(f"{self.name} {label}", Path(p)) for label, p in wanted],
            group_name=f"ModelAngelo {volume.name}", position=position)

    def _log_summary(self) -> None:
        logger = self.session.logger
        s = self.result.summary or {}
        parts = [f"{s.get('residues_unpruned', '?')} residues in "
                 f"{s.get('chains_unpruned', '?')} chains"]
        if s.get("residues_pruned") is not None:
            parts.append(f"{s['residues_pruned']} residues in {s.get('chains_pruned', '?')} "
                         "chains after pruning")
        seconds = time.perf_counter() - self._t0
        ids = ", ".join(f"#{m.id_string}" for m in self.structures)
        logger.info(f"ModelAngelo built {'; '.join(parts)} into {self.volume.name} in "
                    f"{seconds:.0f} s on {s.get('device', self.device)}; opened as {ids}; "
                    f"files in {self.output_dir}")
        for warning in self.result.warnings:
            if not any(warning in line for line in self._logged):
                logger.warning(f"ModelAngelo: {warning}")


def open_models(session, files: list[tuple[str, Path]], *, group_name: str, position):
    """Open mmCIF ``files`` (name, path) under one new parent model, each structure at
    ``position`` (the map's scene position), coloured by B-factor (model confidence)
    with the AlphaFold palette. Returns ``(group, structures)``."""
    from chimerax.atomic import AtomicStructure
    from chimerax.core.models import Model

    structures = []
    for name, path in files:
        # log_info=False: no per-chain table in the log (a build can have hundreds of
        # chains); the build's summary line says what was opened.
        models, _status = session.open_command.open_data(str(path), format="mmcif",
                                                         in_file_history=True, log_info=False)
        for m in models:
            if isinstance(m, AtomicStructure):
                m.name = name
                m.position = position
                structures.append(m)
            else:
                m.delete()
    if not structures:
        return None, []
    group = Model(group_name, session)
    session.models.add([group])
    session.models.add(structures, parent=group)
    color_by_confidence(session, group.atomspec)
    return group, structures


def color_by_confidence(session, spec: str) -> None:
    """Confidence (0-100, in the B-factor column) coloured with the AlphaFold palette."""
    from chimerax.core.commands import run

    run(session, f"color bfactor {spec} palette alphafold", log=False)


# ---------------------------------------------------------------------------------------
# Command functions
# ---------------------------------------------------------------------------------------
def modelangelo_build(session, volume, sequence=None, device="auto", output_folder=None,
                      open="both", wait=None, mask=None):
    """``modelangelo build #1 [sequence seq.fasta] [device auto|cpu|gpu]
    [outputFolder DIR] [open both|pruned|unpruned] [wait true|false] [mask #2]``

    ``wait`` defaults to true without a GUI (scripts) and false with one (the build
    runs in the background; ``modelangelo stop`` stops it). Returns the :class:`BuildJob`.
    """
    from chimerax.core.errors import UserError

    from .errors import ModelAngeloError

    check_requirements()
    if wait is None:
        wait = not session.ui.is_gui
    busy = running_jobs(session)
    if busy:
        raise UserError(f"a ModelAngelo build ({busy[0].name}) is already running; wait for it "
                        "or stop it with 'modelangelo stop'")
    if mask is not None and mask is volume:
        raise UserError("the mask must be a different map from the one to build into")
    name = output_name(volume.name)
    try:
        from .pipeline import prepare_output_dir, resolve_device
        from .sequences import read_fasta

        resolve_device(device)  # fail now (not in the worker) when there is no GPU
        sequences = None
        if sequence is not None:
            fasta_warnings: list[str] = []
            sequences = read_fasta(Path(sequence), warnings=fasta_warnings)
            for w in fasta_warnings:
                session.logger.warning(f"ModelAngelo: {w}")
        folder = Path(output_folder) if output_folder else default_output_folder(name)
        prepare_output_dir(folder, name, overwrite=False)  # refuses to overwrite results
        grid = volume_to_grid(volume, mask)
    except ModelAngeloError as exc:
        raise UserError(str(exc)) from None

    job = BuildJob(session, volume, grid, sequences, folder, name, device=device,
                   open_mode=open)
    mode = "sequence mode" if sequences else "no-sequence mode"
    session.logger.info(f"ModelAngelo: building into {volume.name} (#{volume.id_string}), "
                        f"{mode}, device {device}, output {folder}")
    if wait:
        return job.run()
    return job.start()


def modelangelo_color(session, structures=None):
    """``modelangelo color [#2]``: back to confidence colouring after recolouring.

    Without structures, every model opened by a ModelAngelo build is recoloured."""
    from chimerax.atomic import AtomicStructure
    from chimerax.core.errors import UserError

    if structures is None:
        structures = [m for m in session.models.list(type=AtomicStructure)
                      if m.parent is not None and m.parent.name.startswith("ModelAngelo ")]
    if not structures:
        raise UserError("no ModelAngelo models are open (give the models to colour, e.g. #2)")
    color_by_confidence(session, " ".join(s.atomspec for s in structures))
    session.logger.info(f"ModelAngelo: coloured {len(structures)} model(s) by confidence")


def check_requirements() -> None:
    """UserError naming the missing packages and how to install them."""
    from chimerax.core.errors import UserError

    from .environment import missing_message, missing_requirements

    missing = missing_requirements()
    if missing:
        raise UserError(missing_message(missing))


def modelangelo_install(session, dry_run=False):
    """``modelangelo install [dryRun true]``: pip-install the packages builds need into
    ChimeraX's own Python (blocks until pip finishes; torch is a large download)."""
    from chimerax.core.errors import UserError

    from .environment import REQUIREMENTS, run_pip_install

    session.logger.info("ModelAngelo: installing " + ", ".join(REQUIREMENTS.values())
                        + (" (dry run)" if dry_run else ""))
    status = run_pip_install(list(REQUIREMENTS.values()), dry_run=dry_run,
                             log=session.logger.info)
    if status != 0:
        raise UserError(f"pip failed (exit status {status}); see the log above")
    session.logger.info("ModelAngelo: packages installed" if not dry_run
                        else "ModelAngelo: dry run finished, nothing installed")


def modelangelo_stop(session):
    """Ask every running build of this session to stop."""
    jobs = running_jobs(session)
    if not jobs:
        session.logger.info("No ModelAngelo build is running")
        return []
    for job in jobs:
        job.stop()
        session.logger.info(f"Stopping ModelAngelo build of {job.name} "
                            "(it stops at the next step)")
    return jobs


def modelangelo_search(session, build_folder, database=None, top=5, max_evalue=10.0):
    """Match the HMM profiles of a no-sequence build against a FASTA database.

    Logs the best ``top`` hits (E-value at most ``max_evalue``) of each chain's profile
    and returns them: ``[(profile name, [SearchHit, ...]), ...]``.
    """
    from chimerax.core.errors import UserError

    from .errors import ModelAngeloError

    profiles = Path(build_folder) / "hmm_profiles"
    if not profiles.is_dir():
        raise UserError(f"{build_folder} has no hmm_profiles folder: give the output folder "
                        "of a 'modelangelo build' run without a sequence")
    from .alignment import read_hmms, search_profiles

    try:
        hmms = read_hmms(profiles)
        if not hmms:
            raise ModelAngeloError(f"{profiles} holds no HMM profiles (*.hmm)")
        hits = search_profiles(hmms, Path(database), top=top, max_evalue=max_evalue)
    except ModelAngeloError as exc:
        raise UserError(str(exc)) from None
    names = [h.name.decode() if isinstance(h.name, bytes) else str(h.name) for h in hmms]
    lines = [f"ModelAngelo search of {len(hmms)} chain profiles in {database}:"]
    for name, chain_hits in zip(names, hits):
        if not chain_hits:
            lines.append(f"  {name}: no hit with E-value <= {max_evalue:g}")
        for hit in chain_hits:
            lines.append(
                f"  {name}: {hit.rank}. {hit.name} {hit.description}".rstrip()
                + f"  E-value {hit.evalue:.2g}, {hit.score:.1f} bits, chain residues "
                f"{hit.node_from}-{hit.node_to} = {hit.name} {hit.target_from}-"
                f"{hit.target_to} of {hit.target_length}")
    session.logger.info("\n".join(lines))
    return list(zip(names, hits))
