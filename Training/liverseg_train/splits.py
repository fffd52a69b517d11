"""Patient-level splits: slices of one patient never end up on both sides of a split."""
from __future__ import annotations

import random
from collections import defaultdict


def _patients(case_patients: dict[str, str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for case, patient in sorted(case_patients.items()):
        groups[patient].append(case)
    return groups


def holdout_split(case_patients: dict[str, str], fractions=(0.7, 0.15, 0.15), seed: int = 0) -> dict[str, list[str]]:
    """Seeded train/val/test split by patient (default 70/15/15); every non-empty fraction gets >= 1 patient."""
    groups = _patients(case_patients)
    patients = sorted(groups)
    random.Random(seed).shuffle(patients)
    n = len(patients)
    n_val = max(1, round(fractions[1] * n)) if fractions[1] > 0 and n >= 3 else 0
    n_test = max(1, round(fractions[2] * n)) if fractions[2] > 0 and n >= 3 else 0
    parts = {"test": patients[:n_test], "val": patients[n_test:n_test + n_val], "train": patients[n_test + n_val:]}
    return {k: sorted(c for p in v for c in groups[p]) for k, v in parts.items()}


def kfold_splits(case_patients: dict[str, str], k: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """k folds by patient: each fold's patients are the validation set once."""
    groups = _patients(case_patients)
    patients = sorted(groups)
    random.Random(seed).shuffle(patients)
    if not 2 <= k <= len(patients):
        raise ValueError(f"{k} folds need at least {k} patients, but the data has {len(patients)}; "
                         f"use --k {max(2, min(k, len(patients)))} or --scheme loo.")
    folds = [patients[i::k] for i in range(k)]
    out = []
    for i in range(k):
        val = [c for p in folds[i] for c in groups[p]]
        train = [c for j in range(k) if j != i for p in folds[j] for c in groups[p]]
        out.append({"train": sorted(train), "val": sorted(val), "test": []})
    return out


def leave_one_out_splits(case_patients: dict[str, str]) -> list[dict[str, list[str]]]:
    """One split per patient: that patient is the test set, all others train."""
    groups = _patients(case_patients)
    return [{"train": sorted(c for q in groups if q != p for c in groups[q]), "val": [], "test": sorted(groups[p])}
            for p in sorted(groups)]
