import numpy as np
import pytest
import torch

from liverseg_train.augment import AugmentConfig, geometric, intensity
from liverseg_train.splits import holdout_split, kfold_splits, leave_one_out_splits
from liverseg_train.synthetic_tumors import TumorSynthesisConfig, insert_tumors


def _patients():
    # 12 patients, some with two scans (cases) each.
    d = {f"p{i}_a": f"p{i}" for i in range(12)}
    d.update({f"p{i}_b": f"p{i}" for i in range(0, 12, 3)})
    return d


def _disjoint_by_patient(split, patients):
    sides = [{patients[c] for c in split[k]} for k in ("train", "val", "test")]
    return all(not (a & b) for i, a in enumerate(sides) for b in sides[i + 1:])


def test_holdout_split_is_by_patient_seeded_and_complete():
    p = _patients()
    s = holdout_split(p, seed=1)
    assert _disjoint_by_patient(s, p)
    assert sorted(s["train"] + s["val"] + s["test"]) == sorted(p)
    assert s == holdout_split(p, seed=1) and s != holdout_split(p, seed=2)
    assert len({p[c] for c in s["train"]}) == 8  # 70 % of 12 patients (val 2, test 2)


def test_kfold_and_leave_one_out_are_by_patient():
    p = _patients()
    folds = kfold_splits(p, k=4)
    assert all(_disjoint_by_patient(f, p) for f in folds)
    assert sorted(c for f in folds for c in f["val"]) == sorted(p)
    loo = leave_one_out_splits(p)
    assert len(loo) == 12 and all(len({p[c] for c in s["test"]}) == 1 and _disjoint_by_patient(s, p) for s in loo)


def test_geometric_augmentation_keeps_image_and_label_aligned():
    gen = torch.Generator().manual_seed(0)
    label = torch.zeros(4, 64, 64, dtype=torch.long)
    label[:, 20:40, 10:30] = 1
    label[:, 25:30, 15:20] = 2
    image = torch.stack([label.float() / 2] * 3, dim=1)  # image encodes the label
    img2, lab2 = geometric(image, label, AugmentConfig(rotation_deg=30, elastic_probability=1.0), gen)
    assert not torch.equal(lab2, label)  # something moved
    recovered = torch.round(img2[:, 1] * 2).long()
    agree = (recovered == lab2).float().mean()
    assert agree > 0.97  # only interpolated edge pixels may differ
    # Without flips, the object stays on the same side (the liver is on the patient's right).
    assert lab2[:, :, :32].sum() > lab2[:, :, 32:].sum()


def test_intensity_augmentation_stays_in_range():
    gen = torch.Generator().manual_seed(0)
    out = intensity(torch.rand(8, 3, 32, 32), AugmentConfig(), gen)
    assert out.min() >= 0 and out.max() <= 1


def test_synthetic_tumors_stay_inside_the_liver_and_change_the_image():
    rng = np.random.default_rng(0)
    stack = np.full((3, 80, 80), 0.3, np.float32)
    label = np.zeros((3, 80, 80), np.uint8)
    label[:, 20:60, 15:65] = 1
    for seed in range(20):
        hypo = seed % 2 == 0
        cfg = TumorSynthesisConfig(radius_mm=(4, 15), hypo_probability=1.0 if hypo else 0.0)
        img, lab = insert_tumors(stack, label, 2.0, 2.5, np.random.default_rng(seed), cfg)
        tumor = lab == 2
        assert not (tumor & (label == 0)).any()
        assert np.all(img[label == 0] == stack[label == 0])  # nothing changes outside the liver
        if tumor[1].any():  # lesions are darker (hypo) or brighter (hyper) than liver by more than 5 HU
            shift = float(img[1][tumor[1]].mean()) - 0.3
            assert (shift < -0.01) if hypo else (shift > 0.01), (seed, shift)
    img, lab = insert_tumors(stack, np.zeros_like(label), 2.0, 2.5, rng)
    assert not (lab == 2).any()  # no liver, no lesion
