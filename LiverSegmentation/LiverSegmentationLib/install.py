"""Dependency check and installation inside Slicer's Python: never at import time, always after asking."""
from __future__ import annotations

import importlib.util
from typing import Callable, Protocol

# import name -> pip requirement (torch is installed through the PyTorch extension when it is present)
REQUIREMENTS = {"torch": "torch", "safetensors": "safetensors>=0.4", "scipy": "scipy", "skimage": "scikit-image",
                "SimpleITK": "SimpleITK"}


def missing_packages(find_spec: Callable[[str], object] = importlib.util.find_spec) -> list[str]:
    return [name for name in REQUIREMENTS if find_spec(name) is None]


class Installer(Protocol):
    def confirm(self, message: str) -> bool: ...

    def install_torch(self) -> bool: ...

    def pip_install(self, requirement: str) -> None: ...


class SlicerInstaller:
    """Installs with Slicer's own tools: the PyTorch extension's utilities for torch, ``pip_install`` otherwise."""

    def confirm(self, message: str) -> bool:
        import slicer

        return slicer.util.confirmOkCancelDisplay(message)

    def install_torch(self) -> bool:
        try:
            import PyTorchUtils  # provided by the PyTorch extension, which picks the right CUDA build
        except ImportError:
            import slicer

            slicer.util.pip_install("torch")
            return True
        return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is not None

    def pip_install(self, requirement: str) -> None:
        import slicer

        slicer.util.pip_install(requirement)


def ensure_dependencies(installer: Installer, find_spec=importlib.util.find_spec) -> bool:
    """True when everything is importable (after installing with the user's consent); False if the user declined."""
    missing = missing_packages(find_spec)
    if not missing:
        return True
    if not installer.confirm("Liver Segmentation needs these Python packages, which are not installed yet: "
                             f"{', '.join(REQUIREMENTS[m] for m in missing)}.\n\nInstall them now? "
                             "This downloads up to a few GB (PyTorch) and can take several minutes."):
        return False
    for name in missing:
        if name == "torch":
            if not installer.install_torch():
                raise RuntimeError("PyTorch could not be installed; install it from the PyTorch extension's module.")
        else:
            installer.pip_install(REQUIREMENTS[name])
    importlib.invalidate_caches()
    still = missing_packages(find_spec)
    if still:
        raise RuntimeError(f"Still missing after installation: {', '.join(still)}. Restart Slicer and try again.")
    return True
