"""ChimeraX-ModelAngelo: automated protein model building in cryo-EM maps.

This package is both a UCSF ChimeraX bundle and a plain Python package used by the
``modelangelo`` command line. Only the bundle entry point lives here: ChimeraX's toolshed
reads ``bundle_api`` (commands from ``bundle_info.xml`` register lazily through it).
``bundle_api`` is created on first access, so importing this package (as the CLI does)
never imports ChimeraX, and works where ChimeraX is not installed.
"""


def _make_bundle_api():
    from chimerax.core.toolshed import BundleAPI

    class _ModelAngeloAPI(BundleAPI):
        api_version = 1

        @staticmethod
        def register_command(bi, ci, logger):
            from . import cmd

            cmd.register_command(ci.name, logger)

        @staticmethod
        def start_tool(session, bi, ti):
            from . import tool

            return tool.show_tool(session, ti.name)

    return _ModelAngeloAPI()


def __getattr__(name):
    # PEP 562: ``chimerax.modelangelo.bundle_api`` is built on first use, inside ChimeraX.
    if name == "bundle_api":
        try:
            api = _make_bundle_api()
        except ImportError as exc:  # outside ChimeraX: no bundle API (hasattr() is False)
            raise AttributeError(f"{__name__}.bundle_api needs ChimeraX ({exc})") from None
        globals()["bundle_api"] = api
        return api
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
