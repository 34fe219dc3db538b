"""Build the Kaggle 2021 submission from per-cell confidences and the cell masks.

Each cell's mask string is encoded once, from its bounding box in its
``<ID>_cellmask.png`` (:func:`~hpacell.classifier.scoring.rle.encode_cell`), and
repeated for each class it is scored for; images are encoded in worker
processes. The CSV format itself lives in :mod:`hpacell.classifier.scoring.submission`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpacell.classifier.scoring.rle import encode_cell
from hpacell.classifier.scoring.submission import prediction_string, read_ids, write_submission
from hpacell.segmentation.io import CELLMASK_SUFFIX, read_mask
from hpacell.utils.jobs import run_jobs

__all__ = ["build_submission"]

log = logging.getLogger(__name__)


def _encode_image(job: tuple[str, str, np.ndarray]) -> tuple[int, int, list[str]]:
    """Mask strings of the cells ``boxes[:, 0]`` (rows cell, x0, y0, x1, y1) of one mask file."""
    image_id, mask_path, boxes = job
    mask = read_mask(mask_path)
    h, w = mask.shape
    out = []
    for cell, x0, y0, x1, y1 in boxes.tolist():
        crop = mask[y0:y1, x0:x1] == cell
        if not crop.any():
            raise ValueError(f"{mask_path}: cell {cell} not found in its box {x0},{y0},{x1},{y1}")
        out.append(encode_cell(crop, x0, y0, h, w))
    return w, h, out


def build_submission(
    table: pd.DataFrame,
    confidences: np.ndarray,
    masks_dir: str | os.PathLike,
    path: str | os.PathLike,
    ids_path: str | os.PathLike | None = None,
    min_confidence: float = 0.0,
    workers: int = 1,
) -> dict[str, Any]:
    """Write ``submission.csv`` from per-cell confidences and the cell masks.

    Parameters
    ----------
    table : DataFrame
        One row per cell: ``image_id, cell, x0, y0, x1, y1`` (bbox, x1/y1 exclusive).
    confidences : (N, C) array
        Submission confidence of each cell (table order) for each class.
    masks_dir : path
        Folder of ``<ID>_cellmask.png``.
    ids_path : path, optional
        A sample submission: its IDs, order and sizes; IDs without cells get an
        empty string (an ID with neither cells nor a mask file is also recorded
        in ``failed``: no such image was segmented). Without it: every image of
        the table and every cell mask in ``masks_dir``.

    Returns
    -------
    dict
        ``n_images``, ``n_cells``, ``failed`` ({ID: error}) and ``missing_ids``
        (IDs of the list without cells).
    """
    masks_dir = Path(masks_dir)
    confidences = np.asarray(confidences, np.float64)
    if ids_path is not None:
        ids, sizes = read_ids(ids_path)
    else:
        found = sorted(p.name[: -len(CELLMASK_SUFFIX)] for p in masks_dir.glob(f"*{CELLMASK_SUFFIX}"))
        ids = sorted(set(found) | set(table["image_id"].astype(str)))
        sizes = None
    wanted = set(ids)
    groups = {k: v for k, v in table.groupby(table["image_id"].astype(str), sort=False).indices.items()}
    jobs = []
    for image_id, rows in groups.items():
        if image_id not in wanted:
            continue
        boxes = table.iloc[rows][["cell", "x0", "y0", "x1", "y1"]].to_numpy(np.int64)
        jobs.append((image_id, str(masks_dir / f"{image_id}{CELLMASK_SUFFIX}"), boxes))
    rows_by_id = {image_id: rows for image_id, rows in groups.items()}
    out_rows, failed = [], {}
    for res in run_jobs(_encode_image, jobs, workers=workers, desc="submission", total=len(jobs)):
        image_id = res.item[0]
        if not res.ok:
            log.error("submission: %s: %s", image_id, res.error)
            failed[image_id] = res.error
            continue
        w, h, masks = res.value
        text = prediction_string(masks, confidences[rows_by_id[image_id]], min_score=min_confidence)
        out_rows.append((image_id, w, h, text))
    sizes = dict(sizes or {})
    done = {r[0] for r in out_rows}
    missing = [i for i in ids if i not in done]
    for image_id in missing:
        p = masks_dir / f"{image_id}{CELLMASK_SUFFIX}"
        if image_id not in groups and not p.is_file():  # an ID of the list that was never segmented
            failed.setdefault(image_id, f"no image: no cells and no {p.name} in {masks_dir}")
        if image_id not in sizes:
            if p.is_file():
                h, w = read_mask(p).shape
                sizes[image_id] = (w, h)
            elif image_id in groups:
                r = table.iloc[groups[image_id][0]]
                sizes[image_id] = (int(r["image_width"]), int(r["image_height"]))
    unknown = [i for i in missing if i not in sizes]
    for image_id in unknown:
        failed.setdefault(image_id, "no mask file and no known image size")
    write_submission(out_rows, path, ids=[i for i in ids if i not in unknown], sizes=sizes)
    if unknown:
        log.error("submission: %d image(s) left out (size unknown), e.g. %s", len(unknown), unknown[0])
    return {
        "n_images": len(ids) - len(unknown),
        "n_cells": int(sum(len(groups[r[0]]) for r in out_rows)),
        "failed": failed,
        "missing_ids": [i for i in missing if i not in failed],
    }
