"""``CellDataset``: the one reader of a cell dataset folder (written by ``hpacell crop``).

Crops are read from memory-mapped ``.npy`` shards, opened lazily in each
process (the open maps are not pickled, so the dataset is safe with
``DataLoader`` workers under fork and spawn alike).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from hpacell.utils.errors import InputError

log = logging.getLogger(__name__)


def multi_hot(labels: Sequence[Sequence[int]], n_classes: int) -> np.ndarray:
    """``(N, n_classes)`` uint8 multi-hot matrix of lists of class ids.

    Examples
    --------
    >>> multi_hot([[0, 2], [], [1]], 3).tolist()
    [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    """
    lengths = np.fromiter((len(x) for x in labels), dtype=np.int64, count=len(labels))
    out = np.zeros((len(labels), n_classes), np.uint8)
    if lengths.sum():
        ids = np.concatenate([np.asarray(x, dtype=np.int64) for x in labels if len(x)])
        if ids.min() < 0 or ids.max() >= n_classes:
            raise ValueError(f"class id out of range 0..{n_classes - 1}")
        out[np.repeat(np.arange(len(labels)), lengths), ids] = 1
    return out


class CellDataset(Dataset):
    """A torch ``Dataset`` over a ``CELLS`` folder.

    Parameters
    ----------
    cells_dir : path
        Folder with ``cells.parquet``, ``meta.json`` and ``shard-*.npy``.
    rows : sequence of int, optional
        Positions into the table served, in that order (a split); all rows
        by default.
    transform : callable, optional
        Applied to the ``(4, S, S)`` uint8 crop; its result is ``"image"``.
    feature_columns : list of str, optional
        Table columns returned as a float32 ``"features"`` vector.
    targets : (N_total, C) array, optional
        Training targets served as ``"labels"`` instead of the table's labels
        (e.g. per-cell labels replacing those inherited from the image).

    Attributes
    ----------
    table : pandas.DataFrame
        The whole ``cells.parquet`` (positional index ``0..N-1``).
    meta : dict
    classes : list of str
    taxonomy : str
    labels : (N_total, C) uint8
        Multi-hot labels of all rows.
    rows : numpy.ndarray
        The positions this dataset serves.

    ``ds[i]`` is ``{"image", "labels" (float32, C), "index" (int, position in
    .table)}`` plus ``"features"`` (float32, F) when ``feature_columns`` is given.
    """

    def __init__(
        self,
        cells_dir: str | os.PathLike,
        rows: Sequence[int] | np.ndarray | None = None,
        transform: Callable[[np.ndarray], Any] | None = None,
        feature_columns: Sequence[str] | None = None,
        targets: np.ndarray | None = None,
    ) -> None:
        self.cells_dir = Path(cells_dir)
        meta_path, table_path = self.cells_dir / "meta.json", self.cells_dir / "cells.parquet"
        for p in (meta_path, table_path):
            if not p.is_file():
                raise FileNotFoundError(
                    f"{p}: not found (is {self.cells_dir} a cell dataset from hpacell crop?)"
                )
        self.meta: dict = json.loads(meta_path.read_text())
        self.table: pd.DataFrame = pd.read_parquet(table_path).reset_index(drop=True)
        self.classes: list[str] = list(self.meta["classes"])
        self.taxonomy: str = self.meta["taxonomy"]
        self.labels = multi_hot(list(self.table["labels"]), len(self.classes))
        n = len(self.table)
        self.rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).ravel()
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= n):
            raise IndexError(f"rows must lie in 0..{n - 1}")
        self.transform = transform
        self.feature_columns = list(feature_columns) if feature_columns else None
        self._features = None
        if self.feature_columns:
            missing = [c for c in self.feature_columns if c not in self.table.columns]
            if missing:
                raise InputError(f"{table_path}: no columns {missing}")
            self._features = self.table[self.feature_columns].to_numpy(np.float32)
        self._shard = self.table["shard"].to_numpy(np.int64)
        self._row = self.table["row"].to_numpy(np.int64)
        self._labels_f = self.labels.astype(np.float32)
        if targets is not None:
            targets = np.asarray(targets, np.float32)
            if targets.shape != self.labels.shape:
                raise ValueError(f"targets of shape {targets.shape}, expected {self.labels.shape}")
            self._labels_f = targets
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.rows.size)

    def _open(self, k: int) -> np.ndarray:
        m = self._maps.get(k)
        if m is None:
            # set by hpacell.cellcrops.merge: crops live in other folders
            files = self.meta.get("shard_files")
            name = files[k] if files else f"shard-{k:05d}.npy"
            m = np.load(self.cells_dir / name, mmap_mode="r")
            self._maps[k] = m
        return m

    def crop(self, index: int) -> np.ndarray:
        """The ``(4, S, S)`` uint8 crop of table row ``index`` (a copy)."""
        return np.array(self._open(int(self._shard[index]))[self._row[index]])

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} cells")
        index = int(self.rows[i])
        image = self.crop(index)
        item = {
            "image": self.transform(image) if self.transform is not None else image,
            "labels": self._labels_f[index].copy(),
            "index": index,
        }
        if self._features is not None:
            item["features"] = self._features[index].copy()
        return item

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}  # memory maps are reopened in each process
        return state
