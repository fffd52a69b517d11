"""A headless Slicer for tests: the real C++ core from the PyPI package ``slicer-core`` plus the few stand-ins
the application would otherwise provide.

REAL (slicer-core): the MRML scene and every node, the module logics (colors, volumes, segmentations, subject
hierarchy, terminologies), volume and segmentation storage, and Slicer's own ``slicer/util.py``.

STAND-INS (application-only names that slicer-core lacks, kept minimal):
- ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()``: set to the real scene/logics created here.
- ``slicer.app``: an object with ``applicationName`` only (nothing in the module's Logic uses it).
- ``slicer.ScriptedLoadableModule``: base classes with the real ``getParameterNode`` behaviour (a singleton
  vtkMRMLScriptedModuleNode tagged with the module name); Widget/Test bases are empty.
- ``slicer.parameterNodeWrapper.parameterNodeWrapper``: stores annotated fields in the real scripted module node
  (parameters as strings, MRML nodes as node references); no GUI binding (``connectGui`` is a no-op).
- ``qt``, ``ctk``: empty modules; the Widget test replaces ``qt`` and the dialogs with the recorders in
  ``qt_standins.py`` (documented there).
- ``slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget``: ``parent.isEntered``, ``layout.addWidget``,
  ``setup()`` and ``resourcePath()`` only.
"""
from __future__ import annotations

import sys
import types

import slicer
import vtk


def _module_namespace(**logics):
    ns = types.SimpleNamespace()
    for name, logic in logics.items():
        setattr(ns, name, types.SimpleNamespace(logic=(lambda lg=logic: lg)))
    return ns


class _ScriptedLoadableModule:
    def __init__(self, parent=None):
        self.parent = parent if parent is not None else types.SimpleNamespace()


class _ScriptedLoadableModuleWidget:
    """Stand-in with what the module's Widget uses of the real base: ``parent.isEntered``, ``layout.addWidget``,
    ``setup()`` and ``resourcePath()`` (the module's Resources folder, as in Slicer)."""

    def __init__(self, parent=None):
        self.parent = parent if parent is not None else types.SimpleNamespace(isEntered=True)
        self.layout = types.SimpleNamespace(addWidget=lambda widget: None)

    def setup(self):
        pass

    def resourcePath(self, filename):
        from pathlib import Path

        return str(Path(sys.modules[type(self).__module__].__file__).parent / "Resources" / filename)


class _ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = type(self).__name__[: -len("Logic")] if type(self).__name__.endswith("Logic") else type(self).__name__

    def getParameterNode(self):
        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetName(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node = scene.AddNode(node)
        return node


class _ScriptedLoadableModuleTest:
    def delayDisplay(self, message, msec=0):
        pass


def parameterNodeWrapper(cls):
    """Stand-in: typed attributes backed by the real vtkMRMLScriptedModuleNode (strings and node references)."""
    import typing

    annotations = typing.get_type_hints(cls)
    defaults = {k: getattr(cls, k) for k in annotations if hasattr(cls, k)}

    def __init__(self, node):
        object.__setattr__(self, "parameterNode", node)
        for key, value in defaults.items():
            if not node.GetParameter(key):
                setattr(self, key, value)

    def make_property(key, typ):
        is_node = isinstance(typ, type) and issubclass(typ, vtk.vtkObject)

        def get(self):
            if is_node:
                return self.parameterNode.GetNodeReference(key)
            raw = self.parameterNode.GetParameter(key)
            if typ is bool:
                return raw == "True"
            return typ(raw) if raw != "" else None

        def set_(self, value):
            if is_node:
                self.parameterNode.SetNodeReferenceID(key, value.GetID() if value is not None else None)
            else:
                self.parameterNode.SetParameter(key, str(value))
        return property(get, set_)

    attrs = {"__init__": __init__, "connectGui": lambda self, ui: None, "disconnectGui": lambda self, tag: None}
    for key, typ in annotations.items():
        attrs[key] = make_property(key, typ)
    return type(cls.__name__, (), attrs)


def make_headless_slicer() -> "slicer.vtkMRMLScene":
    """Create a scene with the module logics the application registers, and install the stand-ins."""
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLScene(scene)
    app_logic.SetModuleLogic("Colors", colors)
    colors.AddDefaultColorNodes()
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLApplicationLogic(app_logic)
    volumes.SetMRMLScene(scene)
    app_logic.SetModuleLogic("Volumes", volumes)
    # The segmentations logic must see the scene before any segmentation node exists (conversion rules).
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLApplicationLogic(app_logic)
    segmentations.SetMRMLScene(scene)
    app_logic.SetModuleLogic("Segmentations", segmentations)
    subject_hierarchy = slicer.vtkSlicerSubjectHierarchyModuleLogic()
    subject_hierarchy.SetMRMLScene(scene)
    app_logic.SetModuleLogic("SubjectHierarchy", subject_hierarchy)
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic()

    slicer.mrmlScene = scene
    slicer.modules = _module_namespace(colors=colors, volumes=volumes, segmentations=segmentations,
                                       subjecthierarchy=subject_hierarchy, terminologies=terminologies)
    slicer.app = types.SimpleNamespace(applicationName="slicer-core (headless test harness)")
    slicer._headless_refs = (app_logic, colors, volumes, segmentations, subject_hierarchy, terminologies)

    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    slm.ScriptedLoadableModule = _ScriptedLoadableModule
    slm.ScriptedLoadableModuleWidget = _ScriptedLoadableModuleWidget
    slm.ScriptedLoadableModuleLogic = _ScriptedLoadableModuleLogic
    slm.ScriptedLoadableModuleTest = _ScriptedLoadableModuleTest
    sys.modules["slicer.ScriptedLoadableModule"] = slm
    slicer.ScriptedLoadableModule = slm
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = parameterNodeWrapper
    sys.modules["slicer.parameterNodeWrapper"] = pnw
    slicer.parameterNodeWrapper = pnw
    for name in ("qt", "ctk"):
        sys.modules.setdefault(name, types.ModuleType(name))
    return scene


def add_volume(scene, array, ijk_to_ras, name="CT"):
    """A real scalar volume node from a [k, j, i] array and a 4x4 IJK-to-RAS matrix."""
    import numpy as np

    node = slicer.util.addVolumeFromArray(np.ascontiguousarray(array), name=name)
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(ijk_to_ras[r][c]))
    node.SetIJKToRASMatrix(m)
    return node
