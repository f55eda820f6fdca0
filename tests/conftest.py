"""Shared pytest set-up.

ChimeraX: tests marked ``@pytest.mark.chimerax`` use the ``chimerax_session`` fixture, a
real headless ChimeraX session (tests/chimerax_harness.py) with our bundle registered from
bundle_info.xml. They are skipped, with the reason, only when the ChimeraX library is not
installed (``scripts/setup.sh --test`` installs it). Qt widgets run offscreen.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import chimerax_harness  # noqa: E402


def pytest_collection_modifyitems(config, items):
    reason = chimerax_harness.library_missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        # on CI a missing library is a broken set-up, never a reason to skip the bundle tests
        raise pytest.UsageError(f"{reason}; CI must run the ChimeraX tests")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "chimerax" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def no_managed_environment(tmp_path_factory, monkeypatch):
    """Builds never find a real managed environment of this machine's user: the
    environment's location (MODELANGELO_VENV) is an empty temporary path unless a test
    sets its own."""
    monkeypatch.setenv("MODELANGELO_VENV", str(tmp_path_factory.getbasetemp() / "no-venv"))


@pytest.fixture
def chimerax_session():
    """The process's headless ChimeraX session, emptied before and after the test."""
    reason = chimerax_harness.library_missing_reason()
    if reason:
        pytest.skip(reason)
    session = chimerax_harness.get_session()
    chimerax_harness.reset_session()
    yield session
    chimerax_harness.process_events()
    chimerax_harness.reset_session()


@pytest.fixture
def chimerax_log(chimerax_session):
    """The messages the session logged during the test (``.messages``, ``.text(level)``)."""
    return chimerax_harness.session_log()


@pytest.fixture(scope="session")
def qapp():
    """One offscreen QApplication for widget tests."""
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["pytest", "-platform", "offscreen"])
    yield app
