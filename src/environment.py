"""The Python packages a build needs, and where they live.

Two places can hold PyTorch & co. (:data:`REQUIREMENTS`):

* **The managed environment (default).** A virtual environment of its own (like RBVI's
  Boltz bundle for ChimeraX), by default ``<user data dir>/ChimeraX-ModelAngelo/venv``
  (Linux ``~/.local/share/...``, macOS ``~/Library/Application Support/...``, Windows
  ``%LOCALAPPDATA%\\...``); the ``MODELANGELO_VENV`` environment variable or a
  ``location`` argument moves it. :func:`install_environment` creates it with
  ``<python> -m venv`` from a standard interpreter (in ChimeraX: ChimeraX's own
  ``bin/python3.x``, which is a normal CPython), pip-installs the requirements into it
  and makes this bundle's code importable there (:func:`install_bundle`). Builds then run
  as ``<venv python> -m chimerax.modelangelo build ... --progress-json``, a separate
  process that ChimeraX's packages can never conflict with (and that ``modelangelo stop``
  can end at once).
* **ChimeraX's own Python** (``modelangelo install target chimerax``): ``pip install``
  into ChimeraX, as before; builds then run in a thread inside ChimeraX.

How the bundle's code gets into the environment without ChimeraX: the package
``chimerax.modelangelo`` imports nothing from ChimeraX at module level, so the
environment only needs a ``chimerax`` *namespace* package holding ``modelangelo``.
:func:`install_bundle` creates ``<venv>/modelangelo-bundle/chimerax/`` (no
``__init__.py``) with ``modelangelo`` a symbolic link to the installed bundle's folder
(a copy where links cannot be made, e.g. Windows without developer mode; run
``modelangelo install`` again after updating the bundle then), and one line in
``<venv site-packages>/modelangelo-bundle.pth`` putting that folder on the path. Only
this one package is shared: ChimeraX's own site-packages (its numpy, Qt, ...) are never
on the environment's path. The link follows the bundle wherever ChimeraX installs it,
so updating the bundle updates the environment's code; :func:`environment_report`
checks that the environment imports *this* bundle.

Nothing here imports ChimeraX or the heavy packages themselves.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelAngeloError

# import name -> pip requirement: what a build needs
REQUIREMENTS: dict[str, str] = {
    "torch": "torch>=2.1",
    "esm": "fair-esm>=2.0",
    "pyhmmer": "pyhmmer>=0.10",
    "mrcfile": "mrcfile>=1.4",
    "gemmi": "gemmi>=0.6.5",
    "scipy": "scipy>=1.10",
    "numpy": "numpy>=1.24",
}
# what ChimeraX's Python needs to hand a build to the managed environment (the map is
# written as an MRC file with mrcfile; numpy comes with ChimeraX)
HOST_REQUIREMENTS: dict[str, str] = {"mrcfile": REQUIREMENTS["mrcfile"]}

ENV_VAR = "MODELANGELO_VENV"
APP_NAME = "ChimeraX-ModelAngelo"
SHIM_DIR = "modelangelo-bundle"  # in the venv: SHIM_DIR/chimerax/modelangelo -> the bundle
SHIM_PTH = "modelangelo-bundle.pth"
PARENT_PTH = "modelangelo-parent-env.pth"
COPY_MARKER = "copied-from.txt"
PROBE_TIMEOUT_S = 120


# ---------------------------------------------------------------------------------------
# this Python
# ---------------------------------------------------------------------------------------
def missing_requirements(requirements: dict[str, str] | None = None) -> list[str]:
    """pip requirements whose package cannot be imported in this Python."""
    reqs = REQUIREMENTS if requirements is None else requirements
    return [req for module, req in reqs.items() if importlib.util.find_spec(module) is None]


def missing_message(missing: list[str]) -> str:
    return ("ModelAngelo needs Python packages that are not installed here: "
            + ", ".join(missing) + ". Install them with the command 'modelangelo install' "
            "(in ChimeraX) or 'python -m pip install " + " ".join(missing) + "'.")


def pip_install_args(requirements: list[str], *, python: str | os.PathLike | None = None,
                     dry_run: bool = False) -> list[str]:
    args = [str(python or sys.executable), "-m", "pip", "install",
            "--disable-pip-version-check", "--upgrade-strategy", "only-if-needed"]
    if dry_run:
        args.append("--dry-run")
    return args + list(requirements)


def run_pip_install(requirements: list[str], *, dry_run: bool = False,
                    python: str | os.PathLike | None = None, log=print,
                    env: dict[str, str] | None = None) -> int:
    """Run pip for ``requirements`` in ``python`` (default: this interpreter), streaming
    its output lines to ``log``; returns pip's exit status."""
    return _run_logged(pip_install_args(requirements, python=python, dry_run=dry_run),
                       log=log, env=env)


def _run_logged(args: list[str], *, log=print, env: dict[str, str] | None = None) -> int:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", env=env, **popen_flags())
    assert proc.stdout is not None
    for line in proc.stdout:
        log(line.rstrip())
    return proc.wait()


# ---------------------------------------------------------------------------------------
# where the managed environment lives
# ---------------------------------------------------------------------------------------
def user_data_dir() -> Path:
    """This bundle's per-user data folder (platform convention, no ChimeraX needed)."""
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / APP_NAME


def venv_location(location: str | os.PathLike | None = None) -> Path:
    """``location``, else ``$MODELANGELO_VENV``, else ``<user data dir>/venv``."""
    if location:
        return Path(location).expanduser().absolute()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser().absolute()
    return user_data_dir() / "venv"


def venv_python(location: str | os.PathLike | None = None) -> Path:
    """The environment's Python executable (which may not exist yet)."""
    loc = venv_location(location)
    if sys.platform.startswith("win"):
        return loc / "Scripts" / "python.exe"
    return loc / "bin" / "python"


def bundle_dir() -> Path:
    """The folder of the installed ``chimerax.modelangelo`` package (this code)."""
    return Path(__file__).resolve().parent


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without what would leak ChimeraX's own Python set-up
    (``PYTHONPATH``, ``PYTHONHOME``, ``PYTHONUSERBASE``, ...) into another interpreter."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONSTARTUP",
                        "PYTHONEXECUTABLE", "PYTHONSAFEPATH", "__PYVENV_LAUNCHER__")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def popen_flags() -> dict:
    """Popen keywords: no console window for a child of a GUI program on Windows."""
    if sys.platform.startswith("win"):
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {}


# ---------------------------------------------------------------------------------------
# looking inside an interpreter
# ---------------------------------------------------------------------------------------
_PROBE = r"""
import importlib.util, json, site, sys, sysconfig
missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
try:
    spec = importlib.util.find_spec("chimerax.modelangelo")
except Exception:
    spec = None
locations = list(spec.submodule_search_locations or []) if spec is not None else []
print(json.dumps({
    "missing": missing,
    "bundle": locations[0] if locations else None,
    "purelib": sysconfig.get_paths()["purelib"],
    "site_packages": site.getsitepackages() if hasattr(site, "getsitepackages") else [],
    "is_venv": sys.prefix != sys.base_prefix,
    "version": "%d.%d.%d" % sys.version_info[:3],
}))
"""


def probe_python(python: str | os.PathLike, modules: list[str] | None = None) -> dict:
    """What ``python`` sees: ``missing`` (of ``modules``, default the import names of
    :data:`REQUIREMENTS`), ``bundle`` (the folder ``chimerax.modelangelo`` imports from,
    or None), ``purelib``, ``site_packages``, ``is_venv``, ``version``. Runs ``python``
    in a subprocess (``-s``: without the user site-packages, as builds run)."""
    mods = list(REQUIREMENTS) if modules is None else list(modules)
    try:
        r = subprocess.run([str(python), "-s", "-c", _PROBE, *mods], capture_output=True,
                           text=True, errors="replace", timeout=PROBE_TIMEOUT_S,
                           env=subprocess_env(), **popen_flags())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelAngeloError(f"cannot run the Python interpreter {python}: {exc}") from exc
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ModelAngeloError(f"the Python interpreter {python} failed (exit status "
                               f"{r.returncode}): {tail}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def missing_requirements_in(python: str | os.PathLike,
                            requirements: dict[str, str] | None = None) -> list[str]:
    """pip requirements whose package cannot be imported by ``python`` (a subprocess)."""
    reqs = REQUIREMENTS if requirements is None else requirements
    return _requirements_of(probe_python(python, list(reqs))["missing"], reqs)


def _requirements_of(modules: list[str], requirements: dict[str, str]) -> list[str]:
    """The pip requirements (in ``requirements`` order) of the import names ``modules``."""
    wanted = set(modules)
    return [req for module, req in requirements.items() if module in wanted]


@dataclass
class EnvironmentReport:
    """What the managed environment at ``location`` holds."""

    location: Path
    python: Path
    exists: bool
    missing: list[str] = field(default_factory=list)  # pip requirements not importable
    bundle: Path | None = None  # where chimerax.modelangelo imports from there
    error: str | None = None  # the interpreter could not be run

    @property
    def bundle_ok(self) -> bool:
        return self.bundle is not None and _same_path(self.bundle, bundle_dir())

    @property
    def ready(self) -> bool:
        """Builds can run there: every requirement and this bundle import."""
        return self.exists and self.error is None and not self.missing and self.bundle_ok

    @property
    def problem(self) -> str | None:
        """Why it is not ready, in words (None when ready)."""
        where = f"the ModelAngelo environment {self.location}"
        if not self.exists:
            return f"{where} does not exist"
        if self.error is not None:
            return f"{where} is broken ({self.error})"
        if self.missing:
            return f"{where} lacks {', '.join(self.missing)}"
        if not self.bundle_ok:
            found = "no copy" if self.bundle is None else f"a different copy ({self.bundle})"
            return f"{where} imports {found} of the ModelAngelo bundle, not {bundle_dir()}"
        return None


def environment_report(location: str | os.PathLike | None = None) -> EnvironmentReport:
    """Check the managed environment (one quick subprocess when it exists)."""
    loc = venv_location(location)
    python = venv_python(loc)
    if not python.exists():
        return EnvironmentReport(loc, python, exists=False, missing=list(REQUIREMENTS.values()))
    try:
        info = probe_python(python)
    except ModelAngeloError as exc:
        return EnvironmentReport(loc, python, exists=True, error=str(exc))
    return EnvironmentReport(
        loc, python, exists=True, missing=_requirements_of(info["missing"], REQUIREMENTS),
        bundle=Path(info["bundle"]) if info["bundle"] else None)


def _same_path(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# creating and filling the managed environment
# ---------------------------------------------------------------------------------------
def create_venv(location: str | os.PathLike | None = None, *,
                python: str | os.PathLike | None = None, system_site_packages: bool = False,
                with_pip: bool = True, log=print) -> Path:
    """Create the managed environment (nothing happens if it exists); returns its Python.

    ``python`` (default: this interpreter) makes it: ``<python> -m venv``. With
    ``system_site_packages`` the environment also sees the packages of that interpreter;
    when ``python`` is itself a virtual environment (whose packages ``venv`` alone would
    skip: it links to the base interpreter), that environment's site-packages are added
    too, after the new environment's own (``modelangelo-parent-env.pth``; their ``.pth``
    files are not run). A folder that exists and is not a virtual environment is refused.
    """
    loc = venv_location(location)
    py = venv_python(loc)
    if (loc / "pyvenv.cfg").is_file() and py.exists():
        return py
    if loc.exists() and (not loc.is_dir() or any(loc.iterdir())):
        raise ModelAngeloError(f"{loc} exists and is not a Python virtual environment; "
                               "choose an empty or new folder for the ModelAngelo environment")
    base = Path(python or sys.executable)
    args = [str(base), "-m", "venv"]
    if system_site_packages:
        args.append("--system-site-packages")
    if not with_pip:
        args.append("--without-pip")
    args.append(str(loc))
    log(f"creating a Python environment: {' '.join(args)}")
    loc.parent.mkdir(parents=True, exist_ok=True)
    status = _run_logged(args, log=log, env=subprocess_env())
    if status != 0 or not py.exists():
        raise ModelAngeloError(f"could not create a Python environment at {loc} with {base} "
                               f"(exit status {status}; see the output above)")
    if system_site_packages:
        parent = probe_python(base, [])
        if parent["is_venv"]:
            purelib = Path(probe_python(py, [])["purelib"])
            (purelib / PARENT_PTH).write_text(
                "".join(f"{p}\n" for p in parent["site_packages"]))
    return py


def install_bundle(location: str | os.PathLike | None = None, *,
                   bundle: str | os.PathLike | None = None) -> Path:
    """Make ``chimerax.modelangelo`` (``bundle``, default this code's folder) importable in
    the environment, without ChimeraX (see the module docstring). Returns the link (or
    copy). Safe to repeat: an earlier link or copy is replaced."""
    loc = venv_location(location)
    py = venv_python(loc)
    if not py.exists():
        raise ModelAngeloError(f"no Python environment at {loc}: create it first")
    source = Path(bundle).resolve() if bundle else bundle_dir()
    shim = loc / SHIM_DIR
    namespace = shim / "chimerax"
    namespace.mkdir(parents=True, exist_ok=True)
    target = namespace / "modelangelo"
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)  # an earlier copy (it lives inside our own shim folder)
    marker = shim / COPY_MARKER
    if marker.exists():
        marker.unlink()
    try:
        target.symlink_to(source, target_is_directory=True)
    except (OSError, NotImplementedError):
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        marker.write_text(f"{source}\n")
    purelib = Path(probe_python(py, [])["purelib"])
    purelib.mkdir(parents=True, exist_ok=True)
    (purelib / SHIM_PTH).write_text(f"{shim}\n")
    return target


def install_environment(location: str | os.PathLike | None = None, *,
                        python: str | os.PathLike | None = None,
                        system_site_packages: bool = False, dry_run: bool = False,
                        with_pip: bool = True, log=print) -> EnvironmentReport:
    """Create or update the managed environment: venv, :data:`REQUIREMENTS`, this bundle.

    pip's output goes to ``log``. ``dry_run`` changes nothing: it says what would be
    created and, for an existing environment, runs ``pip install --dry-run`` in it.
    Raises :class:`ModelAngeloError` when a step fails; returns the final report.
    ``with_pip=False`` (no pip of its own) needs ``system_site_packages`` and a pip there.
    """
    loc = venv_location(location)
    py = venv_python(loc)
    reqs = list(REQUIREMENTS.values())
    if dry_run:
        if not py.exists():
            flag = " --system-site-packages" if system_site_packages else ""
            log(f"would create a Python environment: {python or sys.executable} -m venv"
                f"{flag} {loc}")
            log("would then run: " + " ".join(pip_install_args(reqs, python=py)))
            log(f"and link the ModelAngelo bundle {bundle_dir()} into it")
        else:
            status = run_pip_install(reqs, python=py, dry_run=True, log=log,
                                     env=subprocess_env())
            if status != 0:
                raise ModelAngeloError(f"pip failed in {loc} (exit status {status}; see its "
                                       "output above)")
        return environment_report(loc)
    create_venv(loc, python=python, system_site_packages=system_site_packages,
                with_pip=with_pip, log=log)
    status = run_pip_install(reqs, python=py, log=log, env=subprocess_env())
    if status != 0:
        raise ModelAngeloError(f"pip failed in {loc} (exit status {status}; see its output "
                               "above)")
    install_bundle(loc)
    report = environment_report(loc)
    if not report.ready:
        raise ModelAngeloError(f"{report.problem} after installing")
    return report
