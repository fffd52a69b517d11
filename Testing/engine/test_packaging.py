"""Static checks of what ships: every module file is listed for the Slicer build, the engine imports no Slicer."""
import ast
import re

from helpers import MODULE_DIR, REPO


def _listed(cmake: str) -> set[str]:
    text = cmake.replace("${MODULE_NAME}", "LiverSegmentation")
    return set(re.findall(r"^\s+([\w./-]+\.(?:py|png|ui|safetensors))\s*$", text, re.M))


def test_module_cmakelists_lists_every_python_file_and_resource():
    listed = _listed((MODULE_DIR / "CMakeLists.txt").read_text())
    training = {p for p in listed if p.startswith("liverseg_train/")}  # shipped from Training/ (fine-tuning)
    listed -= training
    assert training == {f"liverseg_train/{p.name}" for p in (REPO / "Training" / "liverseg_train").glob("*.py")}
    present = {str(p.relative_to(MODULE_DIR)) for p in MODULE_DIR.rglob("*") if p.suffix in (".py", ".ui", ".png", ".safetensors")
               and "__pycache__" not in p.parts and "liverseg_web" not in p.parts}  # the browser app: not shipped
    assert present - listed == set(), "missing from LiverSegmentation/CMakeLists.txt"
    assert not any(p.startswith("liverseg_web") for p in listed), "the browser app must not be in the extension"
    assert listed - present == set(), "listed but not present"


def test_engine_never_imports_slicer_qt_or_vtk():
    for path in (MODULE_DIR / "liverseg").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"slicer", "qt", "ctk", "vtk", "liverseg_train", "liverseg_web", "trame",
                                                  "trame_slicer"}, (path.name, name)


def test_module_never_imports_training_code_or_the_browser_app():
    """The module runs fine-tuning as a separate process; importing liverseg_train would tie the GUI to it. The
    browser app builds on the module's library, never the other way round (the extension does not ship it)."""
    for path in [MODULE_DIR / "LiverSegmentation.py", *(MODULE_DIR / "LiverSegmentationLib").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            assert not any(n.split(".")[0] in ("liverseg_train", "liverseg_web", "trame_slicer") for n in names), path.name


def test_top_level_layout():
    for name in ("CMakeLists.txt", "README.md", "LICENSE", "LiverSegmentation", "Resources", "Training", "Testing",
                 "pyproject.toml", "Makefile", ".ci/run"):
        assert (REPO / name).exists(), name
    top = (REPO / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", 'EXTENSION_CATEGORY "Segmentation"', 'EXTENSION_DEPENDS "PyTorch"',
                "find_package(Slicer", "add_subdirectory(LiverSegmentation)", "Slicer_EXTENSION_CPACK"):
        assert key in top, key
