"""Predict with an image-level model (``hpacell predict-images``): scores, labels, the 2018 submission.

Outputs in ``PRED``:

* ``image_scores.csv``: ``ID`` + one column per class id (``"0"`` .. ``"C-1"``),
  sigmoid probabilities (averaged over the image and its horizontal and vertical
  flips with ``tta``) -- the file ``hpacell predict --image-scores`` blends into
  each cell's confidence;
* ``image_labels.csv``: the label table of the model's taxonomy (2021
  ``ID,Label`` with ``|``, 2018 ``Id,Target`` with spaces): classes whose score
  >= the checkpoint's per-class threshold (tuned for F1 on validation;
  ``threshold`` overrides). hpa2021: Negative only, and always, when no other
  class passes; hpa2018 (no Negative class): the top class when none passes;
* ``submission.csv``: hpa2018: ``Id,Predicted`` (space-separated class ids), the
  2018 competition format; hpa2021: ``ID,Label`` (``|``). With ``ids_path`` (a
  sample submission, or any CSV whose first column is the ID) its IDs fix the
  rows and their order, and each must have an image;
* ``failures.csv`` (``ID,error``) for images that could not be read (left out).

Scoring reuses :func:`hpacell.classifier.scoring.predict.score_cells` (the cell predictor's
batched inference and flip TTA) over a :class:`hpacell.classifier.images.data.ImageDataset`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

from hpacell.cellcrops.labels import Taxonomy, get_taxonomy, write_labels
from hpacell.classifier.metrics import f1_report
from hpacell.classifier.model import CheckpointError
from hpacell.classifier.scoring.predict import (
    IMAGE_LABELS,
    IMAGE_SCORES,
    SUBMISSION,
    label_images,
    score_cells,
)
from hpacell.utils.errors import InputError
from hpacell.utils.files import atomic_write_bytes
from hpacell.utils.tables import read_id_list, write_failures

log = logging.getLogger(__name__)


def score_images(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    tta: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(probs (N, C), ok (N,) bool)`` in dataset order; ``ok`` False for unreadable images (rows NaN)."""
    index, probs, _ = score_cells(
        model, dataset, batch_size=batch_size, num_workers=num_workers, device=device, tta=tta
    )
    ok = index >= 0
    out = np.full((len(dataset), probs.shape[1]), np.nan, np.float32)
    out[index[ok]] = probs[ok]
    return out, np.isfinite(out).all(1)


def labels_from_scores(scores: np.ndarray, thresholds: np.ndarray, taxonomy: Taxonomy) -> list[list[int]]:
    """Classes with score >= threshold; Negative rule of :func:`label_images`, else the top class if none.

    Examples
    --------
    >>> from hpacell.cellcrops.labels import HPA2018
    >>> labels_from_scores(np.array([[0.9, 0.2], [0.1, 0.3]]), np.full(2, 0.5), HPA2018)
    [[0], [1]]
    """
    scores = np.asarray(scores, np.float64)
    out = label_images(scores, np.asarray(thresholds), taxonomy.negative)
    return [lab if lab else [int(np.argmax(s))] for lab, s in zip(out, scores, strict=True)]


def write_image_scores(path: str | os.PathLike, ids: Sequence[str], probs: np.ndarray) -> Path:
    """``ID`` + a column per class id, atomically (the format ``predict --image-scores`` reads)."""
    df = pd.DataFrame(np.asarray(probs, np.float64), columns=[str(c) for c in range(probs.shape[1])])
    df.insert(0, "ID", list(ids))
    return atomic_write_bytes(path, df.to_csv(index=False, float_format="%.6g").encode())


def write_image_submission(
    path: str | os.PathLike, ids: Sequence[str], labels: Sequence[Sequence[int]], taxonomy: Taxonomy
) -> Path:
    """hpa2018: ``Id,Predicted`` (space-separated); hpa2021: ``ID,Label`` (``|``); atomically."""
    from hpacell.cellcrops.labels import HPA2018, format_labels

    header = (
        "Id,Predicted" if taxonomy.name == HPA2018.name else f"{taxonomy.id_column},{taxonomy.label_column}"
    )
    lines = [header] + [f"{i},{format_labels(lab, taxonomy)}" for i, lab in zip(ids, labels, strict=True)]
    return atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def validation_report(
    checkpoint: str | os.PathLike,
    val: Dataset,
    out: str | os.PathLike,
    *,
    tta: bool = False,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Score the validation images with ``checkpoint``; macro/sample-F1 at 0.5 and at its tuned thresholds.

    Writes ``out/val_scores.csv`` and ``out/val_report.json``; ``val`` is an
    :class:`hpacell.classifier.images.data.ImageDataset` (its ``ids`` and ``labels`` are used).
    """
    from hpacell.classifier.metrics import per_class_ap
    from hpacell.classifier.model import load_checkpoint

    out = Path(out)
    model, ckpt = load_checkpoint(checkpoint, device, kind="images")
    probs, ok = score_images(model, val, batch_size=batch_size, device=device, tta=tta)
    y = np.asarray(val.labels)[ok]
    p = probs[ok]
    thr = np.asarray(ckpt["thresholds"], np.float64)
    half, tuned = f1_report(y, p >= 0.5), f1_report(y, p >= thr[None, :])
    ap = per_class_ap(y, p)
    report = {
        "checkpoint": str(checkpoint),
        "epoch": int(ckpt["epoch"]),
        "tta": tta,
        "n_images": int(ok.sum()),
        "macro_f1_at_0.5": half["macro_f1"],
        "sample_f1_at_0.5": half["sample_f1"],
        "macro_f1_tuned": tuned["macro_f1"],
        "sample_f1_tuned": tuned["sample_f1"],
        "map": float(np.nanmean(ap)) if np.isfinite(ap).any() else None,
        "thresholds": thr.tolist(),
    }
    write_image_scores(out / "val_scores.csv", [i for i, k in zip(val.ids, ok, strict=True) if k], p)
    atomic_write_bytes(out / "val_report.json", json.dumps(report, indent=2).encode())
    log.info(
        "validation (%d images, tta=%s): macro-F1 %.3f at 0.5, %.3f tuned; sample-F1 %.3f / %.3f",
        report["n_images"],
        tta,
        report["macro_f1_at_0.5"],
        report["macro_f1_tuned"],
        report["sample_f1_at_0.5"],
        report["sample_f1_tuned"],
    )
    return report


class PredictImagesConfig(BaseModel):
    """Options of ``hpacell predict-images`` (strict: unknown keys are errors).

    Examples
    --------
    >>> PredictImagesConfig(tta=True).batch_size
    32
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    tta: bool = Field(False, description="average over the image and its horizontal and vertical flips")
    threshold: float | None = Field(None, ge=0, le=1, description="one threshold for all classes")
    batch_size: int = Field(32, ge=1)
    num_workers: int | None = Field(None, ge=0, description="DataLoader workers (default: CPU-based)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    cache_dir: str | None = Field(None, description="use/fill a downsized-image cache (e.g. RUN/cache)")
    cache_workers: int = Field(1, ge=1, description="processes building the cache")


def predict_images(
    checkpoint: str | os.PathLike,
    images_dir: str | os.PathLike,
    out: str | os.PathLike,
    config: PredictImagesConfig | None = None,
    *,
    ids_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The whole of ``hpacell predict-images``; returns a summary (also ``PRED/summary.json``).

    Images are read and downsized on the fly in DataLoader workers, or through
    the cache of :func:`hpacell.classifier.images.data.build_cache` when ``config.cache_dir`` is
    given (e.g. the training run's ``RUN/cache``). ``ids_path`` (an ID list, e.g. a sample
    submission) fixes the rows and their order of ``submission.csv``; each ID needs an image.
    """
    cfg = config or PredictImagesConfig()
    from hpacell.classifier.images.data import ChannelTransform, ImageDataset, build_cache, load_image
    from hpacell.classifier.model import load_checkpoint
    from hpacell.classifier.scoring.predict import resolve_device
    from hpacell.classifier.training.data import default_workers, eval_transform
    from hpacell.segmentation.io import find_image_sets

    out = Path(out)
    dev = resolve_device(cfg.device)
    model, ckpt = load_checkpoint(checkpoint, dev, kind="images")
    tax = get_taxonomy(ckpt.get("taxonomy", "hpa2021"))
    channels = list(ckpt["config"].get("channels") or ["red", "green", "blue", "yellow"])
    size = int(ckpt["crop_size"])
    if int(ckpt.get("in_chans", 4)) != len(channels):
        raise CheckpointError(
            f"{checkpoint}: in_chans {ckpt.get('in_chans')} does not match channels {channels}"
        )
    sets = find_image_sets(images_dir)
    if ids_path is not None:
        ids = read_id_list(ids_path, repeats="error")
        missing = [i for i in ids if i not in sets]
        if missing:
            raise InputError(
                f"{ids_path}: {len(missing)} ID(s) have no image set in {images_dir}, e.g. {missing[0]!r}"
            )
    else:
        ids = list(sets)
    if not ids:
        raise InputError(f"{images_dir}: no image sets found")
    transform = ChannelTransform(eval_transform(size), channels)
    failures: dict[str, str] = {}
    if cfg.cache_dir is not None:
        folder, failures = build_cache(sets, ids, cfg.cache_dir, size, channels, cfg.cache_workers)
        todo = [i for i in ids if i not in failures]
        ds = ImageDataset(todo, n_classes=len(ckpt["classes"]), cache=folder, transform=transform)
    else:
        todo = ids
        ds = ImageDataset(
            todo,
            n_classes=len(ckpt["classes"]),
            sets=sets,
            size=size,
            channels=channels,
            transform=transform,
            safe=True,
        )
    workers = default_workers() if cfg.num_workers is None else cfg.num_workers
    log.info(
        "scoring %d images (%d px, %s) on %s, tta=%s",
        len(ds),
        size,
        "".join(c[0] for c in channels),
        dev,
        cfg.tta,
    )
    probs, ok = score_images(
        model, ds, batch_size=cfg.batch_size, num_workers=workers, device=dev, tta=cfg.tta
    )
    for i in np.flatnonzero(~ok):  # find out why (rare): read again here
        try:
            load_image(sets[todo[i]], size, channels)
            failures[todo[i]] = "unknown error while loading"
        except Exception as e:  # noqa: BLE001 - recorded, the others go on
            failures[todo[i]] = f"{type(e).__name__}: {e}"
    done = [i for i, k in zip(todo, ok, strict=True) if k]
    probs = probs[ok]

    C = probs.shape[1]
    thresholds = np.asarray(ckpt.get("thresholds") or [0.5] * C, np.float64)
    if cfg.threshold is not None:
        thresholds = np.full(C, float(cfg.threshold))
    out.mkdir(parents=True, exist_ok=True)
    write_image_scores(out / IMAGE_SCORES, done, probs)
    labels = labels_from_scores(probs, thresholds, tax)
    write_labels(out / IMAGE_LABELS, dict(zip(done, labels, strict=True)), tax)
    by_id = dict(zip(done, labels, strict=True))
    sub_ids = ids if ids_path is not None else done
    write_image_submission(out / SUBMISSION, sub_ids, [by_id.get(i, []) for i in sub_ids], tax)
    if failures:
        write_failures(out / "failures.csv", failures)
    summary = {
        "checkpoint": str(checkpoint),
        "taxonomy": tax.name,
        "channels": channels,
        "size": size,
        "tta": cfg.tta,
        "n_images": len(done),
        "n_failed": len(failures),
        "failures": failures,
        "thresholds": thresholds.tolist(),
        "label_counts": np.bincount([k for lab in labels for k in lab], minlength=C).tolist(),
    }
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    return summary
