"""Qt widgets of the ModelAngelo tool panel.

Plain Qt widget classes (no ChimeraX window code): :mod:`..tool` places them in a ChimeraX
tool window, and tests build them directly with PyQt6.
"""
