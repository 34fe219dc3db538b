"""Score cells with a trained cell classifier; image scores and labels; the Kaggle submission.

Steps of :func:`run_predict` (``hpacell predict``):

1. **Cell scores**: every crop of a cell dataset (``hpacell crop`` folder) goes
   through :func:`hpacell.classifier.training.data.eval_transform` and the checkpoint's model;
   probabilities are ``sigmoid(logits)``. ``tta`` averages the probabilities
   (and embeddings) of the crop and its horizontal and vertical flips.
   Written to ``cell_scores.parquet``: ``image_id, cell, cell_uid, x0, y0, x1,
   y1, image_width, image_height``, one column per class id (``"0"`` ..
   ``"18"``) and, with ``embeddings``, an ``embedding`` list column.
2. **Image scores** (``image_scores.csv``: ``ID`` + one column per class id):
   per image and class the ``max``, ``mean`` or ``topk`` mean (mean of the k
   highest cells) of the cell probabilities.
3. **Image labels** (``image_labels.csv``, 2021 ``ID,Label`` format): classes
   whose image score >= the checkpoint's per-class threshold (tuned on
   validation for F1; ``threshold`` overrides all of them).
4. **Submission** (``submission.csv``): each cell once per class (or only
   triples with confidence >= ``min_confidence``), mask encoded once per cell
   from its bbox (:mod:`hpacell.classifier.scoring.rle`).

Negative (class 18 of hpa2021)
------------------------------
* A cell's Negative confidence is the model's Negative probability. A model
  trained without a Negative output (``n_classes - 1`` outputs) gets a derived
  one: ``1 - max(other classes)``.
* An image is labelled Negative only when no other class passes its threshold
  (then it is labelled Negative even if the Negative score itself is below its
  threshold, so every image has a label); Negative never co-occurs with another
  class, as in the 2021 training labels.

Blending with image-level scores
--------------------------------
With ``image_scores`` (a CSV ``ID`` + one column per class id ``"0"``..``"18"``,
as ``hpacell predict-images`` writes, or this command's own ``image_scores.csv``)
a cell's submission confidence for class c is ``cell_c ** a * image_c ** b``
(``cell_power`` a, ``image_power`` b). The blended confidences are stored as
``conf_<c>`` columns of ``cell_scores.parquet``; image scores and labels use
the raw cell probabilities.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from hpacell.cellcrops.labels import HPA2021, get_taxonomy, write_labels
from hpacell.classifier.model import load_checkpoint, read_checkpoint
from hpacell.classifier.scoring.build_submission import build_submission
from hpacell.utils.device import resolve_device
from hpacell.utils.errors import InputError
from hpacell.utils.files import atomic_write_bytes
from hpacell.utils.outputs import check_stamp, file_digest, fingerprint, write_stamp
from hpacell.utils.tables import write_parquet

log = logging.getLogger(__name__)

CELL_SCORES = "cell_scores.parquet"
IMAGE_SCORES = "image_scores.csv"
IMAGE_LABELS = "image_labels.csv"
SUBMISSION = "submission.csv"
SCORES_STAMP = "cell_scores.stamp.json"


class PredictConfig(BaseModel):
    """Options of ``hpacell predict`` (strict: unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    batch_size: int = Field(128, ge=1)
    num_workers: int | None = Field(None, ge=0, description="DataLoader workers (default: CPU-based)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    tta: bool = Field(False, description="average over horizontal and vertical flips")
    embeddings: bool = Field(False, description="store each cell's embedding in cell_scores.parquet")
    agg: Literal["max", "mean", "topk"] = "max"
    topk: int = Field(3, ge=1)
    threshold: float | None = Field(None, gt=0, lt=1, description="one threshold for all classes")
    cell_power: float = Field(1.0, ge=0)
    image_power: float = Field(1.0, ge=0)
    min_confidence: float = Field(0.0, ge=0, le=1, description="drop submission triples below this")
    workers: int = Field(1, ge=1, description="processes encoding the submission masks")


# --------------------------------------------------------------------------- cell scores
def _views(x: torch.Tensor, tta: bool) -> list[torch.Tensor]:
    return [x, torch.flip(x, dims=[3]), torch.flip(x, dims=[2])] if tta else [x]


def score_cells(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    tta: bool = False,
    embeddings: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Probabilities of every item of ``dataset`` (dicts with ``image``, ``index``, optional ``features``).

    Returns
    -------
    index : (N,) int64
        The ``index`` of each item (row position in the cells table), dataset order.
    probs : (N, C) float32
        ``sigmoid(logits)``, averaged over the flips with ``tta``.
    emb : (N, E) float32 or None
        Embeddings (averaged likewise) when ``embeddings``.
    """
    device = torch.device(device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    model.eval().to(device)
    idx, probs, embs = [], [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc="predict", disable=None):
            x = batch["image"].to(device, non_blocking=True).float()
            feats = batch.get("features")
            feats = feats.to(device) if feats is not None else None
            p_sum, e_sum = 0.0, 0.0
            views = _views(x, tta)
            for v in views:
                out = model(v, feats)
                p_sum = p_sum + torch.sigmoid(out["logits"].float())
                if embeddings:
                    e_sum = e_sum + out["embedding"].float()
            probs.append((p_sum / len(views)).cpu().numpy())
            if embeddings:
                embs.append((e_sum / len(views)).cpu().numpy())
            idx.append(np.asarray(batch["index"], np.int64))
    C = getattr(getattr(model, "classifier", None), "out_features", 0)
    index = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    p = np.concatenate(probs).astype(np.float32) if probs else np.zeros((0, C), np.float32)
    e = (np.concatenate(embs).astype(np.float32) if embs else None) if embeddings else None
    return index, p, e


def with_negative(probs: np.ndarray, n_classes: int, negative: int | None) -> np.ndarray:
    """Append a derived Negative column ``1 - max(others)`` to a model without a Negative output.

    ``probs`` with ``n_classes`` columns is returned as is.

    Examples
    --------
    >>> with_negative(np.array([[0.2, 0.7]]), 3, 2).astype(float).round(2).tolist()
    [[0.2, 0.7, 0.3]]
    """
    probs = np.asarray(probs, np.float32)
    if probs.shape[1] == n_classes:
        return probs
    if negative is not None and probs.shape[1] == n_classes - 1 and negative == n_classes - 1:
        neg = 1.0 - (probs.max(1, keepdims=True) if probs.shape[0] else np.zeros((0, 1), np.float32))
        return np.concatenate([probs, neg.astype(np.float32)], 1)
    raise InputError(f"model has {probs.shape[1]} outputs, the taxonomy {n_classes} classes")


# --------------------------------------------------------------------------- images
def aggregate(image_ids: Sequence[str], probs: np.ndarray, how: str = "max", k: int = 3) -> pd.DataFrame:
    """Image scores from cell scores: per image and class the max, mean or top-k mean.

    Returns a DataFrame indexed by image ID (sorted) with one column per class id (str).

    Examples
    --------
    >>> df = aggregate(["a", "a", "a"], np.array([[0.1], [0.5], [0.9]]), "topk", k=2)
    >>> float(df.loc["a", "0"])
    0.7
    """
    probs = np.asarray(probs, np.float64)
    ids = np.asarray(image_ids, dtype=object)
    cols = [str(c) for c in range(probs.shape[1])]
    if how not in ("max", "mean", "topk"):
        raise InputError(f"unknown aggregation {how!r} (max, mean or topk)")
    if probs.shape[0] == 0:  # a dataset without cells: no image scores
        return pd.DataFrame(
            np.zeros((0, probs.shape[1])), index=pd.Index([], name="ID", dtype=str), columns=cols
        )
    uniq, inv = np.unique(ids.astype(str), return_inverse=True)
    out = np.zeros((uniq.size, probs.shape[1]))
    order = np.argsort(inv, kind="stable")
    starts = np.searchsorted(inv[order], np.arange(uniq.size))
    for i, (s, e) in enumerate(zip(starts, np.append(starts[1:], order.size), strict=True)):
        p = probs[order[s:e]]
        if how == "max":
            out[i] = p.max(0)
        elif how == "mean":
            out[i] = p.mean(0)
        else:
            kk = min(k, p.shape[0])
            out[i] = np.sort(p, 0)[-kk:].mean(0)
    return pd.DataFrame(out, index=pd.Index(uniq, name="ID"), columns=cols)


def label_images(scores: np.ndarray, thresholds: np.ndarray, negative: int | None = None) -> list[list[int]]:
    """Image labels: classes with score >= threshold; Negative only (and always) when no other passes.

    Examples
    --------
    >>> label_images(np.array([[0.9, 0.1, 0.8], [0.1, 0.2, 0.3]]), np.array([0.5, 0.5, 0.5]), negative=2)
    [[0], [2]]
    """
    scores = np.asarray(scores)
    passed = scores >= np.asarray(thresholds)[None, :]
    out = []
    for row in passed:
        labels = [int(c) for c in np.flatnonzero(row) if c != negative]
        if not labels and negative is not None:
            labels = [negative]
        out.append(labels)
    return out


def read_image_scores(path: str | os.PathLike, n_classes: int) -> pd.DataFrame:
    """Image-level scores CSV (``ID`` + a column per class id ``"0"``..) as a DataFrame indexed by ID.

    Raises
    ------
    ValueError
        Naming the file, for a missing ID/class column, a repeated ID or a value outside [0, 1].
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image scores file not found")
    df = pd.read_csv(path, dtype={"ID": str})
    cols = [str(c) for c in range(n_classes)]
    missing = [c for c in ["ID", *cols] if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing} (expected ID,0,1,...,{n_classes - 1})")
    if df["ID"].duplicated().any():
        raise InputError(f"{path}: repeated ID {df['ID'][df['ID'].duplicated()].iloc[0]!r}")
    values = df[cols].to_numpy(np.float64)
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise InputError(f"{path}: scores must be probabilities in [0, 1]")
    return pd.DataFrame(values, index=pd.Index(df["ID"], name="ID"), columns=cols)


def blend(
    cell: np.ndarray, image_ids: Sequence[str], image_scores: pd.DataFrame, a: float = 1.0, b: float = 1.0
) -> np.ndarray:
    """Confidence ``cell ** a * image ** b`` with each cell's image's scores.

    Examples
    --------
    >>> img = pd.DataFrame([[0.5, 1.0]], index=["x"], columns=["0", "1"])
    >>> blend(np.array([[0.4, 0.4]]), ["x"], img).tolist()
    [[0.2, 0.4]]
    """
    missing = sorted(set(image_ids) - set(image_scores.index))
    if missing:
        raise InputError(f"{len(missing)} image(s) have no image-level scores, e.g. {missing[0]!r}")
    img = image_scores.loc[list(image_ids)].to_numpy(np.float64)
    return (np.asarray(cell, np.float64) ** a) * (img**b)


# --------------------------------------------------------------------------- the whole run
def _write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, df.to_csv(index=False, float_format="%.6g").encode())


def predict_table(
    checkpoint: str | os.PathLike, cells_dir: str | os.PathLike, config: PredictConfig
) -> tuple[pd.DataFrame, dict]:
    """Cell-score table of a cell dataset (model inference); returns ``(table, checkpoint dict)``."""
    from hpacell.cellcrops.dataset import CellDataset
    from hpacell.classifier.training.data import default_workers, eval_transform

    device = resolve_device(config.device)
    model, ckpt = load_checkpoint(checkpoint, device, kind="cells")
    feats = list(ckpt.get("feature_columns") or [])
    ds = CellDataset(
        cells_dir, transform=eval_transform(int(ckpt["crop_size"])), feature_columns=feats or None
    )
    if list(ds.classes) != list(ckpt["classes"]) and len(ds.classes) == len(ckpt["classes"]):
        log.warning("%s: class names differ from the checkpoint's; using the checkpoint's", cells_dir)
    missing = [c for c in feats if c not in ds.table.columns]
    if missing:
        raise InputError(f"{cells_dir}: cells table lacks feature column(s) {missing} the model needs")
    workers = default_workers() if config.num_workers is None else config.num_workers
    log.info("scoring %d cells on %s (tta=%s)", len(ds), device, config.tta)
    index, probs, emb = score_cells(
        model,
        ds,
        batch_size=config.batch_size,
        num_workers=workers,
        device=device,
        tta=config.tta,
        embeddings=config.embeddings,
    )
    keep = ["image_id", "cell", "cell_uid", "x0", "y0", "x1", "y1", "image_width", "image_height"]
    table = ds.table.iloc[index][[c for c in keep if c in ds.table.columns]].reset_index(drop=True)
    table["image_id"] = table["image_id"].astype(str)
    for c in range(probs.shape[1]):
        table[str(c)] = probs[:, c]
    if emb is not None:
        table["embedding"] = list(emb)
    return table, ckpt


def cells_identity(cells_dir: str | os.PathLike) -> dict[str, Any]:
    """What identifies a cell dataset's content, cheaply: digests of ``cells.parquet`` and of
    ``meta.json`` (less its time stamp and source paths), and each crop shard's name, size and mtime."""
    d = Path(cells_dir)
    table, meta = d / "cells.parquet", d / "meta.json"
    ident: dict[str, Any] = {"cells": file_digest(table) if table.is_file() else None, "meta": None}
    if meta.is_file():
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except ValueError:
            info = meta.read_text(encoding="utf-8", errors="replace")
        if isinstance(info, dict):
            info = {k: v for k, v in info.items() if k not in ("written", "sources")}
        ident["meta"] = fingerprint(info)
    shards = sorted(d.glob("shard-*.npy"))
    ident["shards"] = fingerprint([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in shards])
    return ident


def scores_stamp(checkpoint: str | os.PathLike, cells_dir: str | os.PathLike, config: PredictConfig) -> dict:
    """The inputs and options that make ``cell_scores.parquet``: checkpoint content, cells, TTA, embeddings.

    The other options (aggregation, thresholds, blending, submission) only shape the files
    recomputed from the cell scores on every run.
    """
    return {
        "checkpoint": file_digest(checkpoint),
        **{f"dataset_{k}": v for k, v in cells_identity(cells_dir).items()},
        "tta": config.tta,
        "embeddings": config.embeddings,
    }


def run_predict(
    checkpoint: str | os.PathLike,
    cells_dir: str | os.PathLike,
    out: str | os.PathLike,
    config: PredictConfig,
    masks_dir: str | os.PathLike | None = None,
    ids_path: str | os.PathLike | None = None,
    image_scores_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    on_change: Literal["refuse", "recompute"] = "refuse",
    failures: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The whole of ``hpacell predict`` on a cell dataset; returns a summary (also ``summary.json``).

    A finished ``cell_scores.parquet`` is reused only when its stamp
    (``cell_scores.stamp.json``: :func:`scores_stamp`, the checkpoint's content,
    the cell dataset and the TTA/embedding options) equals this run's; the
    checkpoint is then read only for its classes and thresholds. When they differ
    the run is refused (``on_change="refuse"``) or the scores recomputed
    (``"recompute"``, as the demo does with its own folder); ``overwrite``
    always recomputes. ``failures`` ({ID: error}, e.g. images that could not be
    cropped) are recorded in the summary's ``failed`` with the submission's.
    """
    out = Path(out)
    ckpt = read_checkpoint(checkpoint, kind="cells")
    scores_path, stamp_path = out / CELL_SCORES, out / SCORES_STAMP
    stamp = scores_stamp(checkpoint, cells_dir, config)
    reuse = (
        scores_path.is_file()
        and not overwrite
        and check_stamp(stamp_path, stamp, overwrite=on_change == "recompute", what="cell scores")
    )
    out.mkdir(parents=True, exist_ok=True)
    if reuse:
        log.info(
            "%s: same checkpoint, cells and options: reusing the cell scores (--overwrite to recompute)",
            scores_path,
        )
        table = pd.read_parquet(scores_path)
    else:
        if scores_path.is_file():
            log.info("%s: recomputing the cell scores", scores_path)
        table, ckpt = predict_table(checkpoint, cells_dir, config)
        stamp_path.unlink(missing_ok=True)  # a kill while the scores are rewritten leaves no stale stamp
        write_parquet(table, scores_path)
        write_stamp(stamp_path, stamp)
    taxonomy = get_taxonomy(ckpt.get("taxonomy", HPA2021.name))
    n_out = sum(1 for c in table.columns if c.isdigit())
    probs = table[[str(c) for c in range(n_out)]].to_numpy(np.float32)
    probs = with_negative(probs, taxonomy.n_classes, taxonomy.negative)
    C = probs.shape[1]
    thresholds = np.asarray(ckpt.get("thresholds") or [0.5] * n_out, np.float64)
    if thresholds.size == C - 1:
        thresholds = np.append(thresholds, 0.5)  # derived Negative column
    if config.threshold is not None:
        thresholds = np.full(C, config.threshold)

    ids = table["image_id"].astype(str).to_numpy()
    img = aggregate(ids, probs, config.agg, config.topk)
    _write_csv(img.reset_index(), out / IMAGE_SCORES)
    labels = label_images(img.to_numpy(), thresholds, taxonomy.negative)
    write_labels(out / IMAGE_LABELS, dict(zip(img.index, labels, strict=True)), taxonomy)

    conf = probs.astype(np.float64)
    if image_scores_path is not None:
        conf = blend(
            conf, ids, read_image_scores(image_scores_path, C), config.cell_power, config.image_power
        )
        blended = pd.DataFrame(conf, columns=[f"conf_{c}" for c in range(C)])
        table = pd.concat(
            [table.drop(columns=[c for c in table.columns if c.startswith("conf_")]), blended], axis=1
        )
        write_parquet(table, scores_path)
    else:
        if any(c.startswith("conf_") for c in table.columns):  # blended confidences of an earlier run
            table = table.drop(columns=[c for c in table.columns if c.startswith("conf_")])
            write_parquet(table, scores_path)
        if config.cell_power != 1.0:
            conf = conf**config.cell_power

    summary: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "n_cells": int(len(table)),
        "n_images_with_cells": int(img.shape[0]),
        "thresholds": thresholds.tolist(),
        "label_counts": np.bincount([k for lab in labels for k in lab], minlength=C).tolist(),
    }
    masks_dir = masks_dir or masks_from_meta(cells_dir)
    if taxonomy.name != HPA2021.name:
        log.warning("taxonomy %s: no Kaggle 2021 submission written", taxonomy.name)
    elif masks_dir is None:
        log.warning("no cell masks (--masks, or sources.masks in meta.json): no submission written")
    else:
        summary["submission"] = build_submission(
            table, conf, masks_dir, out / SUBMISSION, ids_path, config.min_confidence, config.workers
        )
    summary["failed"] = {**(failures or {}), **summary.get("submission", {}).get("failed", {})}
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    return summary


def masks_from_meta(cells_dir: str | os.PathLike | None) -> Path | None:
    """The masks folder a cell dataset was cropped from, if its ``meta.json`` records one.

    Recorded paths are relative to ``meta.json`` (see
    :func:`hpacell.cellcrops.shards.recorded_source`).

    Raises
    ------
    InputError
        ``meta.json`` records a masks folder that does not exist (moved or deleted).
    """
    from hpacell.cellcrops.shards import recorded_source

    if cells_dir is None:
        return None
    path = recorded_source(cells_dir, "masks")
    if path is not None and not path.is_dir():
        raise InputError(
            f"{Path(cells_dir) / 'meta.json'}: records the masks folder {path}, which does not exist "
            "(moved?); pass --masks"
        )
    return path
