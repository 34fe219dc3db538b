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

from hpacell.cellcrops.shards import recorded_source
from hpacell.segmentation.io import CELLMASK_SUFFIX
from hpacell.utils.errors import InputError
from hpacell.utils.files import atomic_write_bytes
from hpacell.utils.outputs import claim_folder, record_path
from hpacell.utils.tables import write_parquet

log = logging.getLogger(__name__)

# meta.json keys that must agree between the parts.
COMPATIBLE_KEYS = ("crop_size", "channels", "taxonomy", "classes", "mask_background", "feature_columns")

# Crop options (meta.json["options"]) that must agree, with their ``hpacell crop`` flags.
OPTION_FLAGS = {
    "size": "--size",
    "mask_background": "--mask-background",
    "min_area": "--min-area",
    "drop_border_cells": "--drop-border-cells",
    "margin": "--margin",
    "feature_size": "--feature-size",
    "exact_area": "exact_area",
}


def _shard_file(part: Path, meta: dict, k: int) -> Path:
    files = meta.get("shard_files")
    return part / files[k] if files else part / f"shard-{k:05d}.npy"


def _check_compatible(part: Path, meta: dict, first: Path, ref: dict) -> None:
    for key in COMPATIBLE_KEYS:
        if key in meta or key in ref:
            if meta.get(key) != ref.get(key):
                raise InputError(f"{part}: {key}={meta.get(key)!r} differs from {ref.get(key)!r} of {first}")
    opts, ref_opts = meta.get("options") or {}, ref.get("options") or {}
    for key, flag in OPTION_FLAGS.items():
        if opts.get(key) != ref_opts.get(key):
            raise InputError(
                f"{part}: cropped with {key}={opts.get(key)!r} ({flag}), but {first} with "
                f"{key}={ref_opts.get(key)!r}; merge only parts cropped with the same options"
            )


def _masks_folder(part: Path, table: pd.DataFrame) -> set[str]:
    """The real folders holding a part's cell masks (links followed: Snakemake's per-shard views)."""
    masks = recorded_source(part, "masks")
    if masks is None:
        return set()
    ids = set(table["image_id"])
    status = part / "crop_status.parquet"
    if status.is_file():
        ids |= set(pd.read_parquet(status, columns=["image_id"])["image_id"])
    found = {os.path.dirname(os.path.realpath(masks / f"{i}{CELLMASK_SUFFIX}")) for i in ids}
    return found or {os.path.realpath(masks)}


def merge_cell_datasets(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Write one cell dataset in ``out`` over the crops of ``parts``; returns the number of cells.

    Every part is checked before anything is written (a failed merge leaves no
    ``out``). ``out`` is created and marked for ``merge-cells``; it may already
    hold the parts themselves (``OUT/cells/shard-NNNNN``, as the Snakefile
    does). The merged ``meta.json`` keeps ``sources.masks`` when all parts were
    cropped from one masks folder (links followed), as a path relative to it.

    Raises
    ------
    InputError
        When parts disagree on crop size, channels, taxonomy, classes,
        background masking, features or a crop option (named with its flag), or
        a cell appears in two parts.
    FileNotFoundError
        When a part is not a cell dataset.
    """
    out = Path(out)
    parts = [Path(p) for p in parts]
    if not parts:
        raise InputError("no cell datasets to merge")
    tables, metas = [], []
    for part in parts:
        meta_path, table_path = part / "meta.json", part / "cells.parquet"
        if not (meta_path.is_file() and table_path.is_file()):
            raise FileNotFoundError(f"{part}: not a cell dataset (no meta.json / cells.parquet)")
        meta = json.loads(meta_path.read_text())
        if metas:
            _check_compatible(part, meta, parts[0], metas[0])
        metas.append(meta)
        tables.append(pd.read_parquet(table_path))
    uids = pd.concat([t["cell_uid"] for t in tables], ignore_index=True)
    dup = uids.duplicated()
    if dup.any():
        raise InputError(f"cell {uids[dup].iloc[0]!r} appears in more than one part")
    masks = set().union(*(_masks_folder(p, t) for p, t in zip(parts, tables, strict=True)))

    inside = {p.name for p in parts if os.path.abspath(p.parent) == os.path.abspath(out)}
    claim_folder(out, "merge-cells", ignore=inside)
    shard_files = []
    for part, meta, table in zip(parts, metas, tables, strict=True):
        remap = {}
        for k in sorted(table["shard"].unique()):
            remap[int(k)] = len(shard_files)
            shard_files.append(record_path(_shard_file(part, meta, int(k)), out))
        table["shard"] = table["shard"].map(remap).astype("int64")
    cells = pd.concat(tables, ignore_index=True)
    write_parquet(cells, out / "cells.parquet")
    meta = {**metas[0], "n_cells": len(cells), "n_shards": len(shard_files), "shard_files": shard_files}
    meta["sources"] = {"parts": [record_path(p, out) for p in parts]}
    if len(masks) == 1:
        meta["sources"]["masks"] = record_path(masks.pop(), out)
    elif masks:
        log.warning("the parts were cropped from %d masks folders: none recorded (pass --masks)", len(masks))
    atomic_write_bytes(out / "meta.json", (json.dumps(meta, indent=1) + "\n").encode())
    log.info("merged %d cells from %d datasets into %s", len(cells), len(parts), out)
    return len(cells)
