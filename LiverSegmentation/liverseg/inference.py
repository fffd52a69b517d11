"""Slice-wise network inference on a canonical volume: a coarse pass to find the liver, then a fine pass there.

The coarse pass runs the same network on a few evenly spaced full slices to find the liver's extent; the fine
pass runs on every slice inside that craniocaudal extent (plus a margin). On a typical abdominal CT this skips most
slices, which is where the speed comes from.

The fine pass takes the liver from the whole field of view and the tumor from a crop around the coarse liver (its
box plus ``margin_xy_mm``). Why two views: the network's output depends on how much of the slice it sees. Held out,
on the 11-slice AMOS slab, ten models of the recipe family reached liver Dice 0.73-0.84 from the crop and 0.83-0.90
from the whole field (8 of 10 better, by up to 0.13, mostly the thin lowest slices; CHAOS within -0.008..+0.014),
while lesions drawn into the held-out livers were segmented worse from the whole field (Dice 0.517 -> 0.470 and
0.535 -> 0.408 on CHAOS for two models), and the default called part of an inserted cyst tumor (README, "The
in-plane crop"). The crop costs about half a whole-field pass.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from .modelfile import LoadedModel
from .preprocessing import (PAD_VALUE, context_indices, inplane_shape, normalize_hu, pad_to_multiple, resample_slices_z,
                            resize_slices)
from .progress import Reporter

log = logging.getLogger("liverseg")


@dataclass
class InferenceOptions:
    batch_size: int = 8
    coarse_step_mm: float = 12.0  # distance between coarse-pass slices
    margin_z_mm: float = 20.0  # extent added above/below the coarse liver
    margin_xy_mm: float = 40.0  # extent added around the coarse liver in-plane: the tumor's crop
    roi: bool = True  # liver ROI; False: run every slice over the full field of view (slower, for checks)
    # Test-time augmentation: also run at in-plane pixel sizes scaled by these factors and average the
    # probabilities (the networks were trained with 0.85-1.15 scaling). () = off; e.g. (0.9, 1.1) triples the cost.
    tta_scales: tuple[float, ...] = ()


@dataclass
class ProbabilityMaps:
    """Liver and tumor probabilities (uint8, 0..255) on the grid that was asked for, plus what was computed."""

    liver: np.ndarray
    tumor: np.ndarray
    slices_run: int
    roi_slices: tuple[int, int]
    # Liver pixels (network grid) the coarse pass found on its probe slices; None when no coarse pass ran. The
    # mirrored-header check compares it with the same probe of the mirrored image (probe_liver_pixels).
    probe_liver_pixels: int | None = None


class SlicePredictor:
    """Runs one loaded model over canonical volumes; create once, call for many volumes."""

    def __init__(self, model: LoadedModel, device: torch.device, options: InferenceOptions | None = None):
        self.model = model
        self.spec = model.preprocessing
        self.device = device
        self.options = dataclasses.replace(options) if options else InferenceOptions()  # OOM handling edits it
        # A copy: moving to a device or to channels-last works in place, and the caller's network (training's
        # live model during validation) must stay as it was given.
        self.network = copy.deepcopy(model.network).to(device)
        self.pixels_run = 0  # network input pixels (voxels for 3D) of the latest volume, for throughput figures
        self.channels_last = device.type == "cpu" and not self.spec.volumetric
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)

    # ---- low level -----------------------------------------------------------------------------------------
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Network probabilities for a (N, C, H, W) batch; mixed precision on GPUs."""
        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    return torch.sigmoid(self.network(x).float())
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return torch.sigmoid(self.network(x).float())

    def _forward_batched(self, x: torch.Tensor) -> torch.Tensor:
        """Forward in batches; on GPU out-of-memory halve the batch, and at batch 1 fall back to the CPU."""
        self.pixels_run += x.shape[0] * int(np.prod(x.shape[2:]))
        while True:
            try:
                outs = [self._forward(x[i:i + self.options.batch_size]).cpu() for i in range(0, len(x), self.options.batch_size)]
                return torch.cat(outs)
            except torch.cuda.OutOfMemoryError:  # what every torch >= 2.1 raises (torch.OutOfMemoryError is newer)
                if self.device.type != "cuda":
                    raise
                torch.cuda.empty_cache()
                if self.options.batch_size > 1:
                    self.options.batch_size //= 2
                    log.warning("GPU out of memory; retrying with batch size %d.", self.options.batch_size)
                else:
                    log.warning("GPU out of memory even at batch size 1; continuing on the CPU (slower).")
                    self.device = torch.device("cpu")
                    self.network = self.network.to(self.device)

    def _run_slices(self, volume: torch.Tensor, z: np.ndarray, dz: float, report: Reporter,
                    window_yx: tuple[slice, slice] = (slice(None), slice(None))) -> torch.Tensor:
        """Probabilities (len(z), 2, h, w) for the given slices of a preprocessed (Z, H, W) volume whose slices are
        ``dz`` mm apart, over ``window_yx`` (default: the whole slice)."""
        ctx = context_indices(z, volume.shape[0], self.spec.context_slices, self.spec.context_stride(dz))
        chunk = max(1, self.options.batch_size) * 4
        outs = []
        for start in range(0, len(z), chunk):
            report(start / max(1, len(z)))
            idx = torch.as_tensor(ctx[start:start + chunk])
            x = volume[idx][:, :, window_yx[0], window_yx[1]]
            x, (h, w) = pad_to_multiple(x, self.spec.size_multiple)
            outs.append(self._forward_batched(x)[:, :, :h, :w])
        report(1.0)
        return torch.cat(outs)

    # ---- public --------------------------------------------------------------------------------------------
    def probe_liver_pixels(self, volume_hu: np.ndarray, spacing: tuple[float, float, float]) -> int:
        """Liver pixels (network grid) on the coarse pass's probe slices of a canonical HU volume, computed on its
        own: the same count the coarse pass reports in ``ProbabilityMaps.probe_liver_pixels``, for a volume that was
        not segmented (the mirrored image of the mirrored-header check). Only the probe slices and their
        neighbours are preprocessed."""
        n_z = volume_hu.shape[0]
        ctx = context_indices(self._probe_slices(n_z, spacing[0])[1], n_z, self.spec.context_slices,
                              self.spec.context_stride(spacing[0]))
        needed, position = np.unique(ctx, return_inverse=True)
        pre = self.preprocess(volume_hu[needed], spacing[1:])
        x, (h, w) = pad_to_multiple(pre[torch.as_tensor(position.reshape(ctx.shape))], self.spec.size_multiple)
        return int((self._forward_batched(x)[:, 0, :h, :w] > self.model.thresholds["liver"]).sum())

    def _probe_slices(self, n_z: int, dz: float) -> tuple[int, np.ndarray]:
        """The coarse pass's step (slices) and slices: about every ``coarse_step_mm``."""
        step = max(1, int(round(self.options.coarse_step_mm / dz)))
        return step, np.arange(step // 2, n_z, step)

    def _infer(self, pre: torch.Tensor, dz: float, report: Reporter):
        """Coarse pass (find the liver) then fine pass over the liver's slices: liver from the whole field of view,
        tumor from the crop around the coarse liver (see the module docstring)."""
        n_z, h, w = pre.shape
        z_lo, z_hi, window = 0, n_z, None
        slices_run, probe_pixels = 0, None
        fine_report = report.stage(0.0, 1.0)
        if self.options.roi and n_z > 1:
            step, zc = self._probe_slices(n_z, dz)
            coarse = self._run_slices(pre, zc, dz, report.stage(0.0, 0.25))
            slices_run += len(zc)
            found = coarse[:, 0] > self.model.thresholds["liver"]
            probe_pixels = int(found.sum())
            hit = found.flatten(1).any(1).numpy()
            if hit.any():
                mz = int(math.ceil(self.options.margin_z_mm / dz))
                z_lo = max(0, int(zc[hit].min()) - step - mz)
                z_hi = min(n_z, int(zc[hit].max()) + step + mz + 1)
                ys, xs = np.nonzero(found.any(0).numpy())
                mxy = int(math.ceil(self.options.margin_xy_mm / self.spec.spacing_mm))
                window = (slice(max(0, int(ys.min()) - mxy), min(h, int(ys.max()) + mxy + 1)),
                          slice(max(0, int(xs.min()) - mxy), min(w, int(xs.max()) + mxy + 1)))
                if (window[0].stop - window[0].start, window[1].stop - window[1].start) == (h, w):
                    window = None  # the crop would be the whole slice
            else:
                log.warning("The coarse pass found no liver; searching every slice over the full field of view.")
            fine_report = report.stage(0.25, 1.0)
        z_fine = np.arange(z_lo, z_hi)
        if window is None:
            probs = self._run_slices(pre, z_fine, dz, fine_report)
            return probs, (z_lo, z_hi), slices_run + len(z_fine), probe_pixels
        probs = self._run_slices(pre, z_fine, dz, fine_report.stage(0.0, 0.6))
        crop = self._run_slices(pre, z_fine, dz, fine_report.stage(0.6, 1.0), window)
        probs[:, 1] = 0.0
        probs[:, 1, window[0], window[1]] = crop[:, 1]
        return probs, (z_lo, z_hi), slices_run + 2 * len(z_fine), probe_pixels

    def _paste(self, probs: torch.Tensor, z_range, native_shape, report: Reporter) -> tuple[np.ndarray, np.ndarray]:
        """Put the fine pass's probabilities back on the full (native) grid as uint8, resizing block by block to save
        memory."""
        n_z, n_y, n_x = native_shape
        liver = np.zeros(native_shape, dtype=np.uint8)
        tumor = np.zeros(native_shape, dtype=np.uint8)
        z_lo = z_range[0]
        for s in range(0, len(probs), 32):
            report(s / max(1, len(probs)))
            block = probs[s:s + 32]
            q = (resize_slices(block, (n_y, n_x)).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            liver[z_lo + s:z_lo + s + len(block)] = q[:, 0]
            tumor[z_lo + s:z_lo + s + len(block)] = q[:, 1]
        report(1.0)
        return liver, tumor

    def predict_preprocessed(self, pre: torch.Tensor, dz: float, report: Reporter | None = None,
                             native_shape: tuple[int, int, int] | None = None) -> ProbabilityMaps:
        """Probabilities for an already windowed and resampled (Z, H, W) volume, on the network grid or, with
        ``native_shape``, resized back to that (Z, rows, columns) grid. Training's validation calls this directly."""
        report = report or Reporter()
        self.pixels_run = 0
        probs, z_range, run, probe_pixels = self._infer(pre, dz, report.stage(0.0, 0.9))
        liver, tumor = self._paste(probs, z_range, native_shape or tuple(pre.shape), report.stage(0.9, 1.0))
        return ProbabilityMaps(liver=liver, tumor=tumor, slices_run=run, roi_slices=z_range,
                               probe_liver_pixels=probe_pixels)

    def preprocess(self, volume_hu: np.ndarray, spacing_yx: tuple[float, float], pixel_mm: float | None = None) -> torch.Tensor:
        """Window and resample a canonical HU volume to the network's in-plane spacing (or ``pixel_mm``), 32 slices
        at a time."""
        n_z, n_y, n_x = volume_hu.shape
        work_hw = inplane_shape((n_y, n_x), spacing_yx, pixel_mm or self.spec.spacing_mm)
        pre = torch.empty((n_z, *work_hw), dtype=torch.float32)
        for s in range(0, n_z, 32):
            block = normalize_hu(torch.from_numpy(np.ascontiguousarray(volume_hu[s:s + 32])), self.spec.window)
            pre[s:s + 32] = resize_slices(block[:, None], work_hw)[:, 0]
        return pre

    def predict(self, volume_hu: np.ndarray, spacing: tuple[float, float, float],
                report: Reporter | None = None) -> ProbabilityMaps:
        """Probabilities on the native grid of a canonical (slices, rows, columns) HU volume, spacing (dz, dy, dx) mm;
        with ``tta_scales`` the mean over the model's pixel size and the scaled ones."""
        report = report or Reporter()
        scales = (1.0, *self.options.tta_scales)
        mean = MeanMaps()
        for i, scale in enumerate(scales):
            part = report.stage(i / len(scales), (i + 1) / len(scales))
            pre = self.preprocess(volume_hu, spacing[1:], self.spec.spacing_mm * scale)
            report.check()
            mean.add(self.predict_preprocessed(pre, spacing[0], part, native_shape=tuple(volume_hu.shape)))
            del pre
        return mean.result()


class MeanMaps:
    """The running mean of several probability maps (TTA scales, ensemble members), kept as a uint16 sum so that
    only one map pair is held besides the sum; rounded half up. One map comes back unchanged."""

    def __init__(self) -> None:
        self.first: ProbabilityMaps | None = None
        self.n = self.slices_run = 0
        self.liver = self.tumor = None
        self.z_lo, self.z_hi = math.inf, -math.inf

    def add(self, probs: ProbabilityMaps) -> None:
        if self.first is None:  # summed only once a second map comes (the widening copy costs ~0.2 s on 512^2 x 200)
            self.first = probs
        elif self.liver is None:
            self.liver = self.first.liver.astype(np.uint16) + probs.liver
            self.tumor = self.first.tumor.astype(np.uint16) + probs.tumor
        else:
            self.liver += probs.liver
            self.tumor += probs.tumor
        self.n, self.slices_run = self.n + 1, self.slices_run + probs.slices_run
        self.z_lo, self.z_hi = min(self.z_lo, probs.roi_slices[0]), max(self.z_hi, probs.roi_slices[1])

    def result(self) -> ProbabilityMaps:
        n = self.n
        if n == 1:
            return self.first
        return ProbabilityMaps(liver=((self.liver + n // 2) // n).astype(np.uint8),
                               tumor=((self.tumor + n // 2) // n).astype(np.uint8), slices_run=self.slices_run,
                               roi_slices=(int(self.z_lo), int(self.z_hi)),
                               probe_liver_pixels=self.first.probe_liver_pixels)  # model's own pixel size, first model


class EnsemblePredictor:
    """Several models over the same volume (each with its own preprocessing); their probabilities are averaged."""

    def __init__(self, predictors: list[SlicePredictor]):
        self.predictors = predictors

    @property
    def device(self) -> torch.device:
        return self.predictors[0].device  # every member falls back to the CPU on its own; the first reports

    @property
    def pixels_run(self) -> int:
        return sum(p.pixels_run for p in self.predictors)

    def predict(self, volume_hu: np.ndarray, spacing: tuple[float, float, float],
                report: Reporter | None = None) -> ProbabilityMaps:
        report = report or Reporter()
        mean, n = MeanMaps(), len(self.predictors)
        for i, predictor in enumerate(self.predictors):
            mean.add(predictor.predict(volume_hu, spacing, report.stage(i / n, (i + 1) / n)))
        return mean.result()


class VolumePredictor(SlicePredictor):
    """3D models: the volume is resampled to the model's slice spacing and covered by overlapping patches
    (half-patch stride, overlaps averaged); probabilities are resampled back to the native slices."""

    def _infer(self, pre: torch.Tensor, dz: float, report: Reporter):
        n_z, h, w = pre.shape
        pz, py, px = self.spec.patch_size
        n_iso = max(1, int(round(n_z * dz / self.spec.slice_spacing_mm)))
        vol = resample_slices_z(pre, n_iso)
        shape = vol.shape
        pad = [max(p, s) - s for p, s in zip((pz, py, px), shape)]
        vol = torch.nn.functional.pad(vol, (0, pad[2], 0, pad[1], 0, pad[0]), value=PAD_VALUE)
        acc = torch.zeros((2, *vol.shape))
        count = torch.zeros(vol.shape)

        def starts(n, p):
            step = max(1, p // 2)
            out = list(range(0, n - p + 1, step))
            return out if out[-1] == n - p else out + [n - p]

        windows = [(z, y, x) for z in starts(vol.shape[0], pz) for y in starts(vol.shape[1], py) for x in starts(vol.shape[2], px)]
        bs = max(1, self.options.batch_size // 4)
        for i in range(0, len(windows), bs):
            report(i / len(windows))
            group = windows[i:i + bs]
            batch = torch.stack([vol[z:z + pz, y:y + py, x:x + px] for z, y, x in group])[:, None]
            out = self._forward_batched(batch)
            for (z, y, x), o in zip(group, out):
                acc[:, z:z + pz, y:y + py, x:x + px] += o
                count[z:z + pz, y:y + py, x:x + px] += 1
        report(1.0)
        probs = (acc / count.clamp(min=1))[:, :shape[0], :shape[1], :shape[2]]
        probs = resample_slices_z(probs, n_z)  # (2, Z, h, w)
        return probs.permute(1, 0, 2, 3).contiguous(), (0, n_z), len(windows), None


def make_predictor(model: LoadedModel, device: torch.device, options: InferenceOptions | None = None) -> SlicePredictor:
    """The predictor that fits the model: slice-wise 2D/2.5D or sliding-window 3D."""
    cls = VolumePredictor if model.preprocessing.volumetric else SlicePredictor
    return cls(model, device, options)
