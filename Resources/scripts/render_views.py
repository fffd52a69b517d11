"""Render the module's result with Slicer's own view code, offscreen: the picture for the extension metadata.

Slicer's slice and 3D views draw segmentations with MRML displayable managers (``vtkMRMLSegmentationsDisplayable
Manager2D/3D``) over the slice logic's reslice of the CT. slicer-core (PyPI) holds the same C++ classes, and VTK's
wheels render offscreen through EGL (Mesa's software renderer where there is no GPU), so this script builds the
views the application would show (axial through the largest tumor, coronal through the liver, 3D from the front
with the liver half transparent) without the Slicer application or a display:

    python Resources/scripts/render_views.py [CT] -o Resources/views.png

CT defaults to the public sample (LiTS 117); it is segmented with the bundled default model by the engine and put
into segments by the module's own scene code (``LiverSegmentationLib.scene.fill_segmentation``). Needs the test
environment (``make test-deps``: slicer-core).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "Testing" / "slicer"), str(REPO / "LiverSegmentation")]  # the headless scene set-up


def _window(size: int):
    import vtk

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(size, size)
    renderer = vtk.vtkRenderer()
    window.AddRenderer(renderer)
    interactor = vtk.vtkGenericRenderWindowInteractor()  # displayable managers need one
    interactor.SetRenderWindow(window)
    return window, renderer, interactor


def _managers(factory, names, renderer, view_node):
    import slicer

    factory.SetMRMLApplicationLogic(slicer._headless_refs[0])
    for name in names:
        if not factory.IsDisplayableManagerRegistered(name):
            factory.RegisterDisplayableManager(name)
    group = factory.InstantiateDisplayableManagers(renderer)
    group.SetMRMLDisplayableNode(view_node)
    return group


def _capture(window):
    import vtk

    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    image = vtk.vtkImageData()
    image.DeepCopy(grab.GetOutput())
    return image


def render_slice(volume, orientation: str, ras: np.ndarray, size: int):
    """A slice view (``Axial``/``Coronal``/``Sagittal``) through ``ras``, CT with the segments' fill and outline."""
    import slicer
    import vtk

    scene = slicer.mrmlScene
    if not scene.GetDefaultNodeByClass("vtkMRMLSliceNode"):
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)  # what the application does at start-up
    node = scene.CreateNodeByClass("vtkMRMLSliceNode")  # a copy of the default node, presets included
    node.SetLayoutName(orientation)
    node.SetName(orientation)
    node.SetDefaultOrientation(orientation)
    node.SetOrientation(orientation)
    scene.AddNode(node)
    node.SetDimensions(size, size, 1)
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLScene(scene)
    logic.SetMRMLApplicationLogic(slicer._headless_refs[0])
    logic.SetSliceNode(node)
    logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
    logic.FitSliceToAll()
    node.JumpSliceByCentering(*ras[:3])
    window, renderer, interactor = _window(size)
    actor = vtk.vtkImageActor()
    actor.GetMapper().SetInputConnection(logic.GetImageDataConnection())
    renderer.AddActor(actor)
    group = _managers(slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance(),
                      ["vtkMRMLSegmentationsDisplayableManager2D"], renderer, node)
    camera = renderer.GetActiveCamera()  # one world unit = one pixel, as in Slicer's slice views
    camera.ParallelProjectionOn()
    camera.SetFocalPoint(size / 2, size / 2, 0)
    camera.SetPosition(size / 2, size / 2, 500)
    camera.SetViewUp(0, 1, 0)
    camera.SetParallelScale(size / 2)
    renderer.ResetCameraClippingRange()
    image = _capture(window)
    del group, interactor
    return image


def render_3d(segmentation, size: int):
    """The segments' closed surfaces seen from the front (patient's right on the left), liver half transparent."""
    import slicer

    segmentation.CreateClosedSurfaceRepresentation()
    display = segmentation.GetDisplayNode()
    liver = segmentation.GetSegmentation().GetSegmentIdBySegmentName("Liver")
    if liver:
        display.SetSegmentOpacity3D(liver, 0.45)
    view = slicer.vtkMRMLViewNode()
    view.SetLayoutName("1")
    view.SetName("View1")
    slicer.mrmlScene.AddNode(view)
    window, renderer, interactor = _window(size)
    group = _managers(slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance(),
                      ["vtkMRMLSegmentationsDisplayableManager3D"], renderer, view)
    renderer.SetBackground(0.1, 0.1, 0.15)
    renderer.ResetCamera()
    camera = renderer.GetActiveCamera()
    centre = np.array(camera.GetFocalPoint())
    distance = camera.GetDistance()
    camera.SetPosition(*(centre + np.array([0.0, distance, 0.0])))  # anterior, looking posterior
    camera.SetViewUp(0, 0, 1)
    renderer.ResetCamera()
    camera.Zoom(1.25)
    image = _capture(window)
    del group, interactor
    return image


def render_views(volume, segmentation, labelmap: np.ndarray, output: Path, size: int = 400) -> Path:
    """Axial | coronal | 3D side by side in one PNG; ``labelmap`` ([k, j, i]) chooses where to cut."""
    import vtk

    from LiverSegmentationLib.scene import ijk_to_ras

    m = ijk_to_ras(volume)
    tumor = labelmap == 2
    k = int(np.argmax(tumor.sum(axis=(1, 2)))) if tumor.any() else int(np.argmax((labelmap > 0).sum(axis=(1, 2))))
    kji = np.argwhere(labelmap > 0).mean(axis=0)
    axial = m @ np.array([kji[2], kji[1], k, 1.0])
    centre = m @ np.array([kji[2], kji[1], kji[0], 1.0])
    append = vtk.vtkImageAppend()
    append.SetAppendAxis(0)
    for image in (render_slice(volume, "Axial", axial, size), render_slice(volume, "Coronal", centre, size),
                  render_3d(segmentation, size)):
        append.AddInputData(image)
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(output))
    writer.SetInputConnection(append.GetOutputPort())
    writer.Write()
    return output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ct", nargs="?", help="CT file or DICOM folder (default: the public sample)")
    parser.add_argument("-o", "--output", default=str(REPO / "Resources" / "views.png"))
    parser.add_argument("--size", type=int, default=400, help="pixels per view (default 400)")
    args = parser.parse_args()
    from harness import add_volume, make_headless_slicer

    import slicer
    from liverseg import Segmenter
    from liverseg.io import read_image
    from liverseg.sample import fetch_sample
    from LiverSegmentationLib.scene import fill_segmentation

    make_headless_slicer()
    image = read_image(args.ct or fetch_sample()["image"])
    result = Segmenter(None, "cpu").segment(image.array, image.ijk_to_ras)
    volume = add_volume(slicer.mrmlScene, image.array, image.ijk_to_ras, "CT")
    volume.GetDisplayNode().SetAutoWindowLevel(0)
    volume.GetDisplayNode().SetWindowLevel(400, 40)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CT liver segmentation")
    segmentation.CreateDefaultDisplayNodes()
    fill_segmentation(segmentation, volume, result.labelmap)
    print(render_views(volume, segmentation, result.labelmap, Path(args.output), args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
