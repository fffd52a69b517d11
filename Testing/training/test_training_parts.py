import numpy as np
import pytest
import torch
from scipy import ndimage

from liverseg_train.augment import AugmentConfig, geometric, intensity, reconstruction_kernel, tissue_contrast
from liverseg_train.splits import holdout_split, kfold_splits, leave_one_out_splits
from liverseg_train.synthetic_tumors import TumorSynthesisConfig, insert_look_alikes, insert_tumors, push_aside


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
    with pytest.raises(ValueError, match="at least 13 patients"):
        kfold_splits(p, k=13)  # 12 patients: never fewer folds than asked, silently
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


def _liver_stack(value: float = 0.4):
    stack = np.full((3, 80, 80), 0.1, np.float32)
    label = np.zeros((3, 80, 80), np.uint8)
    label[:, 20:60, 15:65] = 1
    stack[label == 1] = value
    return stack, label


def test_lesion_spectrum_covers_large_rim_edge_and_confluent_lesions():
    stack, label = _liver_stack()
    cfg = TumorSynthesisConfig(radius_mm=(20, 40), hypo_probability=1.0, iso_probability=0.0, rim_probability=1.0,
                               edge_probability=1.0, max_lesions=1)
    img, lab = insert_tumors(stack, label, 2.0, 2.5, np.random.default_rng(3), cfg)
    tumor = lab[1] == 2
    assert tumor.sum() * 4 > 400  # a large lesion (> 400 mm² in this slice)
    edge = np.zeros_like(tumor)
    edge[20, 15:65] = edge[59, 15:65] = edge[20:60, 15] = edge[20:60, 64] = True
    assert (tumor & edge).any()  # centred on the liver's edge: subcapsular
    from scipy import ndimage
    core = ndimage.binary_erosion(tumor, iterations=4)
    rim = tumor & ~ndimage.binary_erosion(tumor, iterations=2)
    assert img[1][rim].mean() > img[1][core].mean() + 0.02
    confluent = TumorSynthesisConfig(radius_mm=(4, 6), confluent_probability=1.0, edge_probability=0.0, max_lesions=3)
    labels = [ndimage.label(insert_tumors(stack, label, 2.0, 2.5, np.random.default_rng(s), confluent)[1][1] == 2)[1]
              for s in range(10)]
    assert min(labels) >= 1 and np.mean(labels) < 2  # clustered lesions merge into one or two blobs


def test_mass_effect_pushes_tissue_outwards_and_moves_labels_with_the_image():
    stack = np.zeros((3, 100, 100), np.float32)
    label = np.zeros((3, 100, 100), np.uint8)
    label[:, :, 62:] = 1  # a liver edge (and a vessel on it) 12 px = 24 mm right of the centre at (y, x) = (50, 50)
    stack[label == 1] = 0.5
    stack[:, :, 62:64] = 1.0
    centre, radius = (0.0, 100.0, 100.0), 20.0  # mm
    img, lab = push_aside(stack, label, centre, radius, 0.5, 2.0, 2.5)
    edge_at = lambda a, row: int(np.argmax(a[1, row] >= 1))  # first liver / vessel column on a row
    assert edge_at(lab, 50) >= 65  # on the centre's row the capsule moved out by 3 pixels (6 mm; 5.5 mm expected)
    assert abs(int(np.argmax(img[1, 50])) - edge_at(lab, 50)) <= 1  # the vessel moved with it: image and label agree
    assert edge_at(lab, 50) > edge_at(lab, 20) >= 62  # the push fades with the distance from the lesion
    assert np.array_equal(lab[:, :5], label[:, :5]) and np.array_equal(img[:, :5], stack[:, :5])  # far away: unchanged
    assert (np.diff(lab[1, 50].astype(int)) >= 0).all()  # no folding: the edge stays a single step
    same_img, same_lab = push_aside(stack, label, centre, radius, 0.0, 2.0, 2.5)
    assert np.array_equal(same_img, stack) and np.array_equal(same_lab, label)


def test_mass_effect_bulges_the_liver_only_when_asked():
    stack, label = _liver_stack()
    grown = []
    for prob in (0.0, 1.0):
        cfg = TumorSynthesisConfig(radius_mm=(15, 25), edge_probability=1.0, max_lesions=1, mass_effect_probability=prob)
        areas = [int((insert_tumors(stack, label, 2.0, 2.5, np.random.default_rng(s), cfg)[1][1] >= 1).sum())
                 for s in range(6)]
        grown.append(np.array(areas) - int((label[1] >= 1).sum()))
    assert (grown[0] == 0).all()  # without mass effect the lesions stay within the liver's outline
    assert (grown[1] > 0).mean() >= 0.5 and grown[1].max() > 20  # with it, subcapsular lesions bulge the contour
    with pytest.raises(ValueError, match="mass_effect_strength"):
        TumorSynthesisConfig(mass_effect_strength=(0.5, 1.2))


def test_exophytic_lesions_bulge_out_of_the_liver_only_when_asked():
    stack, label = _liver_stack()
    outside = []
    for prob in (0.0, 1.0):
        cfg = TumorSynthesisConfig(radius_mm=(10, 20), edge_probability=1.0, max_lesions=1, exophytic_probability=prob,
                                   hypo_probability=1.0, iso_probability=0.0, rim_probability=0.0)
        runs = [insert_tumors(stack, label, 2.0, 2.5, np.random.default_rng(s), cfg) for s in range(6)]
        outside.append([int(((lab == 2) & (label == 0)).sum()) for _, lab in runs])
        if prob:
            img, lab = next(r for r in runs if ((r[1][1] == 2) & (label[1] == 0)).sum() > 20)
            bulge = ndimage.binary_erosion((lab[1] == 2) & (label[1] == 0), iterations=2)
            assert float(img[1][bulge].mean()) < 0.4 - 0.03  # lesion density (hypo against the liver), not the fat
            assert float(img[1][bulge].mean()) > 0.1 + 0.1
    assert max(outside[0]) == 0  # clipped to the liver: the 2.0.0 recipe
    assert np.mean([n > 20 for n in outside[1]]) >= 0.5  # most bulge beyond the healthy outline, labelled tumor
    same = TumorSynthesisConfig(radius_mm=(10, 20), edge_probability=1.0, max_lesions=1)
    a = insert_tumors(stack, label, 2.0, 2.5, np.random.default_rng(4), same)
    b = insert_tumors(stack, label, 2.0, 2.5, np.random.default_rng(4), TumorSynthesisConfig(
        radius_mm=(10, 20), edge_probability=1.0, max_lesions=1, exophytic_probability=0.0))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])  # off: the sample stream is unchanged


def test_grain_texture_keeps_the_scans_noise_but_no_vessel_runs_through_a_lesion():
    """A liver with scanner noise (0.02, 10 HU) and a bright vessel (+0.15) under a large central lesion: "blend"
    (2.0.0) keeps 30 % of the vessel inside the lesion, "grain" removes it and keeps the noise at its level."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    stack, label = _liver_stack()
    stack[label == 1] += rng.normal(0, 0.02, (label == 1).sum()).astype(np.float32)
    stack[:, 36:44, 15:65] += 0.15  # a vessel across the liver, 8 px = 16 mm wide
    seen = {}
    for texture in ("blend", "grain"):
        cfg = TumorSynthesisConfig(radius_mm=(30, 30), edge_probability=0.0, max_lesions=1, hypo_probability=1.0,
                                   iso_probability=0.0, rim_probability=0.0, texture_hu=(0.1, 0.1),
                                   margin_blur_mm=(0.5, 0.5), lesion_texture=texture)
        img, lab = insert_tumors(stack, label, 2.0, 2.5, np.random.default_rng(5), cfg)
        core = ndimage.binary_erosion(lab[1] == 2, iterations=3)
        vessel_rows, far_rows = np.zeros_like(core), np.ones_like(core)
        vessel_rows[38:42] = True  # the vessel's middle
        far_rows[32:48] = False  # clear of the vessel and its edges
        inside, outside = img[1][core & vessel_rows], img[1][core & far_rows]
        seen[texture] = (inside.mean() - outside.mean(), outside.std())
    assert seen["blend"][0] > 0.03  # 30 % of the vessel's 0.15 shows through
    assert abs(seen["grain"][0]) < 0.01  # the vessel is gone from the lesion
    assert 0.012 < seen["grain"][1] < 0.03 and seen["blend"][1] < 0.01  # grain keeps the noise (blend: 30 % of it)
    with pytest.raises(ValueError, match="lesion_texture"):
        TumorSynthesisConfig(lesion_texture="paint")


def test_look_alikes_are_water_density_and_never_tumor():
    stack, label = _liver_stack(0.33)  # liver at about 65 HU in the default window
    cfg = TumorSynthesisConfig(cyst_probability=1.0, gallbladder_probability=0.0)
    water = ((-5 + 100) / 500, (20 + 100) / 500)
    for seed in range(5):
        img, lab = insert_look_alikes(stack, label, 2.0, 2.5, np.random.default_rng(seed), cfg)
        assert np.array_equal(lab, label)  # cysts stay liver
        changed = np.abs(img - stack) > 0.05
        assert changed.any() and water[0] - 0.05 < img[changed].mean() < water[1] + 0.05
    cfg = TumorSynthesisConfig(cyst_probability=0.0, gallbladder_probability=1.0)
    img, lab = insert_look_alikes(stack, label, 2.0, 2.5, np.random.default_rng(1), cfg)
    carved = (label == 1) & (lab == 0)
    assert carved.any() and not (lab == 2).any()  # the pouch is background, never tumor
    assert water[0] - 0.05 < img[carved].mean() < water[1] + 0.05
    # The pouch follows bile_hu, not the cysts' range (real gallbladders read 27-34 HU in the project's cases).
    cfg = TumorSynthesisConfig(cyst_probability=0.0, gallbladder_probability=1.0, bile_hu=(38.0, 40.0))
    dense, same = insert_look_alikes(stack, label, 2.0, 2.5, np.random.default_rng(1), cfg)
    assert np.array_equal(same, lab)  # same draw, same pouch: only its density changed
    inner = ndimage.binary_erosion(carved, structure=np.ones((1, 5, 5), bool))
    assert inner.any() and abs(float(np.median(dense[inner])) - (39 + 100) / 500) < 0.02


def test_tissue_contrast_is_monotone_and_kernels_blur_or_sharpen():
    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 200).repeat(4, 1, 1, 1)
    out = tissue_contrast(ramp, 0.1, gen)
    assert (out.diff(dim=-1) >= -1e-6).all() and not torch.allclose(out, ramp)
    edge = torch.zeros(64, 1, 16, 16)
    edge[..., 8:] = 0.5
    out = reconstruction_kernel(edge, 1.0, gen)
    soft = out[:, 0, 8, 7] > 0.01  # blurred across the edge
    sharp = out[:, 0, 8, 8] > 0.5 + 1e-3  # overshoot at the edge
    assert soft.any() and sharp.any() and not (soft & sharp).any()


def test_sampler_reaches_liver_ends_thick_slices_and_scan_edges():
    from liverseg.preprocessing import PreprocessingSpec
    from liverseg_train.train import SliceSampler, TrainConfig

    image = np.tile(np.arange(40, dtype=np.float16)[:, None, None] / 40, (1, 32, 32))  # a slice's value is its index
    label = np.zeros((40, 32, 32), np.uint8)
    label[10:30, 8:24, 8:24] = 1
    quiet = TumorSynthesisConfig(probability=0.0, cyst_probability=0.0, gallbladder_probability=0.0)
    cfg = TrainConfig(liver_slice_fraction=1.0, liver_end_fraction=1.0, thick_slice_probability=0.0,
                      scan_edge_probability=0.0, bbox_crop_probability=0.0, crop=32, tumors=quiet)
    sampler = SliceSampler({"c": {"image": image, "label": label, "slice_spacing": 2.0}}, ["c"],
                           PreprocessingSpec(), cfg, seed=0)
    centres = {int(round(sampler._sample()[0][1, 0, 0] * 40)) for _ in range(50)}
    assert centres <= {10, 11, 12, 27, 28, 29} and min(centres) <= 12 and max(centres) >= 27  # dome and tip

    sampler.cfg = TrainConfig(thick_slice_probability=1.0, max_slice_spacing_mm=6.0, scan_edge_probability=0.0)
    gaps = set()
    for _ in range(60):
        stack, _, spacing = sampler._context_stack(sampler.arrays["c"], 20)
        gap = round(float(stack[2, 0, 0] - stack[1, 0, 0]) * 40, 2)
        gaps.add(gap)
        assert spacing == 2.0 * gap
    assert gaps == {1.0, 2.0, 3.0}  # neighbours 1, 2 and 3 slices away (2, 4 and 6 mm)

    sampler.cfg = TrainConfig(scan_edge_probability=1.0, thick_slice_probability=0.0)
    stack, labels, _ = sampler._context_stack(sampler.arrays["c"], 20)
    assert np.array_equal(stack[0], stack[1]) != np.array_equal(stack[2], stack[1])  # exactly one side repeats


def test_thin_slices_take_neighbours_about_2_mm_apart_in_training_and_inference():
    from liverseg.preprocessing import PreprocessingSpec, context_indices
    from liverseg_train.train import SliceSampler, TrainConfig

    spec = PreprocessingSpec(context_spacing_mm=2.0)
    assert [spec.context_stride(dz) for dz in (0.625, 1.0, 2.0, 5.0)] == [3, 2, 1, 1]
    assert PreprocessingSpec().context_stride(0.625) == 1  # older cards: direct neighbours, as they were trained
    assert context_indices(np.array([0, 10]), 12, 1, 3).tolist() == [[0, 0, 3], [7, 10, 11]]
    image = np.tile(np.arange(40, dtype=np.float16)[:, None, None] / 40, (1, 32, 32))
    label = np.ones((40, 32, 32), np.uint8)
    sampler = SliceSampler({"c": {"image": image, "label": label, "slice_spacing": 0.7}}, ["c"], spec,
                           TrainConfig(thick_slice_probability=0.0, scan_edge_probability=0.0), seed=0)
    stack, _, spacing = sampler._context_stack(sampler.arrays["c"], 20)
    assert [round(float(v) * 40) for v in stack[:, 0, 0]] == [17, 20, 23] and spacing == pytest.approx(2.1)


def test_weight_average_follows_the_ramped_exponential_average_and_leaves_the_network_alone():
    from liverseg_train.train import WeightAverage

    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    average = WeightAverage(net, decay=0.5)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0], start=1):
        with torch.no_grad():
            net.weight.fill_(value)
        average.update(net)
        d = min(0.5, (1 + n) / (10 + n))  # ramp: 2/11, 3/12, 4/13, then 0.5
        expected = d * expected + (1 - d) * value
        assert average.network.weight.item() == pytest.approx(expected)
    assert net.weight.item() == 4.0 and net.weight.requires_grad
    assert not average.network.weight.requires_grad
    restored = WeightAverage(net, decay=0.5)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 4 and restored.network.weight.item() == pytest.approx(expected)


def test_enhancement_moves_soft_tissue_only_and_keeps_tissue_order():
    from liverseg_train.augment import enhancement

    window = (-100.0, 400.0)
    hu = torch.tensor([-100.0, -80.0, 20.0, 50.0, 143.0, 180.0, 300.0, 400.0])
    image = ((hu - window[0]) / 500).reshape(1, 1, 1, -1).repeat(2, 1, 1, 1)
    cfg = AugmentConfig(enhancement_hu=(60.0, 60.0), enhancement_probability=1.0, window=window)
    out = enhancement(image, cfg, torch.Generator().manual_seed(0)) * 500 + window[0]
    expected = torch.tensor([-100.0, -80.0, 80.0, 110.0, 203.0, 240.0, 300.0, 400.0])  # fat, bone, air stay
    assert torch.allclose(out[0].flatten(), expected, atol=1e-3) and torch.allclose(out[1].flatten(), expected, atol=1e-3)
    ramp = torch.linspace(0, 1, 501).reshape(1, 1, 1, -1).repeat(64, 1, 1, 1)
    for shift in ((-79.0, -79.0), (119.0, 119.0), (-60.0, 90.0)):
        cfg = AugmentConfig(enhancement_hu=shift, enhancement_probability=0.5, window=window)
        moved = enhancement(ramp, cfg, torch.Generator().manual_seed(1))
        assert (moved.diff(dim=-1) >= 0).all(), shift  # monotone: tissue order kept
    changed = (enhancement(ramp, cfg, torch.Generator().manual_seed(1)) != ramp).flatten(1).any(1)
    assert 0.2 < changed.float().mean() < 0.8  # about half of the samples
    assert torch.equal(enhancement(ramp, AugmentConfig(), torch.Generator()), ramp)  # off by default
    with pytest.raises(ValueError, match="tissue order"):
        enhancement(ramp, AugmentConfig(enhancement_hu=(-90.0, 0.0), window=window), torch.Generator())


@pytest.mark.parametrize("window", [(-100.0, 400.0), (-200.0, 800.0)])
def test_window_jitter_is_in_hounsfield_units_of_the_models_window(window):
    """window_jitter_hu shifts the image by at most that many HU whatever the model's window (it assumed a 500 HU
    wide window before: a 1000 HU model got twice the jitter)."""
    cfg = AugmentConfig(brightness=0.0, contrast=(1.0, 1.0), gamma=(1.0, 1.0), noise_std=0.0, low_dose_probability=0.0,
                        tissue_contrast=0.0, kernel_probability=0.0, window_jitter_hu=20.0, window=window)
    image = torch.full((256, 3, 8, 8), 0.5)
    shift_hu = (intensity(image, cfg, torch.Generator().manual_seed(0)) - 0.5) * (window[1] - window[0])
    assert shift_hu.abs().max() <= 20.0 + 1e-3 and shift_hu.abs().max() > 15.0


def test_five_slice_context_stacks_the_same_neighbours_in_training_and_inference(tmp_path):
    """``prepare --context 2`` models: the sampler and the engine's predictor feed the network the same 5 slices in
    the same order (a mismatch would not fail anywhere else: the network would just see scrambled context)."""
    from liverseg.inference import InferenceOptions, make_predictor
    from liverseg.modelfile import load_model, make_card, save_model
    from liverseg.networks import build_network
    from liverseg.preprocessing import PreprocessingSpec
    from liverseg_train.train import SliceSampler, TrainConfig

    spec = PreprocessingSpec(spacing_mm=4.0, context_slices=2, size_multiple=4, context_spacing_mm=2.0)
    image = np.tile(np.arange(40, dtype=np.float16)[:, None, None] / 40, (1, 32, 32))  # a slice's value is its index
    sampler = SliceSampler({"c": {"image": image, "label": np.ones((40, 32, 32), np.uint8), "slice_spacing": 0.7}},
                           ["c"], spec, TrainConfig(thick_slice_probability=0.0, scan_edge_probability=0.0), seed=0)
    stack, _, _ = sampler._context_stack(sampler.arrays["c"], 20)
    trained = [round(float(v) * 40) for v in stack[:, 0, 0]]

    params = {"in_channels": 5, "out_channels": 2, "base_channels": 4, "depth": 2, "dropout": 0.0}
    card = make_card(name="ctx2", version="0", architecture="unet", network=params, preprocessing=spec)
    model = load_model(save_model(tmp_path / "ctx2.safetensors", build_network("unet", params), card))
    predictor = make_predictor(model, torch.device("cpu"), InferenceOptions(roi=False))
    seen = []
    forward = predictor._forward_batched
    predictor._forward_batched = lambda x: (seen.append(x.clone()), forward(x))[1]
    predictor.predict_preprocessed(torch.from_numpy(image.astype(np.float32)), dz=0.7)
    inferred = [round(float(v) * 40) for v in torch.cat(seen)[20, :, 0, 0]]
    assert trained == inferred == [14, 17, 20, 23, 26]
    assert [round(float(v) * 40) for v in torch.cat(seen)[1, :, 0, 0]] == [0, 0, 1, 4, 7]  # clamped at the first slice


def test_tumor_recall_weight_is_dice_at_one_half_and_makes_missed_tumor_cost_more():
    """0.5 is the plain soft Dice + BCE of the 2.0.0 recipe (same value); 0.7 makes a prediction that misses a quarter
    of the tumor cost clearly more than one that adds as much false tumor; outside (0, 1) it is refused."""
    import torch.nn.functional as F

    from liverseg_train.train import TrainConfig, dice_bce_loss

    target = torch.zeros(2, 2, 16, 16)
    target[:, 0, 2:14, 2:14] = 1
    target[:, 1, 4:12, 4:12] = 1
    logits = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(0)) * 3
    prob = torch.sigmoid(logits)
    inter, denom = (prob * target).sum(dim=(0, 2, 3)), (prob + target).sum(dim=(0, 2, 3))
    dice = F.binary_cross_entropy_with_logits(logits, target) + (1 - (2 * inter + 1) / (denom + 1)).mean()
    assert dice_bce_loss(logits, target) == dice  # bit for bit: the 2.0.0 recipe's training is unchanged

    def scored(tumor: torch.Tensor, weight: float) -> float:
        logits = (target * 2 - 1) * 20
        logits[:, 1] = (tumor * 2 - 1) * 20
        return float(dice_bce_loss(logits, target, weight))
    missing, extra = target[:, 1].clone(), target[:, 1].clone()
    missing[:, 4:6, 4:12] = 0  # a quarter of the tumor missed
    extra[:, 12:14, 4:12] = 1  # as much false tumor
    gap = {w: scored(missing, w) - scored(extra, w) for w in (0.5, 0.7)}  # Dice itself favours the larger tumor a little
    assert gap[0.7] > gap[0.5] + 0.03 and gap[0.5] > 0
    with pytest.raises(ValueError, match="tumor_recall_weight"):
        TrainConfig(tumor_recall_weight=1.0)
