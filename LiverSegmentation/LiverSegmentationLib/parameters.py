"""What the user chooses in the panel, as a plain dataclass usable from scripts and tests without the GUI."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from liverseg.job import Job

DEVICE_ITEMS = ("auto", "cuda", "cpu")


@dataclass
class SegmentationParameters:
    model: str = "default"  # bundled model name or path to a .safetensors model file
    device: str = "auto"  # auto | cuda | cpu
    tumor: bool = True
    postprocessing: bool = True
    roi: bool = True  # liver ROI: a coarse pass finds the liver, the fine pass runs only there
    allow_non_hu: bool = False

    def to_job(self, ijk_to_ras) -> "Job":
        """The engine's job type (its one definition lives in ``liverseg.job``)."""
        from liverseg.job import Job

        options = asdict(self)
        options["model"] = None if self.model in ("", "default") else self.model
        return Job(ijk_to_ras=[[float(v) for v in row] for row in ijk_to_ras], **options)
