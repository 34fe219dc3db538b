"""Label refinement: out-of-fold scores turn inherited image labels into per-cell targets.

One round: the images of a cell dataset are split into ``refine_folds`` folds
(image-wise, stratified); for each fold a model trains on the other folds (with
the current targets) and scores the held-out fold's cells, so every cell gets
an out-of-fold score. :func:`refine_targets` then keeps an image class for a
cell only where its score is high relative to the image's best cell for that
class; a cell of a positive image keeping none of its image's classes becomes
Negative. The refined targets are written as ``ROUND/cell_labels.parquet``
(``image_id, cell, <one column per class>``, what ``--cell-labels`` reads), so
a round can be inspected and reused; the next round's fold models train on them.

Layout of ``OUT``::

    OUT/round-1/fold-0/...        fold models (fit outputs; resumable)
    OUT/round-1/oof.parquet       out-of-fold scores of every cell
    OUT/round-1/cell_labels.parquet, stamp.json, summary.json
    OUT/cell_labels.parquet       the last round's targets

A rerun with the same inputs and options reuses finished rounds (stamp); folds
of an unfinished round resume from their ``last.pt``.

Under torchrun/srun the fold models are shared out: rank ``r`` trains folds
``r, r + world_size, ...``, each a single-process model on the rank's own device
(the same model a single process trains: same seed, same data), and the ranks
meet on the files (every fold's ``oof.npz``, then rank 0's labels file), so no
process-group timeout bounds a fold's training time.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from hpacell.classifier.training.config import TrainConfig
from hpacell.utils.files import atomic_write_bytes, wait_until
from hpacell.utils.tables import write_parquet

log = logging.getLogger(__name__)

LABELS_FILE = "cell_labels.parquet"


def refine_targets(
    probs: np.ndarray,
    image_labels: np.ndarray,
    groups: np.ndarray,
    rule: str = "hard",
    threshold: float = 0.5,
    negative: int | None = None,
    make_negative: bool = True,
    mix: float = 1.0,
) -> np.ndarray:
    """Refined per-cell targets from cell scores and the (inherited) image labels.

    For a cell of a positive image and each class of the image: ``ratio = score /
    (best score of the class among the image's cells)``; ``hard`` keeps the class
    (1) where ``ratio >= threshold`` and drops it (0) otherwise, ``soft`` sets the
    target to ``min(1, ratio)``. Classes absent from the image stay 0. With
    ``make_negative``, Negative = ``1 - max`` of the cell's refined image classes
    (1 for a cell keeping none). ``mix < 1`` blends: target = ``mix x refined +
    (1 - mix) x inherited`` (0: the inherited labels unchanged). Cells of Negative
    images (and cells without labels) keep their labels.

    Parameters
    ----------
    probs : (N, C) float
        Out-of-fold sigmoid scores of the cells.
    image_labels : (N, C) 0/1
        Each cell's image label (inherited).
    groups : (N,)
        Image of each cell.

    Examples
    --------
    Two cells of an image labelled {0}; the second scores low for class 0:

    >>> p = np.array([[0.9, 0.0, 0.1], [0.1, 0.0, 0.8]])
    >>> y = np.array([[1, 0, 0], [1, 0, 0]])
    >>> refine_targets(p, y, np.array([0, 0]), negative=2).tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    probs = np.asarray(probs, np.float64)
    y = np.asarray(image_labels) > 0
    out = y.astype(np.float32)
    _, g = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    positive = y.any(1) if negative is None else y.any(1) & ~y[:, negative]
    if negative is not None:
        y_pos = y.copy()
        y_pos[:, negative] = False
    else:
        y_pos = y
    best = np.zeros((int(g.max()) + 1 if len(g) else 0, probs.shape[1]))
    np.maximum.at(best, g, np.where(y_pos, probs, 0.0))
    ratio = np.where(y_pos, probs / np.maximum(best[g], 1e-12), 0.0)
    refined = (ratio >= threshold).astype(np.float32) if rule == "hard" else np.minimum(ratio, 1.0)
    if rule not in ("hard", "soft"):
        raise ValueError(f"unknown refine rule {rule!r}")
    refined = np.where(y_pos, refined, 0.0).astype(np.float32)
    out[positive] = refined[positive]
    if negative is not None and make_negative:
        out[positive, negative] = 1.0 - refined[positive].max(1)
    if mix < 1.0:
        out = (mix * out + (1.0 - mix) * y).astype(np.float32)
    return out


def _read_scores(path: Path) -> tuple[np.ndarray, np.ndarray]:
    z = np.load(path)
    return z["rows"], z["probs"]


def _fold_scores(
    cells_dir: Path, config: TrainConfig, fold: int, folder: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Train the model of one fold (resumable) and score its held-out cells: ``(table positions, probs)``."""
    import torch

    from hpacell.classifier.model import load_checkpoint
    from hpacell.classifier.training.data import build_cell_data, make_eval_loader
    from hpacell.classifier.training.train import fit, launch_info, predict, resolve_device

    scores = folder / "oof.npz"
    if scores.is_file():
        return _read_scores(scores)
    cfg = config.model_copy(update={"folds": config.refine_folds, "fold": fold, "refine_rounds": 0})
    data = build_cell_data(cells_dir, cfg)
    fit(data, cfg, folder, resume=(folder / "last.pt").exists(), distributed=False)
    device = resolve_device(cfg.device, launch_info().local_rank)
    model, _ = load_checkpoint(folder / "last.pt", device)
    with torch.no_grad():
        probs = predict(model, make_eval_loader(data.val, cfg), device, cfg)["probs"]
    rows = np.asarray(data.val.rows)
    buf = io.BytesIO()
    np.savez(buf, rows=rows, probs=probs)
    atomic_write_bytes(scores, buf.getvalue())
    return rows, probs


def relabel(
    cells_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    rounds: int | None = None,
) -> Path:
    """Refinement rounds (``rounds``, default ``config.refine_rounds``, at least 1); returns the labels file.

    The fold models use ``config``'s training settings (``config.cell_labels``,
    when given, are the targets of the first round's fold models).
    """
    import pandas as pd

    from hpacell.cellcrops.dataset import CellDataset
    from hpacell.cellcrops.labels import TAXONOMIES, write_cell_targets
    from hpacell.classifier.training.train import launch_info
    from hpacell.utils.files import write_json
    from hpacell.utils.outputs import check_stamp, file_digest, write_stamp

    launch = launch_info()
    cells_dir, out = Path(cells_dir), Path(out_dir)
    rounds = max(1, rounds if rounds is not None else config.refine_rounds)
    probe = CellDataset(cells_dir)
    table, inherited = probe.table, np.asarray(probe.labels)
    classes = list(probe.classes)
    tax = TAXONOMIES.get(str(probe.taxonomy).lower())
    negative = tax.negative if tax is not None else None
    image_ids = table["image_id"].astype(str).to_numpy()
    current = config.cell_labels
    skip = ("refine_rounds", "cell_labels", "num_workers", "device")
    train_keys = {k: v for k, v in config.model_dump(mode="json").items() if k not in skip}
    for r in range(1, rounds + 1):
        folder = out / f"round-{r}"
        labels_path = folder / LABELS_FILE
        stamp = {
            "cells": file_digest(cells_dir / "cells.parquet"),
            "targets": file_digest(current) if current else None,
            "config": train_keys,
        }
        # the stamp is written when a round starts; its labels file, last, marks it done
        if check_stamp(folder / "stamp.json", stamp, what="refined labels") and labels_path.is_file():
            log.info("refine round %d: reusing %s", r, labels_path)
            current = str(labels_path)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if launch.is_main:
            write_stamp(folder / "stamp.json", stamp)
        cfg = config.model_copy(update={"cell_labels": current})
        for k in range(launch.rank, config.refine_folds, launch.world_size):  # this rank's folds
            if launch.world_size > 1:
                log.info("refine round %d: rank %d trains fold %d", r, launch.rank, k)
            _fold_scores(cells_dir, cfg, k, folder / f"fold-{k}")
        fold_scores = [folder / f"fold-{k}" / "oof.npz" for k in range(config.refine_folds)]
        # a rank that fails ends the launch (torchrun, srun --kill-on-bad-exit): no timeout here
        wait_until(lambda fs=fold_scores: all(f.is_file() for f in fs), f"round {r}'s fold models (ranks)")
        if not launch.is_main:  # rank 0 writes the round; the others wait for its labels file
            wait_until(labels_path.is_file, f"round {r}'s labels (rank 0)")
            current = str(labels_path)
            continue
        probs = np.full((len(table), len(classes)), np.nan, np.float32)
        for f in fold_scores:
            rows, p = _read_scores(f)
            probs[rows] = p
        scored = np.isfinite(probs).all(1)
        # cells dropped from training (no labels) are never scored: they keep their labels
        p_all = np.where(scored[:, None], probs, 0.0)
        refined = refine_targets(
            p_all,
            inherited,
            image_ids,
            config.refine_rule,
            config.refine_threshold,
            negative,
            config.refine_negative,
            config.refine_mix,
        )
        refined[~scored] = inherited[~scored]
        oof = pd.DataFrame(probs, columns=classes)
        oof.insert(0, "cell", table["cell"].astype(int).to_numpy())
        oof.insert(0, "image_id", image_ids)
        write_parquet(oof, folder / "oof.parquet")
        changed = np.abs(refined - inherited).max(1) > 1e-6
        summary: dict[str, Any] = {
            "round": r,
            "cells": int(len(table)),
            "cells_changed": int(changed.sum()),
            "cells_made_negative": int(
                ((refined[:, negative] > 0.5) & (inherited[:, negative] == 0)).sum()
                if negative is not None
                else 0
            ),
            "labels_dropped": int(((inherited > 0) & (refined < 0.5)).sum()),
            "labels_file": str(labels_path),
        }
        write_json(folder / "summary.json", summary)
        write_cell_targets(labels_path, image_ids, table["cell"].astype(int).to_numpy(), refined, classes)
        log.info("refine round %d: %d of %d cells changed", r, summary["cells_changed"], len(table))
        current = str(labels_path)
    final = out / LABELS_FILE
    if launch.is_main:
        shutil.copyfile(current, final.with_suffix(".tmp"))
        os.replace(final.with_suffix(".tmp"), final)
    else:  # a final file of an earlier run with other rounds may be there: wait for this one's
        want = file_digest(current)
        wait_until(lambda: final.is_file() and file_digest(final) == want, "the refined labels (rank 0)")
    return final
