"""Failure-mode analysis of one predicted labelmap against its reference, so weak spots are found by numbers, not
by scrolling through slices: where along the craniocaudal axis the liver is missed (dome / middle / tip), which
lesion sizes are found, and what the false-positive lesions are (their place and density: gallbladder, cysts and
fluid sit at water density, vessels enhance).

Everything works on the canonical grid (slice axis pointing superior), so "dome" means the same for any input
orientation.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from liverseg.labels import LIVER, TUMOR
from liverseg.metrics import MATCH_IOU, dice, reference_lesion_matches
from liverseg.orientation import canonical_transform, to_canonical

REGIONS = ("dome", "middle", "tip")  # upper, middle and lower third of the reference liver's slices
SIZE_BINS_MM = ((0.0, 10.0, "<10 mm"), (10.0, 20.0, "10-20 mm"), (20.0, float("inf"), ">20 mm"))
WATER_HU = (-20.0, 25.0)  # bile, simple cysts, ascites
_FULL = np.ones((3, 3, 3), bool)


def _region_slices(ref_liver: np.ndarray) -> dict[str, np.ndarray]:
    """Canonical slice indices of each third of the reference liver (slice index grows towards the head)."""
    z = np.nonzero(ref_liver.any(axis=(1, 2)))[0]
    if len(z) == 0:
        return {r: np.array([], int) for r in REGIONS}
    thirds = np.array_split(z, 3)
    return {"tip": thirds[0], "middle": thirds[1], "dome": thirds[2]}


def craniocaudal_profile(pred_liver: np.ndarray, ref_liver: np.ndarray, spacing) -> dict:
    """Per-slice liver Dice over the reference liver's slices (canonical grid), pooled Dice per third, and the
    liver predicted on slices above the reference's dome or below its tip (mL).

    Why the last two: an organ next to the liver that the model takes for liver (the heart above the dome, bowel or
    kidney below the tip) lies on slices without reference liver, where no third's Dice sees it."""
    per_slice_ml = pred_liver.sum(axis=(1, 2)) * float(np.prod(spacing)) / 1000
    ref_z = np.nonzero(ref_liver.any(axis=(1, 2)))[0]
    z = np.union1d(ref_z, np.nonzero(per_slice_ml)[0])
    per_slice = {int(k): float(dice(pred_liver[k], ref_liver[k])) for k in z}
    regions = {}
    for name, ks in _region_slices(ref_liver).items():
        regions[name] = float(dice(pred_liver[ks], ref_liver[ks])) if len(ks) else None
    above = float(per_slice_ml[ref_z.max() + 1:].sum()) if len(ref_z) else None
    below = float(per_slice_ml[:ref_z.min()].sum()) if len(ref_z) else None
    return {"per_slice": per_slice, "regions": regions, "above_dome_ml": above, "below_tip_ml": below}


def equivalent_diameter_mm(voxels: int, voxel_mm3: float) -> float:
    """Diameter of the sphere with the lesion's volume."""
    return float(2 * (3 * voxels * voxel_mm3 / (4 * np.pi)) ** (1 / 3))


def detection_by_size(pred_tumor: np.ndarray, ref_tumor: np.ndarray, spacing) -> list[dict]:
    """Reference lesions per size bin of equivalent diameter: how many were touched by a predicted lesion
    ("detected") and how many segmented with IoU > 0.5 ("detected_iou50"; see liverseg.metrics)."""
    voxel_mm3 = float(np.prod(spacing))
    rows = [{"bin": name, "lo": lo, "hi": hi, "lesions": 0, "detected": 0, "detected_iou50": 0}
            for lo, hi, name in SIZE_BINS_MM]
    for _, lesion, iou in reference_lesion_matches(pred_tumor, ref_tumor):
        d = equivalent_diameter_mm(int(lesion.sum()), voxel_mm3)
        row = next(r for r in rows if r["lo"] <= d < r["hi"])
        row["lesions"] += 1
        row["detected"] += int(iou > 0)
        row["detected_iou50"] += int(iou > MATCH_IOU)
    for r in rows:
        r["recall"] = r["detected"] / r["lesions"] if r["lesions"] else None
    return rows


def false_positive_lesions(pred_tumor: np.ndarray, ref_tumor: np.ndarray, ref_liver: np.ndarray,
                           image_hu: np.ndarray, spacing) -> list[dict]:
    """Predicted lesions that touch no reference lesion: volume, where they are and their density."""
    voxel_mm3 = float(np.prod(spacing))
    regions = _region_slices(ref_liver)
    region_of = {int(k): name for name, ks in regions.items() for k in ks}
    liver_hu = float(np.median(image_hu[ref_liver & ~ref_tumor])) if (ref_liver & ~ref_tumor).any() else float("nan")
    edge = ref_liver & ~ndimage.binary_erosion(ref_liver, iterations=2)
    lab, _ = ndimage.label(pred_tumor, _FULL)
    out = []
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        comp = lab[sl] == i
        if np.any(comp & ref_tumor[sl]):
            continue
        values = image_hu[sl][comp].astype(float)
        centre = [int(round(c)) for c in ndimage.center_of_mass(comp)]
        z = centre[0] + sl[0].start
        inside = float(np.mean(ref_liver[sl][comp]))
        mean = float(values.mean())
        if WATER_HU[0] <= mean <= WATER_HU[1]:
            kind = "water density (gallbladder, cyst, fluid?)"
        elif np.isfinite(liver_hu) and mean > liver_hu + 30:
            kind = "enhancing (vessel?)"
        else:
            kind = "soft tissue"
        out.append({
            "volume_ml": float(comp.sum() * voxel_mm3 / 1000), "mean_hu": mean, "std_hu": float(values.std()),
            "liver_median_hu": liver_hu, "slice": int(z), "region": region_of.get(int(z), "outside liver slices"),
            "inside_liver_fraction": inside, "at_liver_edge": bool(np.any(comp & edge[sl])), "kind": kind,
        })
    return sorted(out, key=lambda r: -r["volume_ml"])


def analyse_case(image_hu: np.ndarray, ijk_to_ras: np.ndarray, pred: np.ndarray, ref: np.ndarray,
                 tumor: bool = True) -> dict:
    """All of the above for one case given as [k, j, i] arrays with their geometry."""
    t = canonical_transform(image_hu.shape, ijk_to_ras)
    img, p, r = (to_canonical(a, t) for a in (image_hu, pred, ref))
    out = {"craniocaudal": craniocaudal_profile(p >= LIVER, r >= LIVER, t.spacing)}
    if tumor:
        out["detection_by_size"] = detection_by_size(p == TUMOR, r == TUMOR, t.spacing)
        out["false_positive_lesions"] = false_positive_lesions(p == TUMOR, r == TUMOR, r >= LIVER, img, t.spacing)
    return out


def plot_profiles(cases: dict[str, dict], path) -> None:
    """Per-slice liver Dice along the craniocaudal axis, one line per case (x: 0 = lowest liver slice)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    for cid, a in cases.items():
        per = a["craniocaudal"]["per_slice"]
        if not per:
            continue
        ks = sorted(per)
        x = (np.array(ks) - ks[0]) / max(1, ks[-1] - ks[0])
        ax.plot(x, [per[k] for k in ks], marker=".", label=cid)
    ax.set_xlabel("position in the liver (0 = inferior tip, 1 = dome)")
    ax.set_ylabel("liver Dice per slice")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report_lines(cases: dict[str, dict]) -> list[str]:
    """Markdown sections of the failure-mode analysis."""
    lines = ["## Failure modes", "", "![per-slice liver Dice](profile.png)", "",
             "| case | dome Dice | middle Dice | tip Dice | liver called above the dome / below the tip (mL) |",
             "|---|---|---|---|---|"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    ml = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    for cid, a in cases.items():
        cc = a["craniocaudal"]
        reg = cc["regions"]
        lines.append(f"| {cid} | {fmt(reg['dome'])} | {fmt(reg['middle'])} | {fmt(reg['tip'])} | "
                     f"{ml(cc['above_dome_ml'])} / {ml(cc['below_tip_ml'])} |")
    with_tumor = {c: a for c, a in cases.items() if "detection_by_size" in a}
    if with_tumor:
        lines += ["", "Lesions found by size (equivalent-sphere diameter); found = touched by a predicted lesion / "
                  "segmented with IoU > 0.5:", "",
                  "| case | " + " | ".join(b[2] for b in SIZE_BINS_MM) + " |", "|---|" + "---|" * len(SIZE_BINS_MM)]
        for cid, a in with_tumor.items():
            lines.append(f"| {cid} | " + " | ".join(f"{r['detected']} / {r['detected_iou50']} of {r['lesions']}" for r in a["detection_by_size"]) + " |")
        lines += ["", "False-positive lesions (no overlap with a reference lesion), largest first:", "",
                  "| case | volume mL | mean HU (liver) | region | inside liver | at liver edge | likely |",
                  "|---|---|---|---|---|---|---|"]
        for cid, a in with_tumor.items():
            for f in a["false_positive_lesions"][:10]:
                lines.append(f"| {cid} | {f['volume_ml']:.2f} | {f['mean_hu']:.0f} ({f['liver_median_hu']:.0f}) | "
                             f"{f['region']} | {f['inside_liver_fraction']:.0%} | {'yes' if f['at_liver_edge'] else 'no'} | "
                             f"{f['kind']} |")
    return lines
