"""The two application globals that Slicer's own ``slicer.util`` helpers expect, taken from the session's real
trame-slicer application.

``slicer.util`` (``updateSegmentBinaryLabelmapFromArray``, ``arrayFromSegmentBinaryLabelmap``, ...) creates its
temporary nodes in ``slicer.mrmlScene`` and calls ``slicer.modules.<name>.logic()``; in the Slicer application
these are set by the application. slicer-core has neither, so each session process points them at its one scene
and the module logics trame-slicer registered for it. One session = one process = one scene, so the globals are
never shared between users.
"""
from __future__ import annotations

from types import SimpleNamespace


def install(slicer_app) -> None:
    import slicer

    slicer.mrmlScene = slicer_app.scene
    logics = {"volumes": slicer_app.volumes_logic, "segmentations": slicer_app.segmentations_logic,
              "terminologies": slicer_app.terminologies_logic, "subjecthierarchy": slicer_app.subject_hierarchy_logic}
    slicer.modules = SimpleNamespace(**{name: SimpleNamespace(logic=(lambda logic=logic: logic))
                                        for name, logic in logics.items()})
