"""Transforms, data loaders and the cell datasets of a training run.

Crops are ``(4, S, S)`` uint8 arrays (red, green, blue, yellow). Both the
training augmentation and :func:`eval_transform` end with the same
normalisation: ``x / 255`` standardised per channel with :data:`NORM_MEAN` /
:data:`NORM_STD` (the pixel statistics of the five real HPA 2021 images in the
shared data, rounded), giving a float32 ``(4, size, size)`` tensor.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hpacell.classifier.training.config import TrainConfig
from hpacell.classifier.training.samplers import (
    ImageBatchSampler,
    OversampleSampler,
    PKBatchSampler,
    ShuffleSampler,
    seed_worker,
)
from hpacell.utils.device import default_workers  # min(4, this process's CPUs or SLURM share)
from hpacell.utils.errors import InputError

log = logging.getLogger(__name__)

NORM_MEAN = np.array([0.06, 0.05, 0.04, 0.06], dtype=np.float32)
NORM_STD = np.array([0.12, 0.11, 0.13, 0.13], dtype=np.float32)


def _to_hwc(crop: np.ndarray) -> np.ndarray:
    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[0] != 4:
        raise ValueError(f"expected a (4, S, S) crop, got shape {crop.shape}")
    return np.ascontiguousarray(crop.transpose(1, 2, 0))


def _normalise(hwc: np.ndarray) -> torch.Tensor:
    x = hwc.astype(np.float32) / 255.0 if hwc.dtype == np.uint8 else hwc.astype(np.float32)
    x = (x - NORM_MEAN) / NORM_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def _resize(hwc: np.ndarray, size: int) -> np.ndarray:
    if hwc.shape[0] == size and hwc.shape[1] == size:
        return hwc
    interp = cv2.INTER_AREA if hwc.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(hwc, (size, size), interpolation=interp)


class EvalTransform:
    """``(4, S, S)`` uint8 crop -> normalised float tensor ``(4, size, size)``, no augmentation."""

    def __init__(self, crop_size: int) -> None:
        self.crop_size = crop_size

    def __call__(self, crop: np.ndarray) -> torch.Tensor:
        return _normalise(_resize(_to_hwc(crop), self.crop_size))


def eval_transform(crop_size: int) -> EvalTransform:
    """The transform of validation and prediction (same normalisation as training).

    Examples
    --------
    >>> t = eval_transform(32)(np.zeros((4, 64, 64), np.uint8))
    >>> tuple(t.shape), t.dtype
    ((4, 32, 32), torch.float32)
    """
    return EvalTransform(crop_size)


class TrainTransform:
    """Augmentation (albumentations) + per-channel brightness/contrast + normalisation.

    Geometric: horizontal/vertical flips, rot90, shift-scale-rotate. Intensity:
    each channel independently scaled by a contrast factor and shifted by a
    brightness offset. Seeded; :meth:`reseed` restarts the stream. Training
    loaders reseed it for every sample from a seed drawn in the main process
    (:class:`SeededSampler`), so a sample's augmentation depends only on
    ``(seed, epoch, rank, position in the epoch)``, never on the workers.
    """

    def __init__(self, crop_size: int, seed: int = 0, brightness: float = 0.05, contrast: float = 0.2):
        import albumentations as A

        self.crop_size = crop_size
        self.brightness, self.contrast = brightness, contrast
        self.aug = A.Compose(
            [
                A.HorizontalFlip(p=0.5),
                A.VerticalFlip(p=0.5),
                A.RandomRotate90(p=0.5),
                A.Affine(  # shift-scale-rotate
                    translate_percent=(-0.0625, 0.0625),
                    scale=(0.9, 1.1),
                    rotate=(-45, 45),
                    border_mode=cv2.BORDER_CONSTANT,
                    p=0.5,
                ),
            ],
            seed=seed,
        )
        self._py_random = random.Random()
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream at ``seed`` (cheap: called once per training sample)."""
        self.rng = np.random.default_rng(int(seed))
        self._py_random.seed(int(seed))
        self.aug.set_random_state(self.rng, self._py_random)

    def __call__(self, crop: np.ndarray) -> torch.Tensor:
        hwc = _resize(_to_hwc(crop), self.crop_size)
        hwc = self.aug(image=hwc)["image"]
        x = hwc.astype(np.float32) / 255.0
        if self.rng.random() < 0.8:
            c = self.rng.uniform(1 - self.contrast, 1 + self.contrast, size=4).astype(np.float32)
            b = self.rng.uniform(-self.brightness, self.brightness, size=4).astype(np.float32)
            x = np.clip(x * c + b, 0.0, 1.0)
        return _normalise(x)


class SeededSampler(Sampler):
    """Pairs each index of an epoch sampler with an augmentation seed: yields ``(seed, index)``.

    ``inner`` yields indices (or lists of them, a batch sampler) and has
    ``set_epoch``. The seeds are drawn in the main process from
    ``(seed, epoch, rank)``, so the k-th sample of an epoch is augmented the
    same way with or without DataLoader workers, with persistent workers, and
    after a resume; :class:`SeededItems` applies them.

    Examples
    --------
    >>> s = SeededSampler(ShuffleSampler(4, seed=1), seed=1)
    >>> s.set_epoch(2)
    >>> sorted(i for _, i in s)
    [0, 1, 2, 3]
    >>> list(s) == list(s)
    True
    """

    def __init__(self, inner: Any, seed: int = 0, rank: int = 0) -> None:
        self.inner, self.seed, self.rank, self.epoch = inner, seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 0x5EED])
        for item in self.inner:
            if isinstance(item, list):
                seeds = rng.integers(0, 2**63, len(item)).tolist()
                yield [(s, int(i)) for s, i in zip(seeds, item, strict=True)]
            else:
                yield (int(rng.integers(0, 2**63)), int(item))


class SeededItems(Dataset):
    """``dataset[(seed, i)]``: reseed ``dataset.transform`` at ``seed``, then return ``dataset[i]``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        seed, i = key
        transform = getattr(self.dataset, "transform", None)
        if hasattr(transform, "reseed"):
            transform.reseed(seed)
        return self.dataset[i]


def make_train_loader(
    dataset: Dataset, labels: np.ndarray, config: TrainConfig, epoch: int, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """The training DataLoader, deterministic in ``(config.seed, epoch, rank)``.

    Build it once per run: its workers persist across epochs (``persistent_workers``);
    :func:`set_loader_epoch` moves it to another epoch. Sampling and augmentation
    depend only on the seed, epoch and rank (:class:`SeededSampler`), so an epoch's
    batches are the same whatever the number of workers, and after a resume.
    ``labels`` are the (N, C) targets of ``dataset`` in its order (for the samplers).
    """
    workers = default_workers() if config.num_workers is None else config.num_workers
    gen = torch.Generator().manual_seed(config.seed * 100_003 + rank)
    common: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": torch.cuda.is_available() and config.device != "cpu",
        "worker_init_fn": seed_worker,
        "generator": gen,
        "persistent_workers": workers > 0,
    }
    if workers > 0:
        common["prefetch_factor"] = 4
    items = SeededItems(dataset)
    groups = getattr(dataset, "groups", None)  # set on cell datasets by build_cell_data
    if config.sampler == "image" or (config.weak_loss == "mil" and groups is not None):
        if groups is None:
            raise InputError("sampler=image needs a cell dataset (the image of every cell)")
        ibs = ImageBatchSampler(groups, config.batch_size, seed=config.seed, rank=rank, world_size=world_size)
        seeded = SeededSampler(ibs, config.seed, rank)
        seeded.set_epoch(epoch)
        return DataLoader(items, batch_sampler=seeded, **common)
    if config.sampler == "pk":
        bs = PKBatchSampler(
            labels, config.pk_classes, config.pk_samples, seed=config.seed, rank=rank, world_size=world_size
        )
        seeded = SeededSampler(bs, config.seed, rank)
        seeded.set_epoch(epoch)
        return DataLoader(items, batch_sampler=seeded, **common)
    if config.sampler == "oversample":
        sampler: Any = OversampleSampler(
            labels, config.oversample_power, seed=config.seed, rank=rank, world_size=world_size
        )
    else:
        sampler = ShuffleSampler(len(dataset), seed=config.seed, rank=rank, world_size=world_size)
    seeded = SeededSampler(sampler, config.seed, rank)
    seeded.set_epoch(epoch)
    # the incomplete last batch is dropped only when there are full ones; a single sample makes no batch
    # (BatchNorm needs two), so fewer than 2 per rank gives an empty loader, which fit refuses
    n = len(seeded)
    drop_last = n > config.batch_size or n < 2
    return DataLoader(items, batch_size=config.batch_size, sampler=seeded, drop_last=drop_last, **common)


def set_loader_epoch(loader: DataLoader, epoch: int) -> DataLoader:
    """Point a :func:`make_train_loader` loader at ``epoch`` (its workers stay alive); returns it."""
    seeded = loader.batch_sampler if isinstance(loader.batch_sampler, SeededSampler) else loader.sampler
    seeded.set_epoch(epoch)
    return loader


def make_eval_loader(dataset: Dataset, config: TrainConfig) -> DataLoader:
    """Sequential loader over a validation/prediction dataset."""
    workers = default_workers() if config.num_workers is None else config.num_workers
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=torch.cuda.is_available() and config.device != "cpu",
        persistent_workers=workers > 0,  # the validation loader of a run is reused every epoch
    )


# --------------------------------------------------------------------------- the cell dataset of a run
@dataclass
class TrainData:
    """Train/validation datasets (yielding dicts with "image", "labels", optional "features") + run facts.

    Generic: the training loop needs nothing cell-specific. ``val_truth``/``val_truth_mask`` optionally
    replace ``val_labels`` as validation targets (e.g. per-cell ground truth) where the mask is True.
    """

    train: Dataset
    val: Dataset
    train_labels: np.ndarray
    val_labels: np.ndarray
    classes: list[str]
    taxonomy: str
    crop_size: int
    feature_columns: list[str] = field(default_factory=list)
    val_truth: np.ndarray | None = None
    val_truth_mask: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    in_chans: int = 4  # channels of the model input (e.g. 1 for green-only images)
    groups: np.ndarray | None = None  # image (int) of each position a batch's "index" holds (MIL loss)
    negative: int | None = None  # the Negative class id of the taxonomy


def read_cell_truth(path: str | os.PathLike, table, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell truth from a ``cells.csv`` (``ID,cell,Label``) joined to a cells table on (image_id, cell).

    Returns ``(labels (N, C) uint8, found (N,) bool)`` in the table's row order.
    """
    from hpacell.cellcrops.labels import read_cells_csv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: cell truth file not found")
    truth = read_cells_csv(path)
    out = np.zeros((len(table), n_classes), dtype=np.uint8)
    found = np.zeros(len(table), dtype=bool)
    for i, (img, cell) in enumerate(
        zip(table["image_id"].astype(str), table["cell"].astype(int), strict=True)
    ):
        ks = truth.get(img, {}).get(cell)
        if ks is None:
            continue
        found[i] = True
        for k in ks:
            if not 0 <= k < n_classes:
                raise InputError(f"{path}: class {k} out of range for {n_classes} classes")
            out[i, k] = 1
    return out, found


def apply_cell_labels(
    path: str | os.PathLike, table, labels: np.ndarray, classes: list[str], where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Replace the inherited labels of the cells listed in a per-cell label file.

    Returns ``(targets (N, C) float32, given (N,) bool)`` in the table's row order; an
    image or cell of the file that the table lacks is an error naming the file and row.
    """
    from hpacell.cellcrops.labels import read_cell_targets

    ct = read_cell_targets(path, classes)
    pos = ct.positions_in(table["image_id"].astype(str).tolist(), table["cell"].astype(int).tolist(), where)
    targets = np.asarray(labels, np.float32).copy()
    targets[pos] = ct.targets
    given = np.zeros(len(table), bool)
    given[pos] = True
    return targets, given


def build_cell_data(
    cells_dir: str | os.PathLike, config: TrainConfig, cell_labels: str | os.PathLike | None = None
) -> TrainData:
    """Split a ``hpacell crop`` folder by image and wrap both sides as ``CellDataset``.

    ``cell_labels`` (a per-cell targets file) replaces ``config.cell_labels``: label
    refinement's output, so the run's config keeps the options the user gave.
    """
    from hpacell.cellcrops.dataset import CellDataset
    from hpacell.cellcrops.labels import TAXONOMIES
    from hpacell.classifier.training.split import image_split

    probe = CellDataset(cells_dir)
    table, labels = probe.table, np.asarray(probe.labels)
    stored = int(probe.meta["crop_size"])
    size = config.crop_size or stored
    feats = [c for c in table.columns if c.startswith("feat_")] if config.use_features else []
    train_rows, val_rows = image_split(
        table["image_id"].astype(str).to_numpy(), labels, config.folds, config.fold, config.seed
    )
    n_train_all = len(train_rows)
    if config.single_label_only:
        train_rows = train_rows[labels[train_rows].sum(1) == 1]
        if len(train_rows) == 0:
            raise InputError(f"{cells_dir}: no training cell comes from a single-label image")
    targets, given = labels, np.zeros(len(table), bool)
    cell_labels = cell_labels or config.cell_labels
    if cell_labels:
        where = str(Path(cells_dir) / "cells.parquet")
        targets, given = apply_cell_labels(cell_labels, table, labels, list(probe.classes), where)
    unlabelled = (labels[train_rows].sum(1) == 0) & ~given[train_rows]
    if unlabelled.any():
        log.info("dropping %d training cells without labels", int(unlabelled.sum()))
        train_rows = train_rows[~unlabelled]
    aug: Callable = TrainTransform(size, seed=config.seed) if config.augment else eval_transform(size)
    train = CellDataset(
        cells_dir, rows=train_rows, transform=aug, feature_columns=feats or None, targets=targets
    )
    val = CellDataset(cells_dir, rows=val_rows, transform=eval_transform(size), feature_columns=feats or None)
    data = TrainData(
        train=train,
        val=val,
        train_labels=targets[train_rows],
        val_labels=labels[val_rows],
        classes=list(probe.classes),
        taxonomy=str(probe.taxonomy),
        crop_size=size,
        feature_columns=feats,
        info={
            "n_cells": len(table),
            "n_train_cells": len(train_rows),
            "n_train_cells_before_filters": n_train_all,
            "n_val_cells": len(val_rows),
            "n_train_images": int(table["image_id"].iloc[train_rows].nunique()),
            "n_val_images": int(table["image_id"].iloc[val_rows].nunique()),
            "n_train_cells_with_cell_labels": int(given[train_rows].sum()),
            "cell_labels": str(cell_labels) if cell_labels else None,
        },
    )
    image_codes = np.unique(table["image_id"].astype(str).to_numpy(), return_inverse=True)[1]
    data.groups = image_codes
    train.groups = image_codes[train_rows]  # image of each training position (image-grouped batches)
    tax = TAXONOMIES.get(str(probe.taxonomy).lower())
    data.negative = tax.negative if tax is not None else None
    if config.cell_truth:
        truth, found = read_cell_truth(config.cell_truth, table, len(data.classes))
        data.val_truth, data.val_truth_mask = truth[val_rows], found[val_rows]
        data.info["val_cells_with_truth"] = int(found[val_rows].sum())
        if not found[val_rows].any():
            raise InputError(
                f"{config.cell_truth}: no validation cell matches (image_id, cell) of {cells_dir}"
            )
    return data
