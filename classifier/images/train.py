"""Train the image-level model (``hpacell train-images``) with the cell classifier's loop.

:func:`train_images` caches and splits the labelled images
(:func:`~hpacell.classifier.images.data.build_image_data`), trains with
:func:`~hpacell.classifier.training.train.fit` and scores the validation images
with the best checkpoint (:func:`~hpacell.classifier.images.predict.validation_report`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hpacell.classifier.images.data import ImageTrainConfig, build_image_data
from hpacell.classifier.images.predict import validation_report
from hpacell.classifier.training.train import check_resume, fit, resolve_device
from hpacell.utils.files import atomic_write_bytes
from hpacell.utils.tables import write_failures

__all__ = ["train_images"]


def train_images(
    images_dir: str | os.PathLike,
    labels_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: ImageTrainConfig,
    resume: bool = False,
) -> dict[str, Any]:
    """Train the image-level model; returns the summary of :func:`~hpacell.classifier.training.train.fit`
    plus ``validation``.

    Besides fit's outputs, writes ``RUN/val_scores.csv`` (validation image scores of ``best.pt``, with
    flip TTA when ``config.tta``), ``RUN/val_report.json`` (macro- and sample-F1 at 0.5 and at the tuned
    thresholds) and, when images failed, ``RUN/failures.csv``.
    """
    out = Path(out_dir)
    if resume:
        check_resume(out, config)  # before the cache and failures.csv are written
    cache_root = Path(config.cache_dir) if config.cache_dir else out / "cache"
    data = build_image_data(images_dir, labels_path, config, cache_root)
    failures = data.info["failed_images"]
    if failures:
        write_failures(out / "failures.csv", failures)
    summary = fit(data, config, out, resume=resume)
    if not summary:  # a distributed rank other than 0: rank 0 writes the outputs
        return summary
    report = validation_report(
        out / "best.pt",
        data.val,
        out,
        tta=config.tta,
        batch_size=config.batch_size,
        device=resolve_device(config.device),
    )
    summary["validation"] = report
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    return summary
