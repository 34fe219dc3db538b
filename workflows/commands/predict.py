"""Score every cell with a trained cell classifier; write image scores/labels and the Kaggle 2021 submission.

Input: a cell dataset (--cells, from `hpacell crop`) or --images + --masks (cropped on the fly into
PRED/cells with the checkpoint's crop size). Writes PRED/cell_scores.parquet (one probability per class,
columns "0".."18"), PRED/image_scores.csv (--agg max|mean|topk), PRED/image_labels.csv (per-class
thresholds from the checkpoint), PRED/submission.csv (needs the cell masks: --masks, or the ones the
dataset was cropped from), PRED/report/*.png, PRED/summary.json and PRED/predict.yaml.
Negative (18): the model's Negative probability (1 - max of the others for a model without one); an image
is Negative only when no other class passes. --image-scores CSV (ID,"0".."18") blends: cell^a x image^b.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def command(
    checkpoint: Path = typer.Argument(..., help="best.pt / last.pt of hpacell train-cells."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder PRED."),
    cells: Path = typer.Option(None, "--cells", help="Cell dataset folder (hpacell crop output)."),
    images: Path = typer.Option(None, "--images", help="Image folder (crop on the fly; needs --masks)."),
    masks: Path = typer.Option(
        None, "--masks", help="Cell mask folder (<ID>_cellmask.png) for crops/submission."
    ),
    ids: Path = typer.Option(None, "--ids", help="Sample submission: the IDs, order and sizes to write."),
    image_scores: Path = typer.Option(None, "--image-scores", help="Image-level scores CSV to blend with."),
    cell_power: float = typer.Option(
        None, "--cell-power", min=0.0, help="a in cell^a x image^b (default 1)."
    ),
    image_power: float = typer.Option(
        None, "--image-power", min=0.0, help="b in cell^a x image^b (default 1)."
    ),
    agg: str = typer.Option(None, "--agg", help="Image score from cells: max (default), mean or topk."),
    topk: int = typer.Option(None, "--topk", min=1, help="k of --agg topk (default 3)."),
    threshold: float = typer.Option(
        None, "--threshold", help="One threshold for all classes (default: tuned)."
    ),
    tta: bool = typer.Option(None, "--tta/--no-tta", help="Average over horizontal/vertical flips."),
    embeddings: bool = typer.Option(None, "--embeddings", help="Store each cell's embedding."),
    min_confidence: float = typer.Option(None, "--min-confidence", help="Leave out triples below this."),
    batch_size: int = typer.Option(None, "--batch-size", min=1),
    num_workers: int = typer.Option(None, "--num-workers", min=0, help="DataLoader workers."),
    device: str = typer.Option(None, "--device", help="auto (default), cpu, cuda."),
    workers: int = typer.Option(None, "--workers", min=1, help="Processes for cropping and mask encoding."),
    crop_size: int = typer.Option(None, "--crop-size", help="On-the-fly crop size (default: checkpoint's)."),
    mask_background: bool = typer.Option(
        True,
        "--mask-background/--no-mask-background",
        help="On-the-fly crops: as the training cells were cut.",
    ),
    report: bool = typer.Option(True, "--report/--no-report", help="Write PRED/report/*.png."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML with the options above."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute the cell scores even if present."),
) -> None:
    import logging

    import torch
    from hpacell.classifier.scoring.predict import PredictConfig, run_predict
    from hpacell.classifier.scoring.report import make_report
    from hpacell.workflows.config import ConfigError, load_config, save_config

    log = logging.getLogger("hpacell.predict")

    def fail(msg: str) -> None:
        typer.echo(f"hpacell predict: error: {msg}", err=True)
        raise typer.Exit(code=1)

    if (cells is None) == (images is None):
        fail("give either --cells or --images (with --masks)")
    if images is not None and masks is None:
        fail("--images needs --masks")
    try:
        cfg = load_config(
            PredictConfig,
            config,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            tta=tta,
            embeddings=embeddings,
            agg=agg,
            topk=topk,
            threshold=threshold,
            cell_power=cell_power,
            image_power=image_power,
            min_confidence=min_confidence,
            workers=workers,
        )
    except ConfigError as e:
        fail(str(e))
    try:
        if images is not None:
            from hpacell.cellcrops.shards import CropOptions, build_cell_dataset

            ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
            size = crop_size or int(ckpt["crop_size"])
            cells = out / "cells"
            summary = build_cell_dataset(
                images,
                masks,
                cells,
                options=CropOptions(size=size, mask_background=mask_background),
                taxonomy=ckpt.get("taxonomy", "hpa2021"),
                workers=cfg.workers,
            )
            for image_id, err in sorted(summary.failed.items()):
                log.error("crop failed: %s: %s", image_id, err)
        save_config(cfg, out / "predict.yaml")
        result = run_predict(checkpoint, cells, out, cfg, masks, ids, image_scores, overwrite)
        if report:
            import pandas as pd
            from hpacell.classifier.scoring.predict import CELL_SCORES, masks_from_meta

            meta = json.loads((cells / "meta.json").read_text())
            src = meta.get("sources") or {}
            table = pd.read_parquet(out / CELL_SCORES)
            imgs = images or (Path(src["images"]) if src.get("images") else None)
            result["report"] = len(
                make_report(out, cells, table, meta["classes"], imgs, masks or masks_from_meta(cells))
            )
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        fail(str(e))
    sub = result.get("submission") or {}
    typer.echo(
        json.dumps(
            {
                "out": str(out),
                "cells": result["n_cells"],
                "images_with_cells": result["n_images_with_cells"],
                "submission_images": sub.get("n_images"),
                "failed": len(sub.get("failed", {})),
            }
        )
    )
    if sub.get("failed"):
        for image_id, err in sorted(sub["failed"].items()):
            typer.echo(f"failed: {image_id}: {err}", err=True)
        raise typer.Exit(code=1)
