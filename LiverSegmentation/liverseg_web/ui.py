"""The page: trame-slicer's viewer layout (slice and 3D views, segment editor, volume properties) with the
"Liver Segmentation" panel in front. CSS classes ``liver-*`` name the controls for people and for the browser test."""
from __future__ import annotations

from trame.widgets import html
from trame.widgets.vuetify3 import (
    VAlert,
    VBtn,
    VCardTitle,
    VCheckbox,
    VDivider,
    VFileInput,
    VProgressLinear,
    VTable,
    VTextarea,
)
from trame_slicer.app.ui import (
    ControlButton,
    LayoutButton,
    MprInteractionButton,
    SegmentEditorToolbarUI,
    SegmentEditorUI,
    SegmentEditorUndoRedoUI,
    VolumePropertyUI,
)
from trame_slicer.app.ui.viewer_layout import ViewerLayout

LIVER_TOOL = "LiverPanel"
DOWNLOADS = (("seg.nrrd", "Segmentation (.seg.nrrd)", "application/octet-stream"),
             ("nii.gz", "Labelmap (NIfTI)", "application/gzip"),
             ("csv", "Statistics (CSV)", "text/csv"))


class LiverPanel(html.Div):
    """Load, Segment (progress, Cancel, log, warnings), statistics, downloads."""

    def __init__(self, load_chunk, download, **kwargs):
        super().__init__(classes="pa-2", **kwargs)
        ctrl = self.server.controller
        chunk = ctrl.trigger_name(load_chunk)
        get_file = ctrl.trigger_name(download)
        with self:
            VCardTitle("Liver Segmentation", classes="px-0")
            html.Div("Open a CT (NIfTI, NRRD, or a .zip of one DICOM series) or the public sample.",
                     classes="text-caption mb-2")
            VFileInput(
                label="Open CT file(s)", density="compact", multiple=True, prepend_icon="mdi-file-upload",
                classes="liver-upload", disabled=("liver_busy",),
                change=(
                    "(ev) => { const files = ev.target.files; let total = 0;"
                    " for (const f of files) { total += f.size; }"
                    " if (total > liver_max_upload_mb * 1e6) { liver_error = liver_upload_refusal; return; }"
                    f" liver_status = 'Uploading...'; window.load_files_by_chunks(files, {{ trigger_name: '{chunk}' }});"
                    " }"
                ),
            )
            VBtn("Load sample CT (LiTS 117)", click=ctrl.liver_load_sample, block=True, variant="tonal",
                 classes="liver-sample mb-2", disabled=("liver_busy",))
            VDivider(classes="my-2")
            VCheckbox(label="Segment tumors too", v_model=("liver_tumor",), density="compact", hide_details=True,
                      disabled=("liver_busy",))
            VBtn("Segment liver", click=ctrl.liver_segment, block=True, color="primary", classes="liver-segment",
                 disabled=("liver_busy || !liver_has_volume",))
            with html.Div(v_if=("liver_busy",), classes="mt-2"):
                VProgressLinear(model_value=("liver_progress",), height=8, color="primary")
                html.Div("{{ liver_message }} ({{ Math.round(liver_progress) }} %)", classes="text-caption liver-progress")
                VBtn("Cancel", click=ctrl.liver_cancel, block=True, variant="outlined", color="error",
                     classes="liver-cancel mt-1")
            html.Div("{{ liver_status }}", classes="text-body-2 my-2 liver-status")
            VAlert(v_if=("liver_error",), type="error", density="compact", text=("liver_error",),
                   classes="liver-error mb-2", closable=True, click_close="liver_error = ''")
            VAlert(v_for="w in liver_warnings", type="warning", density="compact", text=("w",),
                   classes="liver-warning mb-2")
            with html.Div(v_if=("liver_review.length",), classes="liver-review mb-2"):
                html.Div("Regions to review (points in the views; click one to centre the views on it):",
                         classes="text-caption")
                VBtn("{{ r.text }}", v_for="r in liver_review", key="r.index", block=True, variant="text",
                     size="small", prepend_icon="mdi-crosshairs-gps", classes="liver-review-item text-none",
                     style="white-space: normal; height: auto; justify-content: start; text-align: left;",
                     click=(ctrl.liver_show_review, "[r.index]"))
            with html.Div(v_if=("liver_has_result",)):
                with VTable(density="compact", classes="liver-statistics"):
                    with html.Tbody():
                        with html.Tr(v_for="row in liver_stats"):
                            html.Td("{{ row.name }}")
                            html.Td("{{ row.value }}", classes="text-right")
                VBtn("Update statistics after edits", click=ctrl.liver_update_statistics, block=True,
                     variant="text", size="small", classes="liver-update-statistics")
                html.Div("Download the result as it is now (edits included):", classes="text-caption mt-2")
                for kind, label, mime in DOWNLOADS:
                    VBtn(label, block=True, variant="outlined", size="small", classes=f"liver-download-{kind.replace('.', '-')} mb-1",
                         prepend_icon="mdi-download",
                         click=f"utils.download(liver_stem + '.{kind}', trigger('{get_file}', ['{kind}']), '{mime}')")
            VTextarea(v_if=("liver_log",), model_value=("liver_log",), label="Log", readonly=True, rows=6,
                      density="compact", classes="liver-log mt-2", style="font-family: monospace; font-size: 11px;")


class LiverWebUI:
    """The trame-slicer segmentation app's layout (as ``trame_slicer.app.ui.SegmentationAppUI`` arranges it),
    without its own file loading (uploads go through the panel's size limit) and with the liver panel."""

    def __init__(self, server, layout_manager, load_chunk, download):
        with ViewerLayout(server, title="Liver Segmentation", is_drawer_visible=True) as self.layout:
            state = self.layout.typed_state
            state.data.active_tool = LIVER_TOOL
            with self.layout.drawer:
                self.panel = LiverPanel(load_chunk, download, v_if=(self._active(LIVER_TOOL),))
                self.segment_editor = SegmentEditorUI(v_if=(self._active(SegmentEditorUI.__name__),))
                self.volume_properties = VolumePropertyUI(v_if=(self._active(VolumePropertyUI.__name__),))
            with self.layout.toolbar:
                self._tool_button("Liver Segmentation", "mdi-stomach", LIVER_TOOL, always=True)
                self._tool_button("Segment Editor", "mdi-brush", SegmentEditorUI.__name__)
                SegmentEditorToolbarUI(editor_ui=self.segment_editor)
                self._tool_button("Volume Properties", "mdi-tune-variant", VolumePropertyUI.__name__)
                self.layout_button = LayoutButton(classes="mt-1", disabled=(f"!{state.name.is_volume_loaded}",))
                self.mpr_interaction_button = MprInteractionButton(classes="mt-1",
                                                                   disabled=(f"!{state.name.is_volume_loaded}",))
            with self.layout.undo_redo:
                SegmentEditorUndoRedoUI(editor_ui=self.segment_editor, v_if=(self._active(SegmentEditorUI.__name__),))
            with self.layout.content:
                layout_manager.initialize_layout_grid(self.layout)

    @property
    def data(self):
        return self.layout.typed_state.data

    def _active(self, tool: str) -> str:
        return f"{self.layout.typed_state.name.active_tool} === '{tool}'"

    def _tool_button(self, name: str, icon: str, tool: str, always: bool = False) -> None:
        state = self.layout.typed_state

        def toggle():
            visible = not state.data.is_drawer_visible or state.data.active_tool != tool
            state.data.is_drawer_visible = visible
            state.data.active_tool = tool if visible else None

        ControlButton(name=name, icon=icon, click=toggle, active=(self._active(tool),), classes=f"mt-1 liver-tool-{tool}",
                      disabled=False if always else (f"!{state.name.is_volume_loaded}",))
