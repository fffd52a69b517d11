"""Stage timings of the whole pipeline on a realistic synthetic abdomen (``liverseg benchmark``)."""
from __future__ import annotations

import resource
import time

import numpy as np
import torch


def synthetic_case(shape=(200, 512, 512), spacing=(2.5, 0.78, 0.78), seed: int = 0,
                   tumors: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A [k, j, i] int16 CT-like phantom in HU and its labelmap: air, body (fat, muscle), spine, a liver-like
    ellipsoid on the patient's right (image left) and optional hypo-dense tumors. LPS-ordered axes."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z = ((np.arange(nz) - nz / 2) * spacing[0])[:, None, None]
    y = ((np.arange(ny) - ny / 2) * spacing[1])[None, :, None]
    x = ((np.arange(nx) - nx / 2) * spacing[2])[None, None, :]
    fov = min(ny * spacing[1], nx * spacing[2]) / 512.0  # scale anatomy to the field of view (~400 mm nominal)
    vol = np.full(shape, -1000, np.int16)
    label = np.zeros(shape, np.uint8)
    body = np.broadcast_to((y / (170 * fov)) ** 2 + (x / (220 * fov)) ** 2 <= 1, shape)
    vol[body] = -80
    vol[np.broadcast_to((y / (155 * fov)) ** 2 + (x / (205 * fov)) ** 2 <= 1, shape)] = 45
    cy, cx = rng.uniform(-15, 15) * fov, -rng.uniform(60, 90) * fov
    liver = (z / (0.3 * nz * spacing[0] + 40)) ** 2 + ((y - cy) / (95 * fov)) ** 2 + ((x - cx) / (110 * fov)) ** 2 <= 1
    vol[liver] = int(rng.uniform(90, 130))
    label[liver] = 1
    zz, yy, xx = np.nonzero(liver)
    for _ in range(tumors):
        i = rng.integers(len(zz))
        r = rng.uniform(8, 20)
        blob = ((z - z.ravel()[zz[i]]) / r) ** 2 + ((y - y.ravel()[yy[i]]) / r) ** 2 + ((x - x.ravel()[xx[i]]) / r) ** 2 <= 1
        blob &= liver
        vol[blob] = int(rng.uniform(20, 50))
        label[blob] = 2
    vol[np.broadcast_to(((y - 120 * fov) / (22 * fov)) ** 2 + (x / (22 * fov)) ** 2 <= 1, shape)] = 500
    vol += rng.normal(0, 12, size=shape).astype(np.int16)
    return vol, label


def phantom_ijk_to_ras(spacing) -> np.ndarray:
    """IJK-to-RAS of :func:`synthetic_case` volumes (i -> left, j -> posterior, k -> superior)."""
    return np.diag([-spacing[2], -spacing[1], spacing[0], 1.0])


def real_ct_at_shape(path, shape) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A real CT resampled (linear) to ``shape`` [k, j, i], keeping its physical extent and orientation."""
    from scipy import ndimage

    from .io import read_image

    image = read_image(path)
    factors = [n / o for n, o in zip(shape, image.array.shape)]
    vol = ndimage.zoom(image.array.astype(np.float32), factors, order=1).astype(np.int16)
    m = image.ijk_to_ras.copy()
    m[:3, :3] = m[:3, :3] / np.array(factors[::-1])  # columns i, j, k scale with the voxel size
    spacing = tuple(float(s) for s in np.linalg.norm(m[:3, :3], axis=0)[::-1])
    return vol, m, spacing


def network_gflops(network: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """Forward GFLOPs of the network for one input of ``shape`` (C, H, W) or (C, D, H, W), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        network(torch.zeros((1, *shape)))
    return counter.get_total_flops() / 1e9


def run_benchmark(shape=(200, 512, 512), device: str = "auto", model=None, repeats: int = 1, input_path=None) -> dict:
    """Stage timings; the volume is a real CT resampled to ``shape`` when ``input_path`` is given, else a phantom."""
    from .pipeline import Segmenter

    if input_path:
        vol, m, spacing = real_ct_at_shape(input_path, shape)
    else:
        spacing = (2.5, 0.78, 0.78)
        vol, _ = synthetic_case(shape, spacing)
        m = phantom_ijk_to_ras(spacing)
    t = time.perf_counter()
    seg = Segmenter(model, device)
    load_s = time.perf_counter() - t
    seg.segment(vol[: min(8, shape[0])], m, require_liver=False)  # warm-up (allocations, kernel selection)
    gpu = torch.cuda.is_available() and str(seg.device).startswith("cuda")
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    best = None
    for _ in range(repeats):
        result = seg.segment(vol, m, require_liver=False)
        if best is None or result.timings["total"] < best.timings["total"]:
            best = result
    inference = best.timings["inference"]
    side = 256  # a 2 mm grid of 256 x 256 pixels covers a 512 mm field of view
    total_gflops, per_input = 0.0, []
    for predictor in getattr(seg.predictor, "predictors", [seg.predictor]):  # an ensemble's members one by one
        spec = predictor.model.preprocessing
        probe = (1, *spec.patch_size) if spec.volumetric else (spec.in_channels, side, side)
        gflops_probe = network_gflops(predictor.model.network.cpu(), probe)
        per_input.append({"input": list(probe), "gflops": round(gflops_probe, 2)})
        total_gflops += gflops_probe / float(np.prod(probe[1:])) * predictor.pixels_run
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "input": str(input_path) if input_path else "synthetic phantom",
        "shape_kji": list(shape), "spacing_mm": [round(v, 3) for v in spacing],
        "roi_slices": [int(v) for v in best.roi_slices], "slices_run": best.slices_run, "device": best.device, "model": best.model,
        "threads": torch.get_num_threads(), "model_load_s": round(load_s, 3),
        "stages_s": {k: round(v, 3) for k, v in best.timings.items()},
        "slices": shape[0], "slices_per_s": round(shape[0] / best.timings["total"], 2),
        "inference_slices_per_s": round(shape[0] / inference, 2),
        "peak_rss_mb": round(peak_rss, 1),
        **({"gpu": torch.cuda.get_device_name(), "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)} if gpu else {}),
        "network_gflops_per_input": per_input[0] if len(per_input) == 1 else per_input,
        "network_gflops_total": round(total_gflops, 3),
        "achieved_gflops_per_s": round(total_gflops / inference, 1),
        "torch": torch.__version__,
    }
