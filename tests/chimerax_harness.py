"""A real, headless ChimeraX session built from the ChimeraX Python library wheel.

The ChimeraX application cannot be installed here, but PyPI carries its Python library
(``chimerax==0.1.71``: core, atomic, map, mmcif, open/save commands, ...).
``scripts/setup.sh --test`` installs it into ``.venv/chimerax-lib`` (outside site-packages,
so that its eager ``chimerax/__init__.py`` never shadows the namespace package that holds
``chimerax.modelangelo``). This module turns that library into one working ChimeraX
``Session`` per process, the way the application's start-up code does, and registers our
bundle from our own ``bundle_info.xml`` so that ``modelangelo ...`` commands reach our
``BundleAPI`` exactly as they do in ChimeraX.

Everything here adapts the *test environment*; nothing patches the bundle. Each obstacle
and its fix (see also shared/notes/chimerax-headless.md):

1. ``grako`` 3.99.9 (atom-spec parser) imports ``Mapping`` & co. from ``collections``:
   the aliases from ``collections.abc`` are put back before anything imports it.
2. The wheel's ``chimerax/__init__.py`` eagerly imports every bundle: ``chimerax`` is
   registered as a namespace package whose ``__path__`` spans the library's ``chimerax/``
   and wherever ``chimerax.modelangelo`` lives (the editable finder or site-packages).
3. ``chimerax.core.nogui`` is missing from the wheel: a small text UI (whose
   ``thread_safe`` queues calls from worker threads for :func:`process_events`, like the
   GUI's event loop) and a ``NoGuiLog`` that collects messages (:func:`session_log`)
   stand in for it.
4. ``chimerax.core.__main__.init`` cannot be used (as root it rewrites HOME and refuses
   config dirs): the session is built step by step as ``init`` does, with every user
   directory (``app_dirs``, ``site.USER_SITE``) in a temporary folder, settings at their
   defaults, and pytest's ``sys.excepthook`` put back after the Logger replaces it.
5. The toolshed finds no bundles (the single wheel has no per-bundle dist-info): each
   needed upstream bundle is described by a fragment of its upstream ``bundle_info.xml``
   (:data:`UPSTREAM_BUNDLES`, only the parts that register things), and our bundle by its
   real ``bundle_info.xml``. Both go through the same conversion as a built wheel
   (bundle_info.xml -> ``ChimeraX ::`` classifiers -> the toolshed's own
   ``_make_bundle_info``), then ``BundleInfo.register`` and ``bootstrap_bundles`` let
   ChimeraX's own code do the rest (lazy commands, managers, providers, custom init).
6. The command registry is global: one session per process, ``reset_session`` between
   tests.
"""

from __future__ import annotations

import collections
import collections.abc
import importlib
import importlib.util
import os
import site
import sys
import tempfile
import types
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHIMERAX_LIB = Path(os.environ.get("MODELANGELO_CHIMERAX_LIB", REPO / ".venv" / "chimerax-lib"))
BUNDLE_INFO = REPO / "bundle_info.xml"

_session = None
_log = None
_tmp = None


def library_missing_reason() -> str | None:
    """Why the ChimeraX library cannot be used here, or None when it can."""
    if not (CHIMERAX_LIB / "chimerax" / "core" / "session.py").is_file():
        return (f"ChimeraX Python library not installed at {CHIMERAX_LIB} "
                "(run scripts/setup.sh --test)")
    return None


# ---------------------------------------------------------------------------------------
# Upstream bundles: the registration-relevant parts of their bundle_info.xml
# (RBVI/ChimeraX src/bundles/*/bundle_info.xml), in the same XML form as ours.
# Commands are listed only where tests or our bundle use them.
# ---------------------------------------------------------------------------------------
UPSTREAM_BUNDLES = """
<Bundles>
  <BundleInfo name="ChimeraX-Core" version="1.7" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.core">
    <Synopsis>ChimeraX Core Package</Synopsis>
  </BundleInfo>
  <BundleInfo name="ChimeraX-Graphics" version="1.1" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.graphics">
    <Synopsis>OpenGL graphics rendering</Synopsis>
  </BundleInfo>
  <BundleInfo name="ChimeraX-Geometry" version="1.3" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.geometry">
    <Synopsis>Geometry calculations</Synopsis>
  </BundleInfo>
  <BundleInfo name="ChimeraX-DataFormats" version="1.2" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.data_formats">
    <Synopsis>Data format management</Synopsis>
    <Managers><Manager name="data formats"/></Managers>
  </BundleInfo>
  <BundleInfo name="ChimeraX-OpenCommand" version="1.13" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.open_command">
    <Synopsis>Manage 'open' command extensibility</Synopsis>
    <Managers><Manager name="open command"/></Managers>
    <Initializations><InitAfter type="manager" bundle="ChimeraX-DataFormats"/></Initializations>
    <Classifiers>
      <ChimeraXClassifier>Command :: open :: Input/Output :: Open data files</ChimeraXClassifier>
      <ChimeraXClassifier>Command :: open formats :: Input/Output :: Report formats</ChimeraXClassifier>
    </Classifiers>
  </BundleInfo>
  <BundleInfo name="ChimeraX-SaveCommand" version="1.5" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.save_command">
    <Synopsis>Manage 'save' command extensibility</Synopsis>
    <Managers><Manager name="save command"/></Managers>
    <Initializations><InitAfter type="manager" bundle="ChimeraX-DataFormats"/></Initializations>
    <Classifiers>
      <ChimeraXClassifier>Command :: save :: Input/Output :: Save data files</ChimeraXClassifier>
    </Classifiers>
  </BundleInfo>
  <BundleInfo name="ChimeraX-Atomic" version="1.49" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.atomic" customInit="true">
    <Synopsis>Atomic-structure functionality</Synopsis>
    <Managers><Manager name="sequence features" autostart="false"/></Managers>
  </BundleInfo>
  <BundleInfo name="ChimeraX-Surface" version="1.0" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.surface" customInit="true">
    <Synopsis>Surface calculations</Synopsis>
  </BundleInfo>
  <BundleInfo name="ChimeraX-MapData" version="2.0" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.map_data">
    <Synopsis>Volume data file formats</Synopsis>
    <Providers manager="data formats">
      <Provider name="CCP4 density map" nicknames="ccp4" category="Volume data"
                suffixes=".ccp4,.map"/>
      <Provider name="MRC density map" nicknames="mrc" category="Volume data" suffixes=".mrc"/>
    </Providers>
  </BundleInfo>
  <BundleInfo name="ChimeraX-Map" version="1.1" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.map" customInit="true">
    <Synopsis>Density maps</Synopsis>
    <Providers manager="open command">
      <Provider name="CCP4 density map" want_path="true" batch="true"/>
      <Provider name="MRC density map" want_path="true" batch="true"/>
    </Providers>
    <Providers manager="save command">
      <Provider name="CCP4 density map"/>
      <Provider name="MRC density map"/>
    </Providers>
    <Classifiers>
      <ChimeraXClassifier>Command :: volume :: Volume data :: control volume data display</ChimeraXClassifier>
      <ChimeraXClassifier>Command :: measure mapstats :: Volume data :: report map statistics</ChimeraXClassifier>
      <ChimeraXClassifier>Command :: measure mapvalues :: Volume data :: interpolate map values</ChimeraXClassifier>
    </Classifiers>
  </BundleInfo>
  <BundleInfo name="ChimeraX-mmCIF" version="2.12" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.mmcif">
    <Synopsis>mmCIF format read/write</Synopsis>
    <Providers manager="data formats">
      <Provider name="mmCIF" category="Molecular structure" suffixes=".cif,.mmcif"
                encoding="utf-8" mime_types="chemical/x-mmcif"
                reference_url="https://mmcif.wwpdb.org/"/>
    </Providers>
    <Providers manager="open command">
      <Provider name="mmCIF" want_path="true"/>
    </Providers>
    <Providers manager="save command">
      <Provider name="mmCIF"/>
    </Providers>
  </BundleInfo>
  <BundleInfo name="ChimeraX-PDB" version="2.7" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.pdb">
    <Synopsis>PDB format read/write</Synopsis>
    <Providers manager="data formats">
      <Provider name="PDB" category="Molecular structure" suffixes=".pdb,.pdb1,.ent,.pqr"
                encoding="utf-8" mime_types="chemical/x-pdb,chemical/x-spdbv"
                reference_url="https://www.wwpdb.org/documentation/file-format"/>
    </Providers>
    <Providers manager="open command"><Provider name="PDB"/></Providers>
    <Providers manager="save command"><Provider name="PDB"/></Providers>
  </BundleInfo>
  <BundleInfo name="ChimeraX-CoreFormats" version="1.2" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.core_formats">
    <Synopsis>ChimeraX session and command-script formats</Synopsis>
    <Providers manager="data formats">
      <Provider name="ChimeraX session" category="Session" suffixes=".cxs" nicknames="session"
                mime_types="application/x-chimerax-session"/>
      <Provider name="ChimeraX commands" category="Command script" suffixes=".cxc"
                nicknames="cmd,cxc" mime_types="text/x-chimerax"/>
      <Provider name="Python" category="Command script" suffixes=".py,.pyc,.pyo,.pyw"
                nicknames="python,py,pyc,pyo,pyw" mime_types="text/x-python"/>
    </Providers>
    <Providers manager="open command">
      <Provider name="ChimeraX session" want_path="true"/>
      <Provider name="ChimeraX commands" want_path="true"/>
      <Provider name="Python" want_path="true"/>
    </Providers>
    <Providers manager="save command"><Provider name="ChimeraX session"/></Providers>
  </BundleInfo>
  <BundleInfo name="ChimeraX-StdCommands" version="1.13" minSessionVersion="1" maxSessionVersion="1"
              package="chimerax.std_commands"
              customInit="true">
    <Synopsis>Standard commands</Synopsis>
    <Classifiers>
      <ChimeraXClassifier>Command :: close :: General :: close models</ChimeraXClassifier>
      <ChimeraXClassifier>Command :: color :: General :: color objects</ChimeraXClassifier>
      <ChimeraXClassifier>Command :: hide :: General :: hide objects</ChimeraXClassifier>
      <ChimeraXClassifier>Command :: move :: General :: translate models</ChimeraXClassifier>
      <ChimeraXClassifier>Command :: rename :: General :: rename models</ChimeraXClassifier>
      <ChimeraXClassifier>Command :: show :: General :: show objects</ChimeraXClassifier>
      <ChimeraXClassifier>Command :: style :: General :: change display style</ChimeraXClassifier>
      <ChimeraXClassifier>Command :: turn :: General :: rotate models</ChimeraXClassifier>
      <ChimeraXClassifier>Command :: view :: General :: adjust the view</ChimeraXClassifier>
    </Classifiers>
  </BundleInfo>
</Bundles>
"""


# ---------------------------------------------------------------------------------------
# bundle_info.xml -> "ChimeraX ::" classifiers (what bundle_builder writes into a wheel's
# METADATA; bundle_builder itself needs lxml and Cython, which the tests do not install).
# ---------------------------------------------------------------------------------------
def bundle_classifiers(bi: ET.Element) -> list[str]:
    from chimerax.core.commands import quote_if_necessary

    categories = [c.get("name") for c in bi.iter("Category")]
    classifiers = [
        "ChimeraX :: Bundle :: " + ",".join(categories)
        + " :: " + bi.get("minSessionVersion", "") + "," + bi.get("maxSessionVersion", "")
        + " :: " + bi.get("package", "") + " :: " + bi.get("supersedes", "")
        + " :: " + bi.get("customInit", "")
    ]
    for mgr in bi.iter("Manager"):
        kw = dict(mgr.attrib)
        name = kw.pop("name")
        classifiers.append(" :: ".join(
            ["ChimeraX :: Manager", name]
            + [f"{k}:{quote_if_necessary(v)}" for k, v in kw.items()]))
    for group in bi.iter("Providers"):
        for prov in group.iter("Provider"):
            kw = dict(prov.attrib)
            manager = kw.pop("manager", "") or group.get("manager", "")
            name = kw.pop("name")
            classifiers.append(" :: ".join(
                ["ChimeraX :: Provider", name, manager]
                + [f"{k}:{quote_if_necessary(v)}" for k, v in kw.items()]))
    inits: dict[str, list[str]] = {}
    for init in bi.iter("InitAfter"):
        inits.setdefault(init.get("type"), []).append(init.get("bundle"))
    for kind, bundles in inits.items():
        classifiers.append(" :: ".join(["ChimeraX :: InitAfter", kind, *bundles]))
    for c in bi.iter("ChimeraXClassifier"):
        text = "".join(c.itertext()).strip()
        classifiers.append(text if text.startswith("ChimeraX") else "ChimeraX :: " + text)
    return classifiers


class _BundleDistribution:
    """The few parts of a ``pkg_resources`` distribution the toolshed reads."""

    def __init__(self, bi: ET.Element, packages: list[tuple[str, ...]], location: str):
        self.project_name = bi.get("name")
        self.version = bi.get("version")
        self.location = location
        synopsis = (bi.findtext("Synopsis") or "").strip()
        description = (bi.findtext("Description") or synopsis).strip()
        lines = ["Metadata-Version: 2.1", f"Name: {self.project_name}",
                 f"Version: {self.version}", f"Summary: {synopsis}"]
        lines += [f"Classifier: {c}" for c in bundle_classifiers(bi)]
        self._files = {
            "METADATA": "\n".join(lines) + "\n\n" + description + "\n",
            "RECORD": "".join("/".join(p) + "/__init__.py,,\n" for p in packages),
        }

    def has_metadata(self, name):
        return name in self._files

    def get_metadata(self, name):
        return self._files[name]

    def get_metadata_lines(self, name):
        return self._files[name].splitlines()


def _packages_of(package: str) -> list[tuple[str, ...]]:
    """Every Python package at or below ``package`` (as the wheel's RECORD would list)."""
    mod = importlib.import_module(package)
    root = Path(mod.__file__).parent
    base = tuple(package.split("."))
    found = []
    for init in sorted(root.rglob("__init__.py")):
        rel = init.parent.relative_to(root).parts
        if "__pycache__" not in rel:
            found.append(base + rel)
    return found


def make_bundle_info(bi: ET.Element, logger):
    """A toolshed ``BundleInfo`` for one ``<BundleInfo>`` element, made by ChimeraX's code."""
    from chimerax.core.logger import StringPlainTextLog
    from chimerax.core.toolshed.installed import _make_bundle_info

    package = bi.get("package")
    packages = _packages_of(package)
    location = str(Path(importlib.import_module(package).__file__).parent)
    with StringPlainTextLog(logger) as messages:
        info = _make_bundle_info(_BundleDistribution(bi, packages, location), True, logger)
    if info is None or messages.getvalue():
        raise RuntimeError(f"the toolshed rejected or complained about bundle "
                           f"{bi.get('name')}: {messages.getvalue() or 'no ChimeraX :: Bundle'}")
    return info


# ---------------------------------------------------------------------------------------
# Environment fixes
# ---------------------------------------------------------------------------------------
def _install_collections_aliases() -> None:
    for name in ("Mapping", "MutableMapping", "Sequence", "Callable", "Iterable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


def _install_namespace_package() -> None:
    lib_dir = str(CHIMERAX_LIB / "chimerax")
    ns = sys.modules.get("chimerax")
    if ns is None:
        try:
            ns = importlib.import_module("chimerax")
        except ImportError:
            ns = None
    if ns is not None and getattr(ns, "__file__", None):
        raise RuntimeError(
            f"'chimerax' was imported as a regular package from {ns.__file__}; the ChimeraX "
            "library must not be on sys.path (scripts/setup.sh installs it with --target)")
    if ns is None:
        ns = types.ModuleType("chimerax")
        ns.__path__ = []
        sys.modules["chimerax"] = ns
    ns.__path__ = [lib_dir] + [p for p in list(ns.__path__) if p != lib_dir]
    if importlib.util.find_spec("chimerax.modelangelo") is None:
        raise RuntimeError("chimerax.modelangelo is not importable: install the package "
                           "(scripts/setup.sh does 'pip install -e .')")



def _make_nogui_module():
    from chimerax.core.logger import PlainTextLog

    class _CollectingLog(PlainTextLog):
        """Keeps every message (level name, text) for tests to inspect."""

        LEVEL_NAMES = {PlainTextLog.LEVEL_INFO: "info", PlainTextLog.LEVEL_WARNING: "warning",
                       PlainTextLog.LEVEL_ERROR: "error", PlainTextLog.LEVEL_BUG: "bug"}

        def __init__(self):
            super().__init__()
            self.messages: list[tuple[str, str]] = []
            self.statuses: list[str] = []

        def log(self, level, msg):
            self.messages.append((self.LEVEL_NAMES.get(level, str(level)), msg))
            return True

        def status(self, msg, color, secondary):
            if msg and not secondary:
                self.statuses.append(msg)
            return True

        def text(self, level: str | None = None) -> str:
            return "".join(m for lv, m in self.messages if level is None or lv == level)

        def clear(self) -> None:
            self.messages.clear()
            self.statuses.clear()

    class UI:
        """Text UI without graphics. Like the GUI's event loop, ``thread_safe`` calls made
        from other threads are queued for the main thread; :func:`process_events` runs
        them (calls from the main thread run at once)."""

        is_gui = False
        has_graphics = False
        main_window = None
        stereo = False
        autostart_tools = False

        def __init__(self, session):
            import queue
            import weakref

            self._session = weakref.ref(session)
            self._queue = queue.Queue()

        def initialize_color_output(self, color_output):
            pass

        def initialize_offscreen_rendering(self):
            self.has_graphics = False

        def splash_info(self, message, splash_step=None, num_splash_steps=None):
            pass

        def build(self):
            pass

        def thread_safe(self, func, *args, **kw):
            import threading

            if threading.current_thread() is threading.main_thread():
                func(*args, **kw)
            else:
                self._queue.put((func, args, kw))

        def process_events(self, timeout: float = 0.0) -> int:
            """Run queued calls; wait up to ``timeout`` s for the first. Returns how many."""
            import queue

            n = 0
            block = timeout > 0
            while True:
                try:
                    func, args, kw = self._queue.get(block=block and n == 0, timeout=timeout
                                                     if block and n == 0 else None)
                except queue.Empty:
                    return n
                func(*args, **kw)
                n += 1

        def quit(self):
            pass

    module = types.ModuleType("chimerax.core.nogui")
    module.__doc__ = "Headless UI for the test harness (absent from the ChimeraX wheel)."
    module.UI = UI
    module.NoGuiLog = _CollectingLog
    return module


def _install_nogui() -> None:
    if "chimerax.core.nogui" in sys.modules:
        return
    import chimerax.core

    module = _make_nogui_module()
    sys.modules["chimerax.core.nogui"] = module
    chimerax.core.nogui = module


def _install_app_dirs(tmp: Path) -> None:
    import chimerax

    dirs = {}
    for name in ("user_data_dir", "user_config_dir", "user_cache_dir", "user_log_dir",
                 "site_data_dir", "site_config_dir"):
        d = tmp / name
        d.mkdir(parents=True, exist_ok=True)
        dirs[name] = str(d)
    chimerax.app_dirs = types.SimpleNamespace(appname="ChimeraX", appauthor="UCSF",
                                              version="1.7", **dirs)
    chimerax.app_dirs_unversioned = chimerax.app_dirs
    share = tmp / "share"
    (share / "docs").mkdir(parents=True, exist_ok=True)
    chimerax.app_data_dir = str(share)
    chimerax.app_bin_dir = str(tmp / "bin")
    chimerax.app_lib_dir = str(tmp / "lib")
    # The toolshed adds USER_SITE to sys.path and creates it: keep it in the temp folder.
    site.USER_SITE = str(tmp / "user-site")
    site.ENABLE_USER_SITE = True


# ---------------------------------------------------------------------------------------
# The session
# ---------------------------------------------------------------------------------------
def get_session():
    """The process's headless ChimeraX session (built on first use)."""
    global _session, _log, _tmp
    if _session is not None:
        return _session
    reason = library_missing_reason()
    if reason:
        raise RuntimeError(reason)
    _install_collections_aliases()
    _install_namespace_package()
    _install_nogui()
    _tmp = tempfile.TemporaryDirectory(prefix="chimerax-harness-")
    _install_app_dirs(Path(_tmp.name))

    from chimerax.core import configfile

    configfile.only_use_defaults = True
    from chimerax.core import session as session_mod

    saved_hook = sys.excepthook
    sess = session_mod.Session("ChimeraX")
    sys.excepthook = saved_hook  # the Logger installs its own; pytest needs the original

    from chimerax.core import attributes, core_settings

    core_settings.init(sess)
    session_mod.register_misc_commands(sess)
    attributes.RegAttrManager(sess)
    from chimerax.core.nogui import NoGuiLog

    _log = NoGuiLog()
    sess.logger.add_log(_log)

    from chimerax.core import toolshed

    with warnings.catch_warnings():
        # the toolshed imports pkg_resources (deprecated, still in setuptools < 81)
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        toolshed.init(sess.logger, check_available=False, session=sess)
    sess.toolshed = ts = toolshed.get_toolshed()
    _register_bundles(sess, ts)
    ts.bootstrap_bundles(sess, False)
    from chimerax.core import tools, undo

    sess.tools = tools.Tools(sess, first=True)
    sess.undo = undo.Undo(sess, first=True)
    _session = sess
    return sess


def _register_bundles(sess, ts) -> None:
    elements = list(ET.fromstring(UPSTREAM_BUNDLES).iter("BundleInfo"))
    elements.append(ET.parse(BUNDLE_INFO).getroot())
    installed = ts._installed_bundle_info
    for el in elements:
        bi = make_bundle_info(el, sess.logger)
        installed.append(bi)
        for package in bi.packages:
            ts._installed_packages[package] = bi
        bi.register(sess.logger)


def session_log():
    """The log that collects the session's messages (``.messages``, ``.text()``)."""
    get_session()
    return _log


def reset_session() -> None:
    """Back to an empty session (models closed, log cleared)."""
    if _session is None:
        return
    _session.reset()
    _log.clear()


def process_events(timeout: float = 0.0) -> int:
    """Run calls that worker threads queued for the main thread (``ui.thread_safe``)."""
    return get_session().ui.process_events(timeout)


def wait_for(condition, timeout: float = 60.0) -> bool:
    """Process queued main-thread calls until ``condition()`` is true or ``timeout`` s."""
    import time

    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        process_events(0.05)
    return True


def run(command: str, *, log: bool = False):
    """Run a ChimeraX command in the harness session; returns the command's result."""
    from chimerax.core.commands import run as cx_run

    return cx_run(get_session(), command, log=log)
