"""The ModelAngelo panel (real PyQt6 widgets, offscreen) in a headless ChimeraX session."""

from __future__ import annotations

from pathlib import Path

import chimerax_harness as cx
import pytest
from test_cmd import (  # noqa: F401 (fixtures: pipeline, no_leftover_jobs)
    FASTA,
    MAP,
    RecordingPipeline,
    no_leftover_jobs,
    pipeline,
)

pytestmark = pytest.mark.chimerax


@pytest.fixture
def panel(qapp, chimerax_session):
    from chimerax.modelangelo.ui.panel import ModelAngeloPanel

    p = ModelAngeloPanel(chimerax_session)
    yield p
    p.cleanup()
    p.deleteLater()


def test_map_chooser_follows_open_and_closed_maps(panel):
    assert panel.map_menu.count() == 0
    cx.run(f"open {MAP}")
    cx.run(f"open {MAP}")
    assert [panel.map_menu.itemText(i) for i in range(panel.map_menu.count())] == [
        "#1 emd_2566.mrc", "#2 emd_2566.mrc"]
    panel.map_menu.setCurrentIndex(1)
    cx.run("close #1")
    assert panel.map_menu.count() == 1 and panel.map_menu.currentData() == "#2"


def test_build_button_runs_the_command(panel, pipeline, tmp_path, chimerax_log,
                                      chimerax_session):
    cx.run(f"open {MAP}")
    panel.sequence_path.setText(str(FASTA))
    panel.device_menu.setCurrentText("cpu")
    out = tmp_path / "panel out"  # a space: the path must be quoted in the command
    panel.output_folder.setText(str(out))
    assert not panel.stop_button.isEnabled()

    panel.build_button.click()

    command = (f'modelangelo build #1 sequence {FASTA} device cpu outputFolder "{out}" '
               "wait false")
    assert panel.command_text() == command
    assert command in chimerax_log.text()  # run and logged through ChimeraX's command line
    job = panel.job
    assert job is not None and job.output_dir == out
    assert cx.wait_for(job.done.is_set, 30)
    (call,) = pipeline.calls
    assert call["device"] == "cpu" and call["output_dir"] == out and len(call["sequences"]) == 1
    assert job.state == "finished" and len(job.structures) == 2
    assert panel.progress_label.text().startswith("Finished emd_2566: opened #2.1, #2.2")
    assert panel.build_button.isEnabled() and not panel.stop_button.isEnabled()

    # the finished build is listed; double-clicking it opens its models again
    assert panel.runs.count() == 1 and str(out) in panel.runs.item(0).text()
    cx.run("close #2")
    panel.runs.itemDoubleClicked.emit(panel.runs.item(0))
    from chimerax.atomic import AtomicStructure

    reopened = chimerax_session.models.list(type=AtomicStructure)
    assert sorted(s.name for s in reopened) == ["emd_2566 pruned", "emd_2566 unpruned"]
    assert panel.progress_label.text().startswith("Reopened emd_2566")


def test_pasted_sequence_is_used(panel, pipeline, tmp_path):
    cx.run(f"open {MAP}")
    panel.sequence_text.setPlainText("MKVLAAGIVGLLLA")
    panel.output_folder.setText(str(tmp_path / "o"))
    panel.build_button.click()
    assert cx.wait_for(panel.job.done.is_set, 30)
    (call,) = pipeline.calls
    assert [s.sequence for s in call["sequences"]] == ["MKVLAAGIVGLLLA"]


def test_stop_button_stops_the_build(panel, monkeypatch, tmp_path, chimerax_log):
    from chimerax.modelangelo import pipeline as pipeline_mod

    fake = RecordingPipeline(wait_for_stop=True)
    monkeypatch.setattr(pipeline_mod, "run_build", fake)
    cx.run(f"open {MAP}")
    panel.output_folder.setText(str(tmp_path / "o"))
    panel.build_button.click()
    assert fake.started.wait(10)
    assert cx.wait_for(lambda: panel.progress_label.text() == "emd_2566: detect 50%", 10)
    assert panel.stop_button.isEnabled() and not panel.build_button.isEnabled()
    panel.stop_button.click()
    assert "modelangelo stop" in chimerax_log.text()
    assert cx.wait_for(panel.job.done.is_set, 10)
    assert panel.job.state == "stopped"
    assert panel.progress_label.text() == "Stopped emd_2566"
    assert panel.build_button.isEnabled()


def test_errors_show_in_the_panel(panel, pipeline, tmp_path, chimerax_log):
    panel.build_button.click()  # no map open
    assert panel.progress_label.text() == "Error: open a map first"
    cx.run(f"open {MAP}")
    panel.sequence_path.setText(str(tmp_path / "missing.fasta"))
    panel.build_button.click()
    assert panel.progress_label.text().startswith("Error: ")
    assert "missing.fasta" in panel.progress_label.text()
    assert pipeline.calls == []
    assert "ModelAngelo: open a map first" in chimerax_log.text("error")


def test_tool_instance_holds_the_panel(qapp, chimerax_session):
    from chimerax.modelangelo.tool import ModelAngeloTool, show_tool
    from chimerax.modelangelo.ui.panel import ModelAngeloPanel

    tool = show_tool(chimerax_session)
    assert isinstance(tool, ModelAngeloTool) and isinstance(tool.panel, ModelAngeloPanel)
    assert show_tool(chimerax_session) is tool  # one per session
    assert chimerax_session.tools.find_by_class(ModelAngeloTool) == [tool]
    assert tool.bundle_info.name == "ChimeraX-ModelAngelo"
    assert tool.tool_info.name == "ModelAngelo"
    cx.run(f"open {MAP}")
    assert tool.panel.map_menu.count() == 1
    handlers = list(tool.panel._handlers)
    tool.delete()
    assert chimerax_session.tools.find_by_class(ModelAngeloTool) == []
    assert tool.panel._handlers == [] and handlers
    cx.run(f"open {MAP}")  # no handler of the deleted panel fires
    assert tool.panel.map_menu.count() == 1
    assert Path(tool.panel.session.toolshed.find_bundle(
        "ChimeraX-ModelAngelo", None).get_path("docs")).is_dir()
