"""The ModelAngelo tool: puts :class:`.ui.panel.ModelAngeloPanel` in a ChimeraX tool window."""

from __future__ import annotations

from chimerax.core.tools import ToolInstance


class ModelAngeloTool(ToolInstance):
    SESSION_ENDURING = False
    SESSION_SAVE = False
    help = "help:user/commands/modelangelo.html#tool"

    def __init__(self, session, tool_name: str = "ModelAngelo"):
        super().__init__(session, tool_name)
        from .ui.panel import ModelAngeloPanel

        try:
            from chimerax.ui import MainToolWindow
        except ImportError:  # ChimeraX library without its GUI: the panel stands alone
            self.panel = ModelAngeloPanel(session)
            return
        self.tool_window = MainToolWindow(self)
        parent = self.tool_window.ui_area
        self.panel = ModelAngeloPanel(session, parent)
        from Qt.QtWidgets import QVBoxLayout

        layout = QVBoxLayout(parent)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.panel)
        self.tool_window.manage(placement="side")

    def delete(self):
        self.panel.cleanup()
        super().delete()


def show_tool(session, tool_name: str = "ModelAngelo") -> ModelAngeloTool:
    """The session's ModelAngelo tool (one at most), shown."""
    for tool in session.tools.find_by_class(ModelAngeloTool):
        tool.display(True)
        return tool
    return ModelAngeloTool(session, tool_name)
