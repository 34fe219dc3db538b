"""Score whole images with an image-level model (hpacell train-images): scores, labels, submission.

Writes PRED/image_scores.csv (ID + one probability column per class id; what `hpacell predict
--image-scores` blends into cell scores), PRED/image_labels.csv (taxonomy's label table, tuned
per-class thresholds), PRED/submission.csv (2018: Id,Predicted; 2021: ID,Label) and PRED/summary.json.
Unreadable images are listed in PRED/failures.csv and the command exits 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from hpacell.workflows.options import (
    BatchSize,
    Checkpoint,
    Device,
    IdList,
    ImagesDir,
    NumWorkers,
    OutDir,
    Tta,
)


def command(
    checkpoint: Checkpoint,
    images: ImagesDir,
    out: OutDir,
    ids: IdList = None,
    tta: Tta = False,
    threshold: float = typer.Option(None, "--threshold", min=0.0, max=1.0, help="One threshold for all."),
    batch_size: BatchSize = 32,
    num_workers: NumWorkers = None,
    device: Device = "auto",
    cache: Path = typer.Option(None, "--cache", help="Use/fill a downsized-image cache (e.g. RUN/cache)."),
    cache_workers: int = typer.Option(1, "--cache-workers", min=1, help="Processes building the cache."),
) -> None:
    from hpacell.classifier.images.predict import PredictImagesConfig, predict_images
    from hpacell.classifier.model import load_checkpoint
    from hpacell.utils.outputs import claim_folder
    from hpacell.workflows.config import load_config

    cfg = load_config(
        PredictImagesConfig,
        tta=tta,
        threshold=threshold,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        cache_dir=None if cache is None else str(cache),
        cache_workers=cache_workers,
    )
    load_checkpoint(checkpoint, kind="images")  # a wrong file is refused before anything is written
    claim_folder(out, "predict-images")
    summary = predict_images(checkpoint, images, out, cfg, ids_path=ids)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k not in ("thresholds", "failures")}))
    if summary["n_failed"]:
        for k, v in summary["failures"].items():
            typer.echo(f"{k}: {v}", err=True)
        raise typer.Exit(code=1)
