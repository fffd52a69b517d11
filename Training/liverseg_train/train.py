"""The training loop: 2.5D slices + synthetic tumors + augmentation, Dice + BCE, AdamW, cosine schedule,
checkpoints every epoch (resume with the same command), early stopping on validation Dice per case,
CSV + TensorBoard logs, and DistributedDataParallel under ``torchrun``.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from liverseg.console import ProgressBar
from liverseg.inference import InferenceOptions, make_predictor
from liverseg.modelfile import LoadedModel, load_model, make_card, save_model
from liverseg.networks import VOLUMETRIC, build_network, count_parameters
from liverseg.preprocessing import PreprocessingSpec, context_indices, resample_slices_z

from .augment import AugmentConfig, geometric, intensity
from .prepare import load_prepared
from .synthetic_tumors import TumorSynthesisConfig, insert_look_alikes, insert_tumors

log = logging.getLogger("liverseg.train")
REPLAY_PREFIX = "replay:"  # case ids of the replay folder, so that they never clash with the user's


@dataclass
class TrainConfig:
    data: str = "prepared"  # folder written by 'prepare'
    output: str = "runs/default"
    name: str = "liver-resunet"
    architecture: str = "resunet"
    base_channels: int = 16
    depth: int = 4
    dropout: float = 0.1
    train_cases: list[str] = field(default_factory=list)  # empty: every case not in val_cases/test_cases
    val_cases: list[str] = field(default_factory=list)
    test_cases: list[str] = field(default_factory=list)  # never used during training
    epochs: int = 60
    samples_per_epoch: int = 256
    batch_size: int = 8
    crop: int = 160
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    liver_slice_fraction: float = 0.8  # share of samples drawn from slices that show liver
    bbox_crop_probability: float = 0.3  # mimic volumes cropped around the liver: outside a box becomes air
    bbox_crop_margin_mm: tuple[float, float] = (0.0, 30.0)
    # Craniocaudal coverage: what 4 development scans under-represent (thin dome and tip slices, thick slices,
    # partial scans whose first or last slice cuts through the liver).
    liver_end_fraction: float = 0.3  # share of liver samples drawn from the top/bottom 15 % of the liver's slices
    thick_slice_probability: float = 0.2  # mimic a coarser slice spacing (neighbours further apart, partial volume)
    max_slice_spacing_mm: float = 6.0  # ... up to this spacing
    scan_edge_probability: float = 0.1  # the sample sits on the first/last slice of a scan: one side's context repeats
    patience: int = 15  # early stopping (epochs without a better validation Dice); 0 disables
    validate_every: int = 2
    seed: int = 0
    threads: int = 0  # 0: torch default
    amp: bool = True  # mixed precision on CUDA
    patch_size: tuple[int, int, int] = (32, 96, 96)  # 3D architectures only: training patch (z, y, x)
    slice_spacing_mm: float = 3.0  # 3D architectures only: slices are resampled to this spacing
    context_spacing_mm: float = 2.0  # 2.5D: neighbours at least about this far apart (thin-slice scans)
    tumors: TumorSynthesisConfig = field(default_factory=TumorSynthesisConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    time_limit_minutes: float = 0.0  # stop cleanly (checkpoint saved) after this long; resume later. 0: none
    # Plan the run to fit a wall-clock budget: after the warm-up epochs the epochs that fit are computed from the
    # measured epoch time (at most ``epochs``) and the cosine schedule ends there. For leases of fixed length
    # (a GPU for N minutes), where an epoch count chosen in advance would end mid-schedule or waste the lease. 0: none
    time_budget_minutes: float = 0.0
    loader_workers: int = 0  # processes that draw and augment samples while the network trains (0: in-line)
    # Exponential moving average of the weights (about the last 1 / (1 - ema_decay) steps): validated and saved
    # instead of the latest weights, which move from step to step. 0: off
    ema_decay: float = 0.0
    # Weight of missed tumor in the tumor channel's overlap loss (Tversky; false tumor weighs 1 - this). 0.5: Dice
    tumor_recall_weight: float = 0.5
    version: str = "0.1.0"
    # Fine-tuning (see finetune.py): start from this model file's weights instead of random ones, and mix in the
    # cases of a second prepared folder ("replay" of the original training distribution, so that a model tuned on a
    # few user cases does not forget) for this share of the samples.
    init_from: str = ""
    replay_data: str = ""
    replay_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.tumor_recall_weight < 1.0:
            raise ValueError(f"tumor_recall_weight must lie between 0 and 1 (0.5: Dice), not {self.tumor_recall_weight}.")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        tumors = TumorSynthesisConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("tumors", {}).items()})
        augment = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("augment", {}).items()})
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k not in ("train_cases", "val_cases", "test_cases")} | {
            k: list(d[k]) for k in ("train_cases", "val_cases", "test_cases") if k in d}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"Unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(tumors=tumors, augment=augment, **d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- data ----------------------------------------------------------------------------------------------------
class SliceSampler:
    """Draws 2.5D training samples (context stack + centre label), with synthetic tumors, then batches them."""

    def __init__(self, arrays: dict[str, dict], cases: list[str], spec: PreprocessingSpec, cfg: TrainConfig, seed: int):
        self.arrays = {c: arrays[c] for c in cases}
        self.cases = list(cases)
        self.spec, self.cfg = spec, cfg
        self.tumor_cfg = dataclasses.replace(cfg.tumors, window=tuple(spec.window))
        self.augment_cfg = dataclasses.replace(cfg.augment, window=tuple(spec.window))
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.liver_slices = {c: np.nonzero((a["label"] >= 1).any(axis=(1, 2)))[0] for c, a in self.arrays.items()}
        self.liver_boxes = {}
        for c, a in self.arrays.items():
            ys, xs = np.nonzero((a["label"] >= 1).any(axis=0))
            if len(ys):
                self.liver_boxes[c] = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
        sizes = np.array([a["image"].shape[0] for a in self.arrays.values()], float)
        p = np.sqrt(sizes)  # thin slabs still get seen, big cases do not dominate
        replay = np.array([c.startswith(REPLAY_PREFIX) for c in self.cases])
        if replay.any() and not replay.all():  # the replay cases together get replay_fraction of the samples
            p = np.where(replay, cfg.replay_fraction * p / p[replay].sum(), (1 - cfg.replay_fraction) * p / p[~replay].sum())
        self.case_p = p / p.sum()

    def _sample(self) -> tuple[np.ndarray, np.ndarray]:
        cid = self.cases[self.rng.choice(len(self.cases), p=self.case_p)]
        a = self.arrays[cid]
        n_z = a["image"].shape[0]
        liver_z = self.liver_slices[cid]
        if len(liver_z) and self.rng.random() < self.cfg.liver_slice_fraction:
            if self.rng.random() < self.cfg.liver_end_fraction:  # dome or inferior tip
                k = max(1, int(round(0.15 * len(liver_z))))
                z = int(self.rng.choice(np.concatenate([liver_z[:k], liver_z[-k:]])))
            else:
                z = int(self.rng.choice(liver_z))
        else:
            z = int(self.rng.integers(n_z))
        stack, labels, slice_spacing = self._context_stack(a, z)
        if cid in self.liver_boxes and self.rng.random() < self.cfg.bbox_crop_probability:
            stack, labels = self._bbox_crop(stack, labels, self.liver_boxes[cid])
        crop = self.cfg.crop
        h, w = stack.shape[1:]
        # Crop (or pad) to crop x crop; bias the crop towards the liver when there is one.
        mid = len(stack) // 2
        ys, xs = np.nonzero(labels[mid] >= 1)

        def origin(n, centre):
            if n <= crop:
                return 0
            lo = 0 if centre is None else int(np.clip(centre - crop + 16, 0, n - crop))
            hi = n - crop if centre is None else int(np.clip(centre - 16, lo, n - crop))
            return int(self.rng.integers(lo, hi + 1))
        y0 = origin(h, int(self.rng.choice(ys)) if len(ys) else None)
        x0 = origin(w, int(self.rng.choice(xs)) if len(xs) else None)
        stack = stack[:, y0:y0 + crop, x0:x0 + crop]
        labels = labels[:, y0:y0 + crop, x0:x0 + crop]
        if (labels[mid] >= 1).any():
            stack, labels = insert_look_alikes(stack, labels, self.spec.spacing_mm, slice_spacing, self.rng, self.tumor_cfg)
            if self.rng.random() < self.tumor_cfg.probability:
                stack, labels = insert_tumors(stack, labels, self.spec.spacing_mm, slice_spacing, self.rng, self.tumor_cfg)
        out_img = np.zeros((len(stack), crop, crop), np.float32)
        out_lab = np.zeros((crop, crop), np.int64)
        out_img[:, :stack.shape[1], :stack.shape[2]] = stack
        out_lab[:stack.shape[1], :stack.shape[2]] = labels[mid]
        return out_img, out_lab

    def _context_stack(self, a: dict, z: int) -> tuple[np.ndarray, np.ndarray, float]:
        """The 2.5D stack around slice ``z`` (float32 image, uint8 labels) and its effective slice spacing.

        Sometimes mimics a thicker-sliced scan (context slices further apart, each the mean of the slices it spans,
        as a thick reconstruction averages them) or the first/last slice of a partial scan (the context on one
        side repeats the centre slice, as ``context_indices`` clamps at a volume's ends)."""
        n_z, ctx = a["image"].shape[0], self.spec.context_slices
        base = self.spec.context_stride(a["slice_spacing"])  # as inference picks neighbours on this scan
        spacing = a["slice_spacing"] * base
        stride = 1
        if self.rng.random() < self.cfg.thick_slice_probability:
            stride = int(self.rng.integers(1, max(1, int(self.cfg.max_slice_spacing_mm // spacing)) + 1))
        stride *= base
        idx = context_indices(np.array([z]), n_z, ctx * stride)[0][::stride]
        if stride > base:  # a thicker scan: each channel averages the native slices its thick slice spans
            spans = [context_indices(np.array([i]), n_z, stride // 2)[0] for i in idx]
            stack = np.stack([a["image"][sp].astype(np.float32).mean(0) for sp in spans])
        else:
            stack = a["image"][idx].astype(np.float32)
        labels = a["label"][idx]
        if ctx and self.rng.random() < self.cfg.scan_edge_probability:
            side = slice(0, ctx) if self.rng.random() < 0.5 else slice(ctx + 1, None)
            stack[side], labels[side] = stack[ctx], labels[ctx]
        return stack, labels, a["slice_spacing"] * stride

    def _bbox_crop(self, stack: np.ndarray, labels: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
        """Keep only a random box around the case's liver (as in volumes cropped to the liver), air elsewhere."""
        m = [int(self.rng.uniform(*self.cfg.bbox_crop_margin_mm) / self.spec.spacing_mm) for _ in range(4)]
        y0, y1, x0, x1 = max(0, box[0] - m[0]), box[1] + m[1], max(0, box[2] - m[2]), box[3] + m[3]
        out_s, out_l = np.zeros_like(stack), np.zeros_like(labels)
        out_s[:, y0:y1, x0:x1] = stack[:, y0:y1, x0:x1]
        out_l[:, y0:y1, x0:x1] = labels[:, y0:y1, x0:x1]
        return out_s, out_l

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self._sample() for _ in range(n)]
        image = torch.from_numpy(np.stack([p[0] for p in pairs]))
        label = torch.from_numpy(np.stack([p[1] for p in pairs]))
        image, label = geometric(image, label, self.augment_cfg, self.gen)
        return intensity(image, self.augment_cfg, self.gen), label


class PatchSampler(SliceSampler):
    """3D patches for volumetric models: cases are resampled to the model's slice spacing once, then patches are
    drawn around liver voxels (or anywhere), with synthetic tumors and the same in-plane augmentation per slice."""

    def __init__(self, arrays, cases, spec: PreprocessingSpec, cfg: TrainConfig, seed: int):
        resampled = {}
        for c in cases:
            a = arrays[c]
            n = a["image"].shape[0]
            n_out = max(1, int(round(n * a["slice_spacing"] / spec.slice_spacing_mm)))
            image = resample_slices_z(torch.from_numpy(a["image"].astype(np.float32)), n_out).numpy()
            idx = np.clip(np.round((np.arange(n_out) + 0.5) * n / n_out - 0.5).astype(int), 0, n - 1)
            resampled[c] = {"image": image, "label": a["label"][idx], "slice_spacing": spec.slice_spacing_mm}
        super().__init__(resampled, cases, spec, cfg, seed)

    def _sample(self) -> tuple[np.ndarray, np.ndarray]:
        cid = self.cases[self.rng.choice(len(self.cases), p=self.case_p)]
        a = self.arrays[cid]
        pz, py, px = self.spec.patch_size
        liver = np.argwhere(a["label"][::2, ::4, ::4] >= 1) * np.array([2, 4, 4])
        if len(liver) and self.rng.random() < self.cfg.liver_slice_fraction:
            centre = liver[self.rng.integers(len(liver))]
        else:
            centre = np.array([self.rng.integers(n) for n in a["image"].shape])
        lo = [int(np.clip(c - p // 2, 0, max(0, n - p))) for c, p, n in zip(centre, (pz, py, px), a["image"].shape)]
        box = tuple(slice(l, l + p) for l, p in zip(lo, (pz, py, px)))
        img = np.zeros((pz, py, px), np.float32)
        lab = np.zeros((pz, py, px), np.uint8)
        src_i, src_l = a["image"][box], a["label"][box]
        img[:src_i.shape[0], :src_i.shape[1], :src_i.shape[2]] = src_i
        lab[:src_l.shape[0], :src_l.shape[1], :src_l.shape[2]] = src_l
        if (lab >= 1).any() and self.rng.random() < self.cfg.tumors.probability:
            img, lab = insert_tumors(img, lab, self.spec.spacing_mm, self.spec.slice_spacing_mm, self.rng, self.tumor_cfg)
        return img, lab.astype(np.int64)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = super().batch(n)  # slices act as channels for the in-plane augmentation
        return image[:, None], label


class SampleStream(torch.utils.data.IterableDataset):
    """Endless batches from a sampler, drawn in DataLoader worker processes so that sampling and augmentation (about
    8 ms per sample on one core) run beside the training step instead of before it.

    Each worker reseeds its own copy of the sampler from (seed, rank, epoch the stream starts at, worker id): runs are
    reproducible for a given worker count, and a resumed run draws new samples instead of replaying old ones."""

    def __init__(self, sampler: SliceSampler, batch_size: int, seed: int):
        self.sampler, self.batch_size, self.seed = sampler, batch_size, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None:
            self.sampler.rng = np.random.default_rng([self.seed, info.id])
            self.sampler.gen = torch.Generator().manual_seed(int(self.sampler.rng.integers(2 ** 62)))
        while True:
            yield self.sampler.batch(self.batch_size)


def batch_stream(sampler: SliceSampler, cfg: TrainConfig, rank: int, start_epoch: int, pin: bool):
    """Iterator of (image, label) batches: in-line (``loader_workers`` 0, the sampler's own random state, which a
    checkpoint restores exactly) or from ``loader_workers`` worker processes."""
    if not cfg.loader_workers:
        return iter(lambda: sampler.batch(cfg.batch_size), None)
    seed = cfg.seed * 1_000_003 + rank * 7919 + start_epoch
    loader = torch.utils.data.DataLoader(SampleStream(sampler, cfg.batch_size, seed), batch_size=None,
                                         num_workers=cfg.loader_workers, pin_memory=pin, prefetch_factor=4,
                                         persistent_workers=True)
    return iter(loader)


def plan_epochs(cfg: TrainConfig, elapsed_s: float, epoch_s: float, done: int) -> int:
    """Epochs that fit ``time_budget_minutes`` (2 % kept for the last checkpoint and export), given the time spent
    so far and the latest epoch's duration; never fewer than done + 1 nor more than ``epochs``."""
    left = cfg.time_budget_minutes * 60 * 0.98 - elapsed_s
    return int(min(cfg.epochs, max(done + 1, done + left // max(epoch_s, 1e-6))))


# ---- loss ----------------------------------------------------------------------------------------------------
def targets_from_label(label: torch.Tensor) -> torch.Tensor:
    """(N, H, W) labels -> (N, 2, H, W) targets: liver (tumors included) and tumor, matching the model outputs."""
    return torch.stack([(label >= 1), (label == 2)], dim=1).float()


def _reduce_dims(x: torch.Tensor) -> list[int]:
    return [0] + list(range(2, x.dim()))  # everything but the channel: works for 2D and 3D outputs


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, tumor_recall_weight: float = 0.5) -> torch.Tensor:
    """Soft Dice (over the batch, per channel) + binary cross-entropy; with ``tumor_recall_weight`` other than 0.5
    the tumor channel's overlap is a Tversky index whose missed tumor weighs that much and false tumor the rest
    (0.5 / 0.5 is Dice).

    Why the option: the networks segment lesions too small with nearly binary probabilities, so no threshold trades
    precision for recall; the loss can (Training/EXPERIMENTS.md, "Weighting missed tumor")."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    dims = _reduce_dims(prob)
    inter = (prob * target).sum(dim=dims)
    # 2 TP + 2 w FN + 2 (1 - w) FP = 2 (1 - w) sum(prob) + 2 w sum(target): at w = 0.5 exactly Dice's denominator
    weight = torch.tensor([0.5, tumor_recall_weight], dtype=prob.dtype, device=prob.device)
    denom = 2 * (1 - weight) * prob.sum(dim=dims) + 2 * weight * target.sum(dim=dims)
    overlap = (2 * inter + 1.0) / (denom + 1.0)
    return bce + (1 - overlap).mean()


# ---- validation ----------------------------------------------------------------------------------------------
def validate(network: torch.nn.Module, card: dict, arrays: dict[str, dict], cases: list[str], device) -> dict:
    """Dice per case on the network grid through the engine's own coarse/fine slice predictor."""
    from liverseg.metrics import dice

    network.eval()
    predictor = make_predictor(LoadedModel(network, card, None), device, InferenceOptions(batch_size=16))
    per_case = {}
    for cid in cases:
        a = arrays[cid]
        probs = predictor.predict_preprocessed(torch.from_numpy(a["image"].astype(np.float32)), a["slice_spacing"])
        liver = probs.liver >= 128
        tumor = probs.tumor >= 128
        per_case[cid] = {"liver": dice(liver, a["label"] >= 1), "tumor": dice(tumor, a["label"] == 2)}
    network.train()
    mean_liver = float(np.mean([v["liver"] for v in per_case.values()])) if per_case else float("nan")
    return {"cases": per_case, "liver_dice": mean_liver}


# ---- loop ----------------------------------------------------------------------------------------------------
def init_weights(network: torch.nn.Module, model: str) -> None:
    """Copy a model file's weights into ``network`` (same architecture and sizes, else a clear error)."""
    from liverseg.registry import resolve_model_path

    base = load_model(resolve_model_path(model), "cpu")
    try:
        network.load_state_dict(base.network.state_dict())
    except RuntimeError as exc:
        raise ValueError(f"{model} does not match the network being trained ({str(exc).splitlines()[0]}); use the base "
                         "model's architecture, base_channels and depth.") from exc


class WeightAverage:
    """Exponential moving average of a network's weights, as a second network of the same architecture.

    Why: with a few training scans the latest weights jump between checkpoints (held-out Dice moved 0.67-0.86
    between epochs of one run); an average smooths the steps. Measured (README): +0.003 at the end of a full cosine
    schedule, where the weights hardly move any more; it matters for runs that stop mid-schedule. The decay ramps up
    from 0 ((1 + n) / (10 + n)) so that short runs are not dominated by their first weights."""

    def __init__(self, network: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.network = copy.deepcopy(network).eval()
        for p in self.network.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, network: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, cur in zip(self.network.state_dict().values(), network.state_dict().values()):
            if avg.is_floating_point():
                avg.mul_(d).add_(cur.detach(), alpha=1 - d)
            else:
                avg.copy_(cur)

    def state_dict(self) -> dict:
        return {"network": self.network.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self.updates = int(state["updates"])


def _dist_info() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def card_for(cfg: TrainConfig, spec: PreprocessingSpec, manifest: dict, train_cases: list[str]) -> dict:
    cases = manifest["cases"]
    training = {
        "cases": [{"id": c, "dataset": cases[c].get("source", cases[c]["dataset"]), "label_made_by": cases[c].get("label_made_by", ""),
                   "licence": cases[c].get("licence", ""), "slices": cases[c]["slices"]} for c in train_cases],
        "licences": sorted({cases[c].get("licence", "") for c in train_cases} - {""}),
        "synthetic_tumors": dataclasses.asdict(cfg.tumors),
        "config": cfg.to_dict(),
        "finished": False,  # set when the run ends; see mark_finished
    }
    return make_card(
        name=cfg.name, version=cfg.version, architecture=cfg.architecture,
        network={"in_channels": spec.in_channels, "out_channels": 2, "base_channels": cfg.base_channels,
                 "depth": cfg.depth, "dropout": cfg.dropout},
        preprocessing=spec, training=training,
        description=(f"3D {cfg.architecture} on {list(spec.patch_size)} patches" if spec.volumetric else
                     f"2.5D {cfg.architecture} ({spec.in_channels} slices)") + " for liver and liver tumor, trained with liverseg-train.",
    )


def describe_hardware(device, world: int) -> dict:
    """What a run trained on, for the model card (samples seen and wall time come from log.csv)."""
    import platform

    info = {"device": str(device), "processes": world, "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _stop_decision(cfg: TrainConfig, state: dict, started: float, epoch: int, distributed: bool, device) -> bool:
    """Early stopping or time limit. Rank 0 decides (only it validates, and clocks differ) and every rank gets
    the same answer: a rank that stopped alone would leave the others waiting in a collective for ever."""
    stop = False
    if cfg.patience and cfg.val_cases and state["stale"] >= cfg.patience:
        log.info("Early stopping: no better validation Dice for %d epochs.", state["stale"])
        stop = True
    elif cfg.time_limit_minutes and (time.time() - started) / 60 > cfg.time_limit_minutes:
        log.info("Time limit reached after epoch %d; run the same command again to resume.", epoch + 1)
        stop = True
    return bool(_from_rank0(int(stop), device)) if distributed else stop


def _from_rank0(value: int, device) -> int:
    """Rank 0's value on every rank (decisions only rank 0 can make, or whose inputs differ between ranks)."""
    flag = torch.tensor([value], device=device)
    torch.distributed.broadcast(flag, src=0)
    return int(flag.item())


def mark_finished(paths: list[Path]) -> None:
    """Rewrite the run's model files with ``training.finished`` set, once the run has ended as planned (all epochs,
    early stopping or the time budget). Why: the files are rewritten during training, so only this flag tells a
    finished model from one picked up mid-run or left by a killed run (the engine warns about the latter)."""
    for path in paths:
        if path.is_file():
            model = load_model(path)
            model.card["training"]["finished"] = True
            save_model(path, model.network, model.card)


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) into ``cfg.output``; returns the path of the best model file."""
    rank, world = _dist_info()
    distributed = world > 1
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")
    if distributed:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    manifest, arrays = load_prepared(cfg.data)
    spec = PreprocessingSpec.from_dict(manifest["preprocessing"])
    if cfg.replay_data:
        replay_manifest, replay_arrays = load_prepared(cfg.replay_data)
        if replay_manifest["preprocessing"] != manifest["preprocessing"]:
            raise ValueError(f"{cfg.replay_data} was prepared with other preprocessing than {cfg.data}; prepare both "
                             "with the model's preprocessing.")
        arrays.update({REPLAY_PREFIX + c: a for c, a in replay_arrays.items()})
        manifest["cases"].update({REPLAY_PREFIX + c: info for c, info in replay_manifest["cases"].items()})
    volumetric = cfg.architecture in VOLUMETRIC
    if not volumetric and cfg.context_spacing_mm:
        spec = dataclasses.replace(spec, context_spacing_mm=cfg.context_spacing_mm)
    if volumetric:
        spec = dataclasses.replace(spec, context_slices=0, size_multiple=2 ** cfg.depth,
                                   slice_spacing_mm=cfg.slice_spacing_mm, patch_size=tuple(cfg.patch_size))
    excluded = set(cfg.val_cases) | set(cfg.test_cases)
    own = [c for c in arrays if not c.startswith(REPLAY_PREFIX)]
    train_cases = (cfg.train_cases or [c for c in own if c not in excluded]) + [c for c in arrays if c not in own]
    if excluded & set(train_cases):
        raise ValueError(f"Cases {sorted(excluded & set(train_cases))} are both in training and validation/test.")
    if not train_cases:
        raise ValueError("No training cases left; check train_cases/val_cases/test_cases.")
    card = card_for(cfg, spec, manifest, train_cases)
    network = build_network(cfg.architecture, card["network"])
    ckpt_path = out / "checkpoint_last.pt"
    if cfg.init_from and not ckpt_path.exists():  # a resumed run continues from its checkpoint
        init_weights(network, cfg.init_from)
    network = network.to(device)
    model = torch.nn.parallel.DistributedDataParallel(network) if distributed else network
    average = WeightAverage(network, cfg.ema_decay) if cfg.ema_decay else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, cfg.samples_per_epoch // (cfg.batch_size * world))

    state = {"epoch": 0, "best": -1.0, "best_epoch": -1, "stale": 0, "planned_epochs": cfg.epochs, "seconds": 0.0}

    def lr_factor(step: int) -> float:
        warm = cfg.warmup_epochs * steps_per_epoch
        total = state["planned_epochs"] * steps_per_epoch
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm)))) * 0.98 + 0.02

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    sampler = (PatchSampler if volumetric else SliceSampler)(arrays, train_cases, spec, cfg, seed=cfg.seed * 1000 + rank)
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        network.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        state.update(ck["state"])  # the schedule's closure reads this same dict
        if average is not None:
            if "ema" not in ck:
                raise ValueError(f"{ckpt_path} was written without ema_decay; resume with the run's own settings.")
            average.load_state_dict(ck["ema"])
        if not cfg.time_budget_minutes:  # asking for more epochs on resume extends the run
            state["planned_epochs"] = cfg.epochs
        if rank == 0:
            sampler.rng.bit_generator.state = json.loads(ck["numpy_rng"])
            sampler.gen.set_state(ck["torch_rng"])
            if "torch_global_rng" in ck:  # dropout draws from the global generator
                torch.set_rng_state(ck["torch_global_rng"])
        else:  # other ranks must not replay rank 0's samples
            sampler.rng = np.random.default_rng(cfg.seed * 1000 + rank + 7919 * state["epoch"])
        log.info("Resumed from %s at epoch %d", ckpt_path, state["epoch"])
    if rank == 0:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        (out / "hardware.json").write_text(json.dumps(describe_hardware(device, world) | {"loader_workers": cfg.loader_workers}, indent=1))
        log.info("%s: %d parameters, %d training cases, %d steps/epoch", cfg.architecture, count_parameters(network),
                 len(train_cases), steps_per_epoch)
    writer = None
    if rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"))
        except Exception:  # tensorboard is optional
            log.info("TensorBoard not installed; logging to CSV only.")
    csv_path = out / "log.csv"
    best_path = out / f"{cfg.name}.safetensors"
    # With a weight average, the run's model is the average; the latest weights are kept beside it for comparison.
    result = average.network if average is not None else network
    started = time.time()
    batches = batch_stream(sampler, cfg, rank, state["epoch"], pin=device.type == "cuda")
    model.train()
    while state["epoch"] < state["planned_epochs"]:
        epoch = state["epoch"]
        t0 = time.time()
        losses, inter, denom = [], torch.zeros(2), torch.zeros(2)
        bar = ProgressBar(f"epoch {epoch + 1}/{state['planned_epochs']}", enabled=rank == 0)
        for step in range(steps_per_epoch):
            image, label = next(batches)
            image, target = image.to(device, non_blocking=True), targets_from_label(label).to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=cfg.amp and device.type == "cuda"):
                logits = model(image)
            loss = dice_bce_loss(logits.float(), target, cfg.tumor_recall_weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if average is not None:
                average.update(network)
            losses.append(loss.item())
            bar((step + 1) / steps_per_epoch, f"loss {np.mean(losses):.3f}")
            with torch.no_grad():
                pred = (logits.float() > 0).float()
                dims = _reduce_dims(pred)
                inter += (pred * target).sum(dim=dims).cpu()
                denom += (pred.sum(dim=dims) + target.sum(dim=dims)).cpu()
        state["epoch"] = epoch + 1
        epoch_s = time.time() - t0
        state["seconds"] += epoch_s
        if cfg.time_budget_minutes and state["epoch"] == max(1, cfg.warmup_epochs):
            # The warm-up's learning rate does not depend on the total, so the plan can wait for a measured epoch.
            planned = plan_epochs(cfg, state["seconds"], epoch_s, state["epoch"])
            if distributed:  # every rank must follow rank 0's plan (same schedule, same stop)
                planned = _from_rank0(planned, device)
            state["planned_epochs"] = planned
            if rank == 0:
                log.info("Time budget %.1f min: %d epochs (%d samples) planned.", cfg.time_budget_minutes, planned,
                         planned * cfg.samples_per_epoch)
        train_dice = (2 * inter / denom.clamp(min=1)).tolist()
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_dice_liver": train_dice[0],
               "train_dice_tumor": train_dice[1], "lr": sched.get_last_lr()[0], "seconds": epoch_s,
               "val_dice_liver": ""}
        if rank == 0:
            improved = False
            if cfg.val_cases and ((epoch + 1) % cfg.validate_every == 0 or epoch + 1 == cfg.epochs):
                val = validate(result, card, arrays, cfg.val_cases, device)
                row["val_dice_liver"] = val["liver_dice"]
                improved = val["liver_dice"] > state["best"]
                if improved:
                    state.update(best=val["liver_dice"], best_epoch=epoch + 1, stale=0)
                else:
                    state["stale"] += cfg.validate_every
            elif not cfg.val_cases:
                improved = True  # no validation set: the latest model is the result
                state["best_epoch"] = epoch + 1
            if improved:
                card["training"]["best_epoch"] = state["best_epoch"]
                card["training"]["validation_liver_dice"] = state["best"] if cfg.val_cases else None
                save_model(best_path, result, card)
                if average is not None:
                    save_model(best_path.with_name(f"{cfg.name}.latest-weights.safetensors"), network, card)
            new = not csv_path.exists()
            with csv_path.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)
            if writer is not None:
                for k, v in row.items():
                    if isinstance(v, float):
                        writer.add_scalar(k, v, epoch + 1)
            torch.save({"model": network.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "state": state, "numpy_rng": json.dumps(sampler.rng.bit_generator.state),
                        "torch_rng": sampler.gen.get_state(), "torch_global_rng": torch.get_rng_state()}
                       | ({"ema": average.state_dict()} if average is not None else {}), ckpt_path.with_suffix(".tmp"))
            ckpt_path.with_suffix(".tmp").replace(ckpt_path)
            log.info("epoch %d/%d loss %.4f dice liver %.3f tumor %.3f val %s (%.0f s)", epoch + 1, state["planned_epochs"], row["loss"],
                     train_dice[0], train_dice[1], row["val_dice_liver"], row["seconds"])
        if _stop_decision(cfg, state, started, epoch, distributed, device):
            break
    if writer is not None:
        writer.close()
    if rank == 0:
        mark_finished([best_path, best_path.with_name(f"{cfg.name}.latest-weights.safetensors")])
    if distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return best_path
