"""The ModelAngelo panel: choose a map and sequences, build, stop, follow progress.

:class:`ModelAngeloPanel` is a plain ``QWidget``. Every action goes through ChimeraX
commands (``modelangelo build ...``, ``modelangelo stop``), so what the panel does is
logged and can be repeated in a script. Inside ChimeraX the widgets come from its ``Qt``
alias package; elsewhere (tests) straight from PyQt6.
"""

from __future__ import annotations

import os
import tempfile

try:  # ChimeraX's Qt alias package
    from Qt import QtCore, QtWidgets
except ImportError:  # outside ChimeraX (tests)
    from PyQt6 import QtCore, QtWidgets

Qt = QtCore.Qt

DEVICES = ("auto", "cpu", "gpu")


def _browse_row(edit: QtWidgets.QLineEdit, placeholder: str, on_browse) -> QtWidgets.QHBoxLayout:
    """A path field with its Browse... button."""
    edit.setPlaceholderText(placeholder)
    browse = QtWidgets.QPushButton("Browse...")
    browse.clicked.connect(on_browse)
    row = QtWidgets.QHBoxLayout()
    row.addWidget(edit)
    row.addWidget(browse)
    return row


class ModelAngeloPanel(QtWidgets.QWidget):
    """Map chooser, sequence file or pasted FASTA, device, output folder, Build and Stop."""

    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.job = None  # the BuildJob started by this panel's last Build
        self._handlers = []

        form = QtWidgets.QFormLayout()
        self.map_menu = QtWidgets.QComboBox()
        self.map_menu.setToolTip("The cryo-EM map to build into (open maps)")
        form.addRow("Map:", self.map_menu)

        self.sequence_path = QtWidgets.QLineEdit()
        form.addRow("Sequences:", _browse_row(
            self.sequence_path, "FASTA file (leave empty for no-sequence mode)",
            self._browse_sequence))

        self.sequence_text = QtWidgets.QPlainTextEdit()
        self.sequence_text.setPlaceholderText("...or paste sequences here (FASTA)")
        self.sequence_text.setMaximumHeight(90)
        form.addRow("", self.sequence_text)

        self.device_menu = QtWidgets.QComboBox()
        self.device_menu.addItems(DEVICES)
        self.device_menu.setToolTip("auto: a CUDA GPU if there is one, else the CPU")
        form.addRow("Device:", self.device_menu)

        self.output_folder = QtWidgets.QLineEdit()
        form.addRow("Output folder:", _browse_row(
            self.output_folder, "default: a new folder in ~/Documents/ModelAngelo",
            self._browse_output))

        self.build_button = QtWidgets.QPushButton("Build")
        self.build_button.clicked.connect(self.build)
        self.stop_button = QtWidgets.QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.build_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)

        self.progress_label = QtWidgets.QLabel("")
        self.progress_label.setWordWrap(True)
        self.progress_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.runs = QtWidgets.QListWidget()
        self.runs.setToolTip("Finished builds of this session: double-click to open their "
                             "models again")
        self.runs.itemDoubleClicked.connect(self.reopen)

        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_label)
        layout.addWidget(QtWidgets.QLabel("Finished builds:"))
        layout.addWidget(self.runs)

        from chimerax.core.models import (
            ADD_MODELS,
            MODEL_ID_CHANGED,
            MODEL_NAME_CHANGED,
            REMOVE_MODELS,
        )

        for trigger in (ADD_MODELS, REMOVE_MODELS, MODEL_ID_CHANGED, MODEL_NAME_CHANGED):
            self._handlers.append(session.triggers.add_handler(trigger, self._models_changed))
        self.refresh_maps()

    # -- maps ------------------------------------------------------------------------
    def _models_changed(self, trigger_name, data):
        self.refresh_maps()

    def refresh_maps(self) -> None:
        """List the open volumes, keeping the current choice when it is still open."""
        from chimerax.map import Volume

        current = self.map_menu.currentData()
        self.map_menu.blockSignals(True)
        self.map_menu.clear()
        for v in self.session.models.list(type=Volume):
            self.map_menu.addItem(f"#{v.id_string} {v.name}", v.atomspec)
        index = self.map_menu.findData(current) if current is not None else -1
        self.map_menu.setCurrentIndex(index if index >= 0 else (0 if self.map_menu.count() else -1))
        self.map_menu.blockSignals(False)

    # -- file choosers ---------------------------------------------------------------
    def _browse_sequence(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Sequence file", "",
                                              "FASTA (*.fasta *.fa *.faa *.seq *.txt);;All (*)")
        if path:
            self.sequence_path.setText(path)

    def _browse_output(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Output folder")
        if path:
            self.output_folder.setText(path)

    # -- commands --------------------------------------------------------------------
    def command_text(self, sequence_file: str | None = None) -> str:
        """The ``modelangelo build`` command for the current settings."""
        from chimerax.core.commands import quote_path_if_necessary

        spec = self.map_menu.currentData()
        if not spec:
            raise ValueError("open a map first")
        words = ["modelangelo build", spec]
        sequence = sequence_file or self.sequence_path.text().strip()
        if sequence:
            words += ["sequence", quote_path_if_necessary(sequence)]
        words += ["device", self.device_menu.currentText()]
        folder = self.output_folder.text().strip()
        if folder:
            words += ["outputFolder", quote_path_if_necessary(folder)]
        words += ["wait", "false"]
        return " ".join(words)

    def build(self) -> None:
        """Run ``modelangelo build`` (in the background) with the panel's settings."""
        from chimerax.core.commands import run
        from chimerax.core.errors import UserError

        pasted = self.sequence_text.toPlainText().strip()
        if pasted and self.sequence_path.text().strip():
            self._show_error("give a sequence file or paste sequences, not both")
            return
        fasta = self._write_pasted(pasted) if pasted else None
        try:
            text = self.command_text(fasta)
            job = run(self.session, text)
        except (UserError, ValueError) as exc:
            if fasta:
                os.remove(fasta)
            self._show_error(str(exc))
            return
        self.job = job
        if job is not None and hasattr(job, "add_listener"):
            job.add_listener(self._job_event)
            if job.state in ("pending", "running"):
                self._set_running(True)
                self.progress_label.setText(f"Building {job.name}...")
            else:
                self._show_finished(job)

    def stop(self) -> None:
        from chimerax.core.commands import run

        run(self.session, "modelangelo stop")
        self.progress_label.setText("Stopping (after the current step)...")

    # -- job feedback (main thread) --------------------------------------------------
    def _job_event(self, job, event, data) -> None:
        if job is not self.job:
            return
        if event == "progress":
            stage, fraction = data
            self.progress_label.setText(f"{job.name}: {stage} {fraction:.0%}")
        elif event == "finished":
            self._show_finished(job)

    def _show_finished(self, job) -> None:
        self._set_running(False)
        if job.state == "finished":
            ids = ", ".join(f"#{m.id_string}" for m in job.structures)
            self.progress_label.setText(f"Finished {job.name}: opened {ids}; files in "
                                        f"{job.output_dir}")
            self._add_run(job)
        elif job.state == "stopped":
            self.progress_label.setText(f"Stopped {job.name}")
        else:
            self.progress_label.setText(f"Failed: {job.error}")

    def _add_run(self, job) -> None:
        files = [(label, str(path)) for label, path in
                 (("pruned", job.result.pruned_path), ("unpruned", job.result.unpruned_path))
                 if path is not None]
        item = QtWidgets.QListWidgetItem(f"{job.name}: {job.result.summary.get('residues_unpruned')} "
                               f"residues built ({job.output_dir})")
        item.setData(Qt.ItemDataRole.UserRole, (job.name, files))
        self.runs.addItem(item)

    def reopen(self, item) -> None:
        """Open a finished build's models again (at the map's position if it is open)."""
        from chimerax.geometry import Place
        from chimerax.map import Volume

        from ..cmd import open_models

        name, files = item.data(Qt.ItemDataRole.UserRole)
        maps = [m for m in self.session.models.list(type=Volume) if m.name.startswith(name)]
        position = maps[0].scene_position if maps else Place()
        group, structures = open_models(
            self.session, [(f"{name} {label}", path) for label, path in files],
            group_name=f"ModelAngelo {name}", position=position)
        if structures:
            ids = ", ".join(f"#{m.id_string}" for m in structures)
            self.progress_label.setText(f"Reopened {name}: {ids}")

    def _set_running(self, running: bool) -> None:
        self.build_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def _show_error(self, message: str) -> None:
        self.progress_label.setText(f"Error: {message}")
        self.session.logger.error(f"ModelAngelo: {message}")

    @staticmethod
    def _write_pasted(text: str) -> str:
        """Pasted sequences as a FASTA file (kept, so the logged command can be re-run)."""
        if not text.lstrip().startswith(">"):
            text = ">pasted_sequence\n" + text
        fd, path = tempfile.mkstemp(prefix="modelangelo_", suffix=".fasta")
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        return path

    def cleanup(self) -> None:
        """Remove the session trigger handlers (call before the widget goes away)."""
        for handler in self._handlers:
            self.session.triggers.remove_handler(handler)
        self._handlers = []
