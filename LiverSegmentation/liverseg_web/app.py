"""One browser session: a trame server with its own Slicer scene (trame-slicer's ``SlicerApp``), the slice and 3D
views, the segment editor with its effects and undo/redo, and the liver panel."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from trame.app import TrameApp, get_server
from trame_slicer import module as trame_slicer_module
from trame_slicer.app.logic import LayoutButtonLogic, MprInteractionButtonLogic, SegmentEditorLogic, VolumePropertyLogic
from trame_slicer.core import SlicerApp
from trame_slicer.rca_view import register_rca_factories

from . import slicer_globals
from .liver_logic import LiverLogic
from .ui import LiverWebUI

log = logging.getLogger("liverseg.web")


class LiverWebApp(TrameApp):
    def __init__(self, server=None, *, session_dir: Path, max_upload_bytes: int, python_executable: str | None = None):
        super().__init__(server)
        self.server.enable_module(trame_slicer_module)
        self.slicer_app = SlicerApp()
        slicer_globals.install(self.slicer_app)
        register_rca_factories(self.slicer_app.view_manager, self.server)
        # The same collaborators as trame-slicer's SegmentationAppLogic, in its order, without its file loading.
        self.editor_logic = SegmentEditorLogic(self.server, self.slicer_app)
        self.volume_logic = VolumePropertyLogic(self.server, self.slicer_app)
        self.layout_logic = LayoutButtonLogic(self.server, self.slicer_app)
        self.mpr_logic = MprInteractionButtonLogic(self.server, self.slicer_app)
        self.liver = LiverLogic(self.server, self.slicer_app, self._show_volume, session_dir, max_upload_bytes,
                                python_executable)
        self.ui = LiverWebUI(self.server, self.layout_logic.layout_manager, self.liver.load_chunk, self._download)
        self.editor_logic.set_ui(self.ui.segment_editor)
        self.volume_logic.set_ui(self.ui.volume_properties)
        self.layout_logic.set_ui(self.ui.layout_button)
        self.mpr_logic.set_ui(self.ui.mpr_interaction_button)
        self.server.state.trame__title = "Liver Segmentation"

    def _show_volume(self, volume) -> None:
        self.slicer_app.display_manager.show_volume(volume, do_reset_views=True)
        self.editor_logic.on_volume_changed(volume)
        self.volume_logic.on_volume_changed(volume)
        self.ui.data.is_volume_loaded = True

    async def _download(self, kind: str):
        try:
            data = self.liver.result_file(kind)
        except Exception as exc:  # shown on the page; the browser gets no file
            self.liver.report(str(exc))
            return None
        return self.server.protocol.addAttachment(data)


def serve_session(host: str, port: int, max_upload_mb: float, idle_timeout_s: int) -> None:
    """Serve one session until no browser has been connected for ``idle_timeout_s``; then stop a running
    worker and remove the session's temporary folder (uploads, the sample copy, downloads)."""
    with tempfile.TemporaryDirectory(prefix="liverseg-web-") as session_dir:
        server = get_server(name=f"liverseg-web-{port}", client_type="vue3")
        app = LiverWebApp(server, session_dir=Path(session_dir), max_upload_bytes=int(max_upload_mb * 1e6))
        try:
            server.start(host=host, port=port, open_browser=False, timeout=idle_timeout_s, show_connection_info=False)
        finally:
            app.liver.shutdown()
    log.info("Session on port %d ended; its files were removed.", port)
