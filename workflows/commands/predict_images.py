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


def command(
    checkpoint: Path = typer.Argument(..., help="RUN/best.pt of hpacell train-images."),
    images: Path = typer.Argument(..., help="Folder of <ID>_{red,green,blue,yellow}.png image sets."),
    out: Path = typer.Option(..., "--out", "-o", help="Prediction folder."),
    ids: Path = typer.Option(None, "--ids", help="Sample submission fixing the IDs and their order."),
    tta: bool = typer.Option(False, "--tta/--no-tta", help="Average over horizontal and vertical flips."),
    threshold: float = typer.Option(None, "--threshold", min=0.0, max=1.0, help="One threshold for all."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    num_workers: int = typer.Option(None, "--num-workers", min=0, help="DataLoader workers."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    cache: Path = typer.Option(None, "--cache", help="Use/fill a downsized-image cache (e.g. RUN/cache)."),
    cache_workers: int = typer.Option(1, "--cache-workers", min=1, help="Processes building the cache."),
) -> None:
    from hpacell.classifier.images.predict import predict_images

    try:
        summary = predict_images(
            checkpoint,
            images,
            out,
            ids_path=ids,
            tta=tta,
            threshold=threshold,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            cache_dir=cache,
            cache_workers=cache_workers,
        )
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(json.dumps({k: v for k, v in summary.items() if k not in ("thresholds", "failures")}))
    if summary["n_failed"]:
        for k, v in summary["failures"].items():
            typer.echo(f"{k}: {v}", err=True)
        raise typer.Exit(code=1)
