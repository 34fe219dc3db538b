"""A tiny in-memory multi-label dataset for the training-loop tests (fixture ``make_data``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from hpacell.classifier.training.data import TrainData, TrainTransform, eval_transform


class FakeCells(Dataset):
    """Crops whose green channel shows a class-specific square; labels per image."""

    def __init__(
        self, n_images: int = 12, cells_per_image: int = 4, size: int = 32, n_classes: int = 3, seed=0
    ):
        rng = np.random.default_rng(seed)
        self.image_ids = np.repeat([f"img{i}" for i in range(n_images)], cells_per_image)
        img_labels = np.zeros((n_images, n_classes), np.uint8)
        for i in range(n_images):
            img_labels[i, i % n_classes] = 1
            if i % 4 == 3:
                img_labels[i, (i + 1) % n_classes] = 1
        self.labels = img_labels.repeat(cells_per_image, 0)
        self.crops = rng.integers(0, 40, (len(self.labels), 4, size, size), dtype=np.uint8)
        q = size // n_classes
        for j, lab in enumerate(self.labels):
            for c in np.flatnonzero(lab):
                self.crops[j, 1, c * q : (c + 1) * q, :] = 200
        self.rows = np.arange(len(self.labels))
        self.transform = None

    def subset(self, rows, transform):
        ds = FakeCells.__new__(FakeCells)
        ds.image_ids, ds.labels, ds.crops = self.image_ids, self.labels, self.crops
        ds.rows, ds.transform = np.asarray(rows), transform
        return ds

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = self.rows[i]
        img = self.crops[r]
        return {
            "image": self.transform(img) if self.transform else torch.from_numpy(img),
            "labels": torch.from_numpy(self.labels[r].astype(np.float32)),
            "index": int(r),
        }


def fake_data(size: int = 32, seed: int = 0) -> TrainData:
    from hpacell.classifier.training.split import image_split

    full = FakeCells(size=size, seed=seed)
    tr, va = image_split(full.image_ids, full.labels, folds=4, fold=0, seed=seed)
    return TrainData(
        train=full.subset(tr, TrainTransform(size, seed=seed)),
        val=full.subset(va, eval_transform(size)),
        train_labels=full.labels[tr],
        val_labels=full.labels[va],
        classes=["a", "b", "c"],
        taxonomy="test",
        crop_size=size,
    )


@pytest.fixture
def make_data():
    """Factory of fresh :class:`TrainData` over :class:`FakeCells`."""
    return fake_data
