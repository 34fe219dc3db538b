"""Samplers over a multi-label dataset: rare-class oversampling and P x K batches.

Both are deterministic given ``seed`` and the epoch (:meth:`set_epoch`) and
shard their draws across DDP ranks (``rank``/``world_size``), so every rank
gets a different, equally long stream.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from hpacell.utils.errors import InputError


def oversample_weights(labels: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Per-sample weight = max over its classes of ``freq(class) ** -power``.

    Samples without labels get the weight of the most frequent class.

    Examples
    --------
    >>> oversample_weights(np.array([[1, 0], [1, 0], [1, 0], [0, 1]]), power=1.0).round(3).tolist()
    [0.333, 0.333, 0.333, 1.0]
    """
    labels = np.asarray(labels, dtype=bool)
    freq = labels.sum(0).astype(np.float64)
    cls_w = np.where(freq > 0, np.maximum(freq, 1.0) ** -power, 0.0)
    w = (labels * cls_w[None, :]).max(1)
    floor = cls_w[cls_w > 0].min() if (cls_w > 0).any() else 1.0
    return np.where(w > 0, w, floor)


class _EpochSampler:
    def __init__(self, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, self.rank])


class OversampleSampler(_EpochSampler, Sampler[int]):
    """Draw ``num_samples`` indices with replacement, weighted by :func:`oversample_weights`."""

    def __init__(
        self,
        labels: np.ndarray,
        power: float = 0.5,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(seed, rank, world_size)
        w = oversample_weights(labels, power)
        self.p = w / w.sum()
        self.num_samples = (num_samples or len(labels)) // world_size

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        return iter(self._rng().choice(len(self.p), self.num_samples, p=self.p).tolist())


class PKBatchSampler(_EpochSampler, Sampler[list[int]]):
    """Batches of P classes x K cells carrying that class (a cell may carry others too).

    Classes are drawn uniformly among those with at least one cell; cells with
    replacement when a class has fewer than K. The epoch holds about
    ``len(labels) / (P * K)`` batches (split across ranks).

    Examples
    --------
    >>> y = np.eye(3, dtype=np.uint8).repeat(4, 0)
    >>> b = next(iter(PKBatchSampler(y, p=2, k=3)))
    >>> len(b), len({int(np.argmax(y[i])) for i in b})
    (6, 2)
    """

    def __init__(
        self,
        labels: np.ndarray,
        p: int = 8,
        k: int = 4,
        num_batches: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(seed, rank, world_size)
        labels = np.asarray(labels, dtype=bool)
        self.members = [np.flatnonzero(labels[:, c]) for c in range(labels.shape[1])]
        self.classes = np.array([c for c, m in enumerate(self.members) if len(m)])
        if len(self.classes) == 0:
            raise InputError("P x K sampler: no class has any cell")
        self.p, self.k = min(p, len(self.classes)), k
        total = num_batches or max(1, len(labels) // (self.p * self.k))
        self.num_batches = max(1, total // world_size)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = self._rng()
        for _ in range(self.num_batches):
            batch: list[int] = []
            for c in rng.choice(self.classes, self.p, replace=False):
                m = self.members[c]
                batch += rng.choice(m, self.k, replace=len(m) < self.k).tolist()
            yield batch


class ImageBatchSampler(_EpochSampler, Sampler[list[int]]):
    """Batches of whole images (for the multiple-instance loss).

    Images are shuffled per epoch and their cells packed into batches of at most
    ``batch_size`` cells; an image with more cells contributes a random
    ``batch_size`` of them. An epoch holds ``n_cells // (batch_size * world_size)``
    batches per rank (packing continues over a new shuffle when one runs out),
    so its length is the same every epoch. Images are sharded across ranks.

    Examples
    --------
    >>> groups = np.repeat(np.arange(6), 3)
    >>> batches = list(ImageBatchSampler(groups, batch_size=6))
    >>> len(batches), all(len({int(groups[i]) for i in b}) == 2 for b in batches)
    (3, True)
    """

    def __init__(
        self, groups: np.ndarray, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__(seed, rank, world_size)
        groups = np.asarray(groups)
        _, inverse = np.unique(groups, return_inverse=True)
        self.members = [
            np.flatnonzero(inverse == k) for k in range(int(inverse.max()) + 1 if len(groups) else 0)
        ]
        if not self.members:
            raise InputError("image batch sampler: no cells")
        self.batch_size = batch_size
        self.num_batches = max(1, len(groups) // (batch_size * world_size))

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])  # the same image order on every rank
        out = 0
        batch: list[int] = []
        while out < self.num_batches:
            order = rng.permutation(len(self.members))
            order = order[self.rank :: self.world_size] if len(order) >= self.world_size else order
            for k in order:
                cells = self.members[k]
                if len(cells) > self.batch_size:
                    cells = np.sort(rng.choice(cells, self.batch_size, replace=False))
                if batch and len(batch) + len(cells) > self.batch_size:
                    yield batch
                    out += 1
                    batch = []
                    if out == self.num_batches:
                        return
                batch += cells.tolist()


class ShuffleSampler(_EpochSampler, Sampler[int]):
    """A seeded permutation per epoch, sharded across ranks (drops the remainder)."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(seed, rank, world_size)
        self.n = n
        self.per_rank = n // world_size if world_size > 1 else n

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        return iter(perm[self.rank :: self.world_size][: self.per_rank].tolist())


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy/random and the dataset's augmentation per worker."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 (the global state is what libraries use)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if hasattr(transform, "reseed"):
        transform.reseed(seed)
