"""Score every cell with a trained cell classifier; write image scores/labels and the Kaggle 2021 submission.

Input: a cell dataset (--cells, from `hpacell crop`) or --images + --masks (cropped on the fly into
PRED/cells with the checkpoint's crop size). Writes PRED/cell_scores.parquet (one probability per class,
columns "0".."18"), PRED/image_scores.csv (--agg max|mean|topk), PRED/image_labels.csv (per-class
thresholds from the checkpoint), PRED/submission.csv (needs the cell masks: --masks, or the ones the
dataset was cropped from), PRED/report/*.png, PRED/summary.json and PRED/predict.yaml. A rerun reuses
PRED/cell_scores.parquet only when its stamp (checkpoint content, cells, --tta, --embeddings) matches;
otherwise it refuses, or recomputes with --overwrite. Images that fail (crop, mask encoding, an --ids ID
without an image) are listed under "failed" in summary.json and make the exit code 1.
Negative (18): the model's Negative probability (1 - max of the others for a model without one); an image
is Negative only when no other class passes. --image-scores CSV (ID,"0".."18") blends: cell^a x image^b.
--truth (as `hpacell evaluate --truth`) also scores the submission: PRED/evaluation.json and the printed
mAP/mAP_strict use the IoU of --match (mask: Kaggle's stated metric; box: the organisers' re-scoring).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from hpacell.workflows.options import (
    BatchSize,
    Checkpoint,
    ConfigFile,
    Device,
    Match,
    MatchMode,
    NumWorkers,
    OutDir,
    Overwrite,
    Tta,
)


def command(
    checkpoint: Checkpoint,
    out: OutDir,
    cells: Path = typer.Option(None, "--cells", help="Cell dataset folder (hpacell crop output)."),
    images: Path = typer.Option(None, "--images", help="Image folder (crop on the fly; needs --masks)."),
    masks: Path = typer.Option(
        None, "--masks", "-m", help="Cell mask folder (<ID>_cellmask.png) for crops/submission."
    ),
    ids: Path = typer.Option(
        None,
        "--ids",
        help="ID list (e.g. the sample submission): the IDs and order to write (sizes: its or the masks).",
    ),
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
    tta: Tta = None,
    embeddings: bool = typer.Option(None, "--embeddings", help="Store each cell's embedding."),
    min_confidence: float = typer.Option(None, "--min-confidence", help="Leave out triples below this."),
    batch_size: BatchSize = None,
    num_workers: NumWorkers = None,
    device: Device = None,
    workers: int = typer.Option(
        None, "--workers", "-j", min=1, help="Processes for cropping and mask encoding."
    ),
    crop_size: int = typer.Option(None, "--crop-size", help="On-the-fly crop size (default: checkpoint's)."),
    mask_background: bool = typer.Option(
        True,
        "--mask-background/--no-mask-background",
        help="On-the-fly crops: as the training cells were cut.",
    ),
    report: bool = typer.Option(True, "--report/--no-report", help="Write PRED/report/*.png."),
    truth: Path = typer.Option(
        None, "--truth", "-t", help="Also evaluate the submission: truth folder or CSV (as evaluate)."
    ),
    match: Match = MatchMode.mask,
    config: ConfigFile = None,
    overwrite: Overwrite = False,
) -> None:
    import logging

    from hpacell.classifier.model import load_checkpoint
    from hpacell.classifier.scoring.predict import PredictConfig, run_predict
    from hpacell.classifier.scoring.report import make_report
    from hpacell.utils.errors import InputError
    from hpacell.utils.outputs import claim_folder
    from hpacell.workflows.config import load_config, save_config

    log = logging.getLogger("hpacell.predict")

    if (cells is None) == (images is None):
        raise InputError("give either --cells or --images (with --masks)")
    if images is not None and masks is None:
        raise InputError("--images needs --masks")
    truth_cells = None
    if truth is not None:  # read first: a bad truth fails before any inference
        from hpacell.classifier.scoring.evaluate import read_truth

        truth_cells = read_truth(truth)
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
    _, ckpt = load_checkpoint(checkpoint, kind="cells")  # a wrong file is refused before anything is written
    claim_folder(out, "predict")
    crop_failed: dict[str, str] = {}
    if images is not None:
        from hpacell.cellcrops.shards import CropOptions, build_cell_dataset

        size = crop_size or int(ckpt["crop_size"])
        cells = out / "cells"
        summary = build_cell_dataset(
            images,
            masks,
            cells,
            options=CropOptions(size=size, mask_background=mask_background),
            taxonomy=ckpt.get("taxonomy", "hpa2021"),
            workers=cfg.workers,
            overwrite=overwrite,  # other images or masks: refused, or re-cropped
        )
        crop_failed = {k: f"crop: {v}" for k, v in summary.failed.items()}
        for image_id, err in sorted(summary.failed.items()):
            log.error("crop failed: %s: %s", image_id, err)
    result = run_predict(
        checkpoint, cells, out, cfg, masks, ids, image_scores, overwrite, failures=crop_failed
    )
    save_config(cfg, out / "predict.yaml")  # the options that made the outputs now in PRED
    if report:
        import pandas as pd

        from hpacell.cellcrops.shards import recorded_source
        from hpacell.classifier.scoring.predict import CELL_SCORES, masks_from_meta

        meta = json.loads((cells / "meta.json").read_text())
        table = pd.read_parquet(out / CELL_SCORES)
        imgs = images or recorded_source(cells, "images")
        result["report"] = len(
            make_report(out, cells, table, meta["classes"], imgs, masks or masks_from_meta(cells))
        )
    sub = result.get("submission") or {}
    failed = result["failed"]
    printed = {
        "out": str(out),
        "cells": result["n_cells"],
        "images_with_cells": result["n_images_with_cells"],
        "submission_images": sub.get("n_images"),
        "failed": len(failed),
    }
    if truth_cells is not None:
        from hpacell.cellcrops.labels import HPA2021
        from hpacell.classifier.scoring.evaluate import evaluate
        from hpacell.classifier.scoring.predict import SUBMISSION
        from hpacell.classifier.scoring.submission import read_submission
        from hpacell.utils.files import write_json

        if not sub:
            raise InputError("--truth: no submission was written (needs the cell masks, hpa2021 classes)")
        ev = evaluate(
            read_submission(out / SUBMISSION, n_classes=len(HPA2021.classes)), truth_cells, match=match.value
        )
        figures = ev.summary()
        write_json(out / "evaluation.json", figures)
        printed |= {k: figures[k] for k in ("match", "mAP", "mAP_strict", "macro_f1", "sample_f1")}
    typer.echo(json.dumps(printed))
    if failed:  # every image that could not be cropped, encoded or found makes the exit code 1
        for image_id, err in sorted(failed.items()):
            typer.echo(f"failed: {image_id}: {err}", err=True)
        raise typer.Exit(code=1)
