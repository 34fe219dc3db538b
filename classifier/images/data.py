"""Whole-image data for the image-level classifier (``hpacell train-images``).

Every image is its own sample: its four channels (or a subset, e.g. green
only) are read with :func:`hpacell.segmentation.io.read_image_set`, mapped to uint8 by
the shared normalisation (:func:`hpacell.utils.intensity.to_uint8`) and downscaled to
``size x size`` (``cv2.INTER_AREA``). The model, losses, samplers, split and
training loop are those of the cell classifier (:func:`hpacell.classifier.training.train.fit`
on a :class:`hpacell.classifier.training.data.TrainData`).

Cache
-----
Reading and downsizing a 2048 px image set takes ~0.3 s, far more than a
training step at 512 px, so the downsized arrays are cached once: one uint8
``(k, size, size)`` ``.npy`` file per image in
``CACHE/<size>px-<channels>/<ID>.npy`` (``<channels>`` = initials in
red, green, blue, yellow order: ``rgby``, ``g``, ``rgb`` ...), built by worker
processes (:func:`hpacell.utils.jobs.run_jobs`), each file written to a temp
name then renamed. A rerun (or another run sharing ``--cache``) reuses the
files; an image that cannot be read is recorded as a failure and left out.
The cache is keyed by image ID: point runs over different image folders that
reuse IDs at different cache folders.

Channel subsets
---------------
The augmentation and normalisation (:class:`hpacell.classifier.training.data.TrainTransform`,
:func:`hpacell.classifier.training.data.eval_transform`) work on 4-channel arrays;
:class:`ChannelTransform` places a subset's channels at their positions (the
others zero), applies the 4-channel transform and keeps the subset's channels,
so each channel keeps its own normalisation statistics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from pydantic import Field, field_validator
from torch.utils.data import Dataset

from hpacell.classifier.training.config import TrainConfig
from hpacell.classifier.training.data import TrainData, TrainTransform, eval_transform
from hpacell.segmentation.io import CHANNELS, read_image_set
from hpacell.utils.errors import InputError
from hpacell.utils.files import atomic_file
from hpacell.utils.intensity import to_uint8

log = logging.getLogger(__name__)

Channel = Literal["red", "green", "blue", "yellow"]
_INITIALS = {c[0]: c for c in CHANNELS}


class ImageTrainConfig(TrainConfig):
    """:class:`TrainConfig` of the image-level model (``crop_size`` is the image side, ``--size``).

    Examples
    --------
    >>> ImageTrainConfig(channels=["blue", "green"]).channels
    ['green', 'blue']
    >>> ImageTrainConfig().crop_size, ImageTrainConfig().triplet_lambda
    (512, 0.0)
    """

    crop_size: int = Field(512, ge=16, description="images are downscaled to this side (--size)")
    channels: list[Channel] = Field(
        default_factory=lambda: list(CHANNELS), description="input channels (kept in r, g, b, y order)"
    )
    triplet_lambda: float = Field(0.0, ge=0.0, description="batch-hard triplet term (off for images)")
    cache_dir: str | None = Field(None, description="downsized-image cache (default RUN/cache)")
    cache_workers: int = Field(1, ge=1, description="processes building the cache")
    tta: bool = Field(False, description="flip TTA in the final validation report")

    @field_validator("channels")
    @classmethod
    def _order(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one channel is needed")
        if len(set(v)) != len(v):
            raise ValueError(f"repeated channel in {v}")
        return [c for c in CHANNELS if c in v]


def parse_channels(text: str | Sequence[str]) -> list[str]:
    """Channel names from ``"green,blue,red"``, ``"gbr"``, ``"all"`` or a list; r, g, b, y order.

    Examples
    --------
    >>> parse_channels("g")
    ['green']
    >>> parse_channels("green+blue+red")
    ['red', 'green', 'blue']
    >>> parse_channels("all")
    ['red', 'green', 'blue', 'yellow']
    """
    if isinstance(text, str):
        t = text.strip().lower()
        if t in ("all", ""):
            return list(CHANNELS)
        parts = [p for p in t.replace("+", ",").replace(" ", ",").split(",") if p]
        if len(parts) == 1 and parts[0] not in CHANNELS and set(parts[0]) <= set(_INITIALS):
            parts = list(parts[0])  # "rgb": initials
        parts = [_INITIALS.get(p, p) for p in parts]
    else:
        parts = [str(p).strip().lower() for p in text]
    bad = [p for p in parts if p not in CHANNELS]
    if bad:
        raise InputError(f"unknown channel(s) {bad}: use red, green, blue, yellow (or r, g, b, y)")
    if len(set(parts)) != len(parts):
        raise InputError(f"repeated channel in {text!r}")
    return [c for c in CHANNELS if c in parts]


def channel_key(channels: Sequence[str]) -> str:
    """Initials of the channels (``"rgby"``, ``"g"``)."""
    return "".join(c[0] for c in CHANNELS if c in channels)


# --------------------------------------------------------------------------- reading + cache
def load_image(files: dict[str, Path], size: int, channels: Sequence[str] = CHANNELS) -> np.ndarray:
    """One image set as a uint8 ``(k, size, size)`` array of ``channels`` (shared normalisation, INTER_AREA).

    Raises :class:`hpacell.segmentation.io.ImageSetError` naming the file for a bad set.
    """
    img = to_uint8(read_image_set(files))
    idx = [CHANNELS.index(c) for c in channels]
    hwc = np.ascontiguousarray(img[idx].transpose(1, 2, 0))
    interp = cv2.INTER_AREA if max(hwc.shape[:2]) > size else cv2.INTER_LINEAR
    small = cv2.resize(hwc, (size, size), interpolation=interp).reshape(size, size, len(idx))
    return np.ascontiguousarray(small.transpose(2, 0, 1))


def cache_folder(root: str | os.PathLike, size: int, channels: Sequence[str]) -> Path:
    """``root/<size>px-<channel initials>``."""
    return Path(root) / f"{int(size)}px-{channel_key(channels)}"


def _cache_one(job: tuple[str, dict[str, Path], int, list[str], Path]) -> str:
    image_id, files, size, channels, path = job
    if path.is_file():
        return "cached"
    arr = load_image(files, size, channels)
    with atomic_file(path) as tmp:
        np.save(tmp, arr)
    return "written"


def build_cache(
    sets: dict[str, dict[str, Path]],
    ids: Sequence[str],
    root: str | os.PathLike,
    size: int,
    channels: Sequence[str],
    workers: int = 1,
) -> tuple[Path, dict[str, str]]:
    """Cache the downsized arrays of ``ids``; returns ``(folder, {ID: error} of failed images)``."""
    from hpacell.utils.files import clean_stale_temps
    from hpacell.utils.jobs import run_jobs

    folder = cache_folder(root, size, channels)
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(folder)
    chans = list(channels)
    jobs = [(i, sets[i], int(size), chans, folder / f"{i}.npy") for i in ids]
    failures: dict[str, str] = {}
    written = 0
    for res in run_jobs(_cache_one, jobs, workers=workers, desc="cache", total=len(jobs)):
        if not res.ok:
            failures[res.item[0]] = res.error or "error"
            log.warning("image %s failed: %s", res.item[0], res.error)
        elif res.value == "written":
            written += 1
    log.info(
        "cache %s: %d written, %d reused, %d failed", folder, written, len(jobs) - written, len(failures)
    )
    return folder, failures


# --------------------------------------------------------------------------- dataset
class ChannelTransform:
    """Apply a 4-channel transform to a channel subset (missing channels zero, dropped from the output).

    Examples
    --------
    >>> t = ChannelTransform(eval_transform(8), ["green"])
    >>> tuple(t(np.zeros((1, 16, 16), np.uint8)).shape)
    (1, 8, 8)
    """

    def __init__(self, inner: Callable[[np.ndarray], torch.Tensor], channels: Sequence[str]) -> None:
        self.inner = inner
        self.idx = [CHANNELS.index(c) for c in channels]

    def reseed(self, seed: int) -> None:
        if hasattr(self.inner, "reseed"):
            self.inner.reseed(seed)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if image.shape[0] != len(self.idx):
            raise ValueError(f"expected {len(self.idx)} channels, got an array of shape {image.shape}")
        if len(self.idx) == len(CHANNELS):
            return self.inner(image)
        full = np.zeros((len(CHANNELS), *image.shape[1:]), np.uint8)
        full[self.idx] = image
        return self.inner(full)[self.idx]


class ImageDataset(Dataset):
    """Whole images as samples: ``{"image", "labels" (float32, C), "index"}``.

    Parameters
    ----------
    ids : sequence of str
        Image IDs served, in order.
    labels : (N, C) array or None
        Multi-hot labels of ``ids`` (zeros when None, e.g. for prediction).
    cache : path, optional
        A :func:`build_cache` folder holding ``<ID>.npy``; or
    sets, size, channels :
        ``{ID: {channel: path}}`` to read and downsize on the fly instead.
    transform : callable, optional
        Applied to the uint8 ``(k, size, size)`` array.
    safe : bool
        On the fly only: an unreadable image yields zeros and ``index`` -1
        instead of raising (prediction records it and goes on).
    """

    def __init__(
        self,
        ids: Sequence[str],
        labels: np.ndarray | None = None,
        *,
        cache: str | os.PathLike | None = None,
        sets: dict[str, dict[str, Path]] | None = None,
        size: int | None = None,
        channels: Sequence[str] = CHANNELS,
        n_classes: int | None = None,
        transform: Callable[[np.ndarray], Any] | None = None,
        safe: bool = False,
    ) -> None:
        if (cache is None) == (sets is None):
            raise ValueError("give either cache or sets")
        if sets is not None and size is None:
            raise ValueError("size is required when reading image sets on the fly")
        self.ids = [str(i) for i in ids]
        if labels is None:
            labels = np.zeros((len(self.ids), n_classes or 0), np.uint8)
        self.labels = np.asarray(labels)
        if len(self.labels) != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids but {len(self.labels)} label rows")
        self.cache = Path(cache) if cache is not None else None
        self.sets, self.size, self.channels = sets, size, list(channels)
        self.transform, self.safe = transform, safe

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, i: int) -> np.ndarray:
        """The uint8 ``(k, size, size)`` array of item ``i``."""
        iid = self.ids[i]
        if self.cache is not None:
            return np.load(self.cache / f"{iid}.npy")
        return load_image(self.sets[iid], int(self.size), self.channels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = i
        try:
            img = self.read(i)
        except Exception:
            if not self.safe:
                raise
            img, index = np.zeros((len(self.channels), self.size, self.size), np.uint8), -1
        return {
            "image": self.transform(img) if self.transform is not None else torch.from_numpy(img),
            "labels": torch.from_numpy(self.labels[i].astype(np.float32)),
            "index": index,
        }


# --------------------------------------------------------------------------- the data of a run
def labelled_images(
    images_dir: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[list[str], np.ndarray, Any, dict[str, dict[str, Path]]]:
    """IDs with both an image set and a label row (label-table order), their labels, taxonomy, sets."""
    from hpacell.cellcrops.labels import compare_ids, read_labels
    from hpacell.segmentation.io import find_image_sets

    table = read_labels(labels_path)
    sets = find_image_sets(images_dir)
    if not sets:
        raise InputError(f"{images_dir}: no image sets (<ID>_{{red,green,blue,yellow}}.png) found")
    compare_ids(table.ids, sets)
    keep = [k for k, iid in enumerate(table.ids) if iid in sets]
    if not keep:
        raise InputError(f"{labels_path}: none of its IDs has an image set in {images_dir}")
    ids = [table.ids[k] for k in keep]
    return ids, table.matrix[keep], table.taxonomy, sets


def build_image_data(
    images_dir: str | os.PathLike,
    labels_path: str | os.PathLike,
    config: ImageTrainConfig,
    cache_root: str | os.PathLike,
) -> TrainData:
    """Cache the labelled images, split them (multilabel-stratified K-fold) and wrap both sides."""
    from hpacell.classifier.training.split import image_split

    ids, labels, tax, sets = labelled_images(images_dir, labels_path)
    size, channels = int(config.crop_size), list(config.channels)
    folder, failures = build_cache(sets, ids, cache_root, size, channels, config.cache_workers)
    ok = np.array([i not in failures for i in ids])
    ids, labels = [i for i, k in zip(ids, ok, strict=True) if k], labels[ok]
    if not ids:
        raise InputError(
            f"{images_dir}: every labelled image failed to load (first: {next(iter(failures.values()))})"
        )
    tr, va = image_split(ids, labels, config.folds, config.fold, config.seed)
    aug = TrainTransform(size, seed=config.seed) if config.augment else eval_transform(size)
    train = ImageDataset(
        [ids[k] for k in tr], labels[tr], cache=folder, transform=ChannelTransform(aug, channels)
    )
    val = ImageDataset(
        [ids[k] for k in va],
        labels[va],
        cache=folder,
        transform=ChannelTransform(eval_transform(size), channels),
    )
    return TrainData(
        train=train,
        val=val,
        train_labels=labels[tr],
        val_labels=labels[va],
        classes=list(tax.classes),
        taxonomy=tax.name,
        crop_size=size,
        in_chans=len(channels),
        info={
            "n_images": len(ids),
            "n_train_images": len(tr),
            "n_val_images": len(va),
            "channels": channels,
            "cache": str(folder),
            "failed_images": failures,
        },
    )
