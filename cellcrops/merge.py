"""Merge several cell datasets into one, without copying a crop.

Cluster runs crop each shard of images into its own folder
(``OUT/cells/shard-NNNNN/``, see ``workflows/Snakefile``). Training and
prediction want one dataset: :func:`merge_cell_datasets` writes a combined
``cells.parquet`` and a ``meta.json`` whose ``shard_files`` list maps the
merged shard numbers to the parts' ``.npy`` files (paths relative to the merged
folder), which :class:`cellcrops.CellDataset` follows. The crops stay where
they are (about 100 GB for the 2021 training set).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from hpacell.utils.errors import InputError
from hpacell.utils.files import atomic_write_bytes
from hpacell.utils.tables import write_parquet

log = logging.getLogger(__name__)

# meta.json keys that must agree between the parts.
COMPATIBLE_KEYS = ("crop_size", "channels", "taxonomy", "classes", "mask_background")


def _shard_file(part: Path, meta: dict, k: int) -> Path:
    files = meta.get("shard_files")
    return part / files[k] if files else part / f"shard-{k:05d}.npy"


def merge_cell_datasets(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Write one cell dataset in ``out`` over the crops of ``parts``; returns the number of cells.

    Raises
    ------
    ValueError
        When parts disagree on crop size, channels, taxonomy, classes or
        background masking, or a cell appears in two parts.
    FileNotFoundError
        When a part is not a cell dataset.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables, shard_files, first = [], [], None
    for part in map(Path, parts):
        meta_path, table_path = part / "meta.json", part / "cells.parquet"
        if not (meta_path.is_file() and table_path.is_file()):
            raise FileNotFoundError(f"{part}: not a cell dataset (no meta.json / cells.parquet)")
        meta = json.loads(meta_path.read_text())
        if first is None:
            first = meta
        for key in COMPATIBLE_KEYS:
            if meta.get(key) != first.get(key):
                raise InputError(
                    f"{part}: {key}={meta.get(key)!r} differs from {first.get(key)!r} of {parts[0]}"
                )
        table = pd.read_parquet(table_path)
        remap = {}
        for k in sorted(table["shard"].unique()):
            remap[int(k)] = len(shard_files)
            shard_files.append(os.path.relpath(_shard_file(part, meta, int(k)), out))
        table["shard"] = table["shard"].map(remap).astype("int64")
        tables.append(table)
    if first is None:
        raise InputError("no cell datasets to merge")
    cells = pd.concat(tables, ignore_index=True)
    dup = cells["cell_uid"].duplicated()
    if dup.any():
        raise InputError(f"cell {cells['cell_uid'][dup].iloc[0]!r} appears in more than one part")
    write_parquet(cells, out / "cells.parquet")
    meta = {**first, "n_cells": len(cells), "n_shards": len(shard_files), "shard_files": shard_files}
    meta["sources"] = {"parts": [os.path.relpath(p, out) for p in parts]}
    atomic_write_bytes(out / "meta.json", (json.dumps(meta, indent=1) + "\n").encode())
    log.info("merged %d cells from %d datasets into %s", len(cells), len(parts), out)
    return len(cells)
