"""ChimeraX commands: ``modelangelo build``, ``modelangelo search``, ``modelangelo stop``.

A thin layer over :mod:`.pipeline`: it turns what ChimeraX holds (a ``Volume``, command
keywords) into the pipeline's inputs (a :class:`~.mapio.MapGrid` in the map data's own
frame, sequences, an output folder), runs the build and opens the written mmCIF files on
the map. Errors the user can fix (:class:`~.errors.ModelAngeloError`) become ``UserError``.

Where the build runs (``runIn``, see :mod:`.environment`): in the managed environment
(:class:`SubprocessBuildJob`: the map and sequences are written into the output folder
and ``<venv python> -m chimerax.modelangelo build ... --progress-json`` runs as a child
process whose events are read line by line), or in ChimeraX's own Python
(:class:`BuildJob`: ``pipeline.run_build`` in a worker thread). ``auto`` (default)
takes the managed environment when it is ready, else ChimeraX's Python when that has
the packages. Either way the command returns at once (``wait false``) or after the
models are open (``wait true``), with the same progress, log and stop handling.

Frames: the pipeline works in the map's data coordinates (``origin + ijk * step``, the
frame of the map file and of deposited models). ChimeraX shows that frame at the map
model's ``scene_position``; opened models get the same position, so they land on the
density even if the map was moved.
"""

from __future__ import annotations

import atexit
import collections
import json
import re
import subprocess
import sys
import threading
import time
import traceback
import weakref
from pathlib import Path

import numpy as np

HELP_URL = "help:user/commands/modelangelo.html"
DEVICES = ("auto", "cpu", "gpu")
OPEN_CHOICES = ("both", "pruned", "unpruned")
RUN_IN = ("auto", "venv", "chimerax")
INSTALL_TARGETS = ("venv", "chimerax")
CLI_DEVICE = {"auto": "auto", "cpu": "cpu", "gpu": "cuda"}


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
                ("run_in", EnumOf(RUN_IN)),
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
        desc = CmdDesc(keyword=[("target", EnumOf(INSTALL_TARGETS)),
                                ("location", SaveFolderNameArg),
                                ("dry_run", BoolArg), ("check", BoolArg),
                                ("python", OpenFileNameArg),
                                ("system_site_packages", BoolArg)],
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

    How the pipeline itself runs is :meth:`_run_pipeline`: here ``pipeline.run_build`` in
    this Python; :class:`SubprocessBuildJob` runs it in the managed environment.
    """

    runs_in = "chimerax"

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

        self._t0 = time.perf_counter()
        try:
            self.result = self._run_pipeline()
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

    def _run_pipeline(self):
        """The build itself, in this thread; returns the ``pipeline.BuildResult``."""
        from .pipeline import run_build

        return run_build(self.grid, self.sequences, self.output_dir, self.name,
                         device=self.device, progress=self._on_progress,
                         should_stop=self._stop_event.is_set, log=self._on_log)

    def _on_progress(self, stage: str, fraction: float) -> None:
        self._in_main_thread(self._report_progress, stage, fraction)

    def _on_log(self, message: str) -> None:
        self._in_main_thread(self._report_log, message)

    def _on_warning(self, message: str) -> None:
        self._in_main_thread(self._report_warning, message)

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

    def _report_warning(self, message: str) -> None:
        self._logged.append(message)
        self.session.logger.warning(f"ModelAngelo: {message}")
        self._notify("log", f"WARNING: {message}")

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


class SubprocessBuildJob(BuildJob):
    """A build in the managed environment: ``<python> -m chimerax.modelangelo build MAP
    --sequence FASTA -o FOLDER --name NAME --device DEV --progress-json``.

    The map as ChimeraX holds it (the whole grid, masked, in its data frame) and the
    sequences are first written into the output folder (``<name>_input.mrc``,
    ``<name>_input.fasta``; they stay there as the exact inputs of the build). The child's
    JSON events (see :mod:`.cli.build`) are read line by line in the thread that runs
    the job and go to the same progress/log path as an in-process build; its stderr is
    kept (the last lines) for the error message of a crash. ``stop()`` terminates the
    child (SIGTERM: it stops at its next check), and kills it if it is still there
    :attr:`STOP_GRACE_S` seconds later; the job then ends "stopped" and opens nothing.
    """

    runs_in = "venv"
    STOP_GRACE_S = 5.0
    STDERR_LINES = 40

    def __init__(self, *args, python, **kw):
        super().__init__(*args, **kw)
        self.python = Path(python)
        self.process: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.command: list[str] = []
        self._process_lock = threading.Lock()
        self._stderr_tail: collections.deque[str] = collections.deque(
            maxlen=self.STDERR_LINES)

    def stop(self) -> None:
        super().stop()
        with self._process_lock:  # started, or will see the stop request before starting
            process = self.process
        if process is not None:
            _terminate(process, self.STOP_GRACE_S)

    def input_paths(self) -> tuple[Path, Path]:
        return (self.output_dir / f"{self.name}_input.mrc",
                self.output_dir / f"{self.name}_input.fasta")

    def command_line(self, map_path: Path, fasta_path: Path | None) -> list[str]:
        args = [str(self.python), "-s", "-m", "chimerax.modelangelo", "build", str(map_path)]
        if fasta_path is not None:
            args += ["--sequence", str(fasta_path)]
        return args + ["--output-dir", str(self.output_dir), "--name", self.name,
                       "--device", CLI_DEVICE.get(self.device, self.device),
                       "--progress-json"]

    def _run_pipeline(self):
        from .environment import popen_flags, subprocess_env
        from .errors import BuildProcessError, JobStopped, ModelAngeloError
        from .mapio import write_map
        from .pipeline import BuildResult
        from .sequences import write_fasta

        map_path, fasta_path = self.input_paths()
        write_map(map_path, self.grid, overwrite=True)  # our own file from an earlier try
        self.grid = None  # free the map copy while the build runs
        if self.sequences:
            write_fasta(fasta_path, self.sequences, overwrite=True)
        else:
            fasta_path = None
        self.command = self.command_line(map_path, fasta_path)
        with self._process_lock:
            if self.stop_requested:
                raise JobStopped("stopped by the user before the build process started")
            try:
                self.process = subprocess.Popen(
                    self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
                    cwd=self.output_dir, env=subprocess_env(),
                    start_new_session=not sys.platform.startswith("win"), **popen_flags())
            except OSError as exc:
                raise BuildProcessError(f"cannot start {self.python}: {exc}") from exc
        process = self.process
        _live_processes.add(process)
        stderr_reader = threading.Thread(target=self._read_stderr, args=(process.stderr,),
                                         name=f"ModelAngelo {self.name} stderr", daemon=True)
        stderr_reader.start()
        result = error = None
        try:
            for line in process.stdout:
                event = _parse_event(line)
                if event is None:  # not ours: keep it for a crash report
                    if line.strip():
                        self._stderr_tail.append(line.rstrip())
                    continue
                kind = event["event"]
                if kind == "progress":
                    self._on_progress(str(event["stage"]), float(event["fraction"]))
                elif kind == "log":
                    self._on_log(str(event["message"]))
                elif kind == "warning":
                    self._on_warning(str(event["message"]))
                elif kind == "result":
                    result = event
                elif kind == "error":
                    error = event
        except BaseException:
            process.kill()  # never leave the child running behind a failed job
            raise
        finally:
            self.returncode = process.wait()
            stderr_reader.join(5)
            _live_processes.discard(process)
        if self.stop_requested:
            raise JobStopped(error["message"] if error and error.get("kind") == "stopped"
                             else "stopped by the user (the build process was ended)")
        if error is not None:
            if error.get("kind") == "stopped":
                raise JobStopped(error["message"])
            if error.get("kind") == "user":
                raise ModelAngeloError(error["message"])
            raise BuildProcessError("the build process failed unexpectedly: "
                                    f"{error['message']}")
        if self.returncode != 0 or result is None:
            tail = "\n".join(self._stderr_tail) or "(no output)"
            why = (f"exited with status {self.returncode}" if self.returncode != 0
                   else "ended without a result")
            raise BuildProcessError(f"the build process ({self.python}) {why}; its last "
                                    f"output:\n{tail}")
        return BuildResult(Path(result["unpruned"]),
                           Path(result["pruned"]) if result.get("pruned") else None,
                           dict(result.get("summary") or {}), list(result.get("warnings") or []))

    def _read_stderr(self, stream) -> None:
        for line in stream:
            if line.strip():
                self._stderr_tail.append(line.rstrip())


def _parse_event(line: str) -> dict | None:
    """A ``--progress-json`` event, or None for any other line."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None


_live_processes: weakref.WeakSet = weakref.WeakSet()  # running build processes


def _terminate(process: subprocess.Popen, grace: float) -> None:
    """Ask ``process`` to end (SIGTERM); kill it if it is still there after ``grace`` s.
    Returns at once (the kill, if needed, comes from a timer thread)."""
    if process.poll() is not None:
        return
    try:
        process.terminate()
    except OSError:
        return

    timer = threading.Timer(grace, _kill_if_alive, args=(process,))
    timer.daemon = True
    timer.start()


def _kill_if_alive(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            process.kill()
        except OSError:
            pass


@atexit.register
def _end_build_processes() -> None:
    """ChimeraX quits: builds it started do not run on without it."""
    for process in list(_live_processes):
        _kill_if_alive(process)


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
                      open="both", wait=None, mask=None, run_in="auto"):
    """``modelangelo build #1 [sequence seq.fasta] [device auto|cpu|gpu]
    [outputFolder DIR] [open both|pruned|unpruned] [wait true|false] [mask #2]
    [runIn auto|venv|chimerax]``

    ``wait`` defaults to true without a GUI (scripts) and false with one (the build
    runs in the background; ``modelangelo stop`` stops it). ``runIn``: see
    :func:`where_to_run`. Returns the :class:`BuildJob` (a :class:`SubprocessBuildJob`
    in the managed environment).
    """
    from chimerax.core.errors import UserError

    from .errors import ModelAngeloError

    environment = where_to_run(run_in)  # None: in ChimeraX's Python
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
        from .pipeline import prepare_output_dir
        from .sequences import read_fasta

        if environment is None:
            from .pipeline import resolve_device

            # fail now (not in the worker) when there is no GPU; in the managed
            # environment the build process says so at once
            resolve_device(device)
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

    if environment is None:
        job = BuildJob(session, volume, grid, sequences, folder, name, device=device,
                       open_mode=open)
        where = "in ChimeraX's Python"
    else:
        job = SubprocessBuildJob(session, volume, grid, sequences, folder, name,
                                 device=device, open_mode=open, python=environment.python)
        where = f"in the environment {environment.location}"
    mode = "sequence mode" if sequences else "no-sequence mode"
    session.logger.info(f"ModelAngelo: building into {volume.name} (#{volume.id_string}), "
                        f"{mode}, device {device}, {where}, output {folder}")
    if wait:
        return job.run()
    return job.start()


def where_to_run(run_in: str = "auto"):
    """Where a build runs: the managed environment's :class:`~.environment.EnvironmentReport`
    (``venv``), or None for ChimeraX's own Python (``chimerax``). ``auto``: the managed
    environment when it is ready, else ChimeraX's Python when it has the packages.
    UserError, saying what to do, when the chosen place cannot run builds."""
    from chimerax.core.errors import UserError

    from .environment import (
        HOST_REQUIREMENTS,
        environment_report,
        missing_message,
        missing_requirements,
    )

    report = None
    if run_in in ("auto", "venv"):
        report = environment_report()
        if report.ready:
            host_missing = missing_requirements(HOST_REQUIREMENTS)
            if host_missing:  # needed to write the map for the environment
                raise UserError(missing_message(host_missing))
            return report
        if run_in == "venv":
            raise UserError(f"{report.problem}: create or update it with 'modelangelo install'"
                            " (PyTorch is a large download)")
    missing = missing_requirements()
    if not missing:
        return None
    if run_in == "chimerax":
        raise UserError(missing_message(missing)
                        .replace("'modelangelo install'", "'modelangelo install target chimerax'"))
    raise UserError(f"ModelAngelo needs PyTorch and other packages: ChimeraX's Python lacks "
                    f"{', '.join(missing)}, and {report.problem}. Set up the environment once "
                    "with the command 'modelangelo install' (PyTorch is a large download).")


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


def modelangelo_install(session, target="venv", location=None, dry_run=False, check=False,
                        python=None, system_site_packages=False):
    """``modelangelo install [target venv|chimerax] [location FOLDER] [dryRun true]
    [check true] [python PYTHON] [systemSitePackages true]``

    ``target venv`` (default): create or update the managed environment (a virtual
    environment made with ``python``, default ChimeraX's own Python) with the packages
    and this bundle's code. ``target chimerax``: pip-install the packages into ChimeraX's
    own Python instead. Blocks until pip finishes (torch is a large download) and logs
    pip's output. ``check true`` installs nothing: it reports what is missing where and
    where builds would run. Returns the environment report (``target venv``).
    """
    from chimerax.core.errors import UserError

    from .environment import (
        HOST_REQUIREMENTS,
        REQUIREMENTS,
        install_environment,
        missing_requirements,
        run_pip_install,
        venv_location,
    )
    from .errors import ModelAngeloError

    logger = session.logger
    if check:
        return _log_check(session, location)
    if target == "chimerax" or missing_requirements(HOST_REQUIREMENTS):
        # target venv: ChimeraX still needs the small host packages (mrcfile)
        reqs = list((REQUIREMENTS if target == "chimerax" else HOST_REQUIREMENTS).values())
        logger.info("ModelAngelo: installing " + ", ".join(reqs) + " into ChimeraX's Python"
                    + (" (dry run)" if dry_run else ""))
        status = run_pip_install(reqs, dry_run=dry_run, log=logger.info)
        if status != 0:
            raise UserError(f"pip failed (exit status {status}); see the log above")
        if target == "chimerax":
            logger.info("ModelAngelo: packages installed" if not dry_run
                        else "ModelAngelo: dry run finished, nothing installed")
            return None
    loc = venv_location(location)
    base = python or _chimerax_python()
    logger.info(f"ModelAngelo: {'checking' if dry_run else 'setting up'} the environment "
                f"{loc} (made with {base}): " + ", ".join(REQUIREMENTS.values())
                + " and the ModelAngelo bundle" + (" (dry run)" if dry_run else ""))
    try:
        report = install_environment(loc, python=base, dry_run=dry_run,
                                     system_site_packages=system_site_packages,
                                     log=logger.info)
    except ModelAngeloError as exc:
        raise UserError(str(exc)) from None
    if dry_run:
        logger.info("ModelAngelo: dry run finished, nothing installed")
    else:
        extra = ("" if location is None else
                 f" (not the default location: set the environment variable MODELANGELO_VENV "
                 f"to {loc} for builds to use it)")
        logger.info(f"ModelAngelo: the environment {loc} is ready; builds run there" + extra)
    return report


def _chimerax_python() -> str:
    """ChimeraX's own Python interpreter (a normal CPython that can make venvs)."""
    try:
        from chimerax.core.python_utils import chimerax_python_executable

        python = chimerax_python_executable()
    except ImportError:
        python = None
    if python and Path(python).is_file():
        return python
    return sys.executable


def _log_check(session, location) -> dict:
    """``modelangelo install check true``: what is missing where, and where builds run."""
    from .environment import HOST_REQUIREMENTS, environment_report, missing_requirements

    report = environment_report(location)
    here = missing_requirements()
    host = missing_requirements(HOST_REQUIREMENTS)
    if report.ready and not host and location is None:
        runs = f"the environment {report.location}"
    elif not here:
        runs = "ChimeraX's Python"
    else:
        runs = "nowhere yet: run 'modelangelo install'"
    lines = ["ModelAngelo packages:",
             f"  environment {report.location}: "
             + ("ready" if report.ready else report.problem),
             "  ChimeraX's Python: " + ("has everything" if not here else
                                        "lacks " + ", ".join(here)),
             f"  builds run in {runs} (modelangelo build ... runIn auto)"]
    session.logger.info("\n".join(lines))
    return {"environment": report, "chimerax_missing": here, "runs_in": runs}


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
