"""Train the image-level classifier on whole images (2018 or 2021 labels), downscaled to --size.

Writes RUN/best.pt, RUN/last.pt, RUN/config.yaml, RUN/metrics.jsonl, RUN/curves.png, RUN/summary.json,
RUN/val_scores.csv and RUN/val_report.json (macro- and sample-F1 at 0.5 and at the tuned thresholds);
downsized images are cached in RUN/cache (or --cache DIR). Settings: YAML (--config), overridden by
flags; --resume continues after the last finished epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from hpacell.workflows.options import (
    BackboneLrMult,
    ClassWeights,
    ConfigFile,
    Device,
    EmaDecay,
    Epochs,
    Focal,
    Fold,
    Folds,
    ImagesDir,
    Labels,
    LimitBatches,
    Lr,
    Model,
    NumWorkers,
    OutDir,
    Pretrained,
    Resume,
    Sampler,
    Schedule,
    Seed,
    TrainBatch,
    Tta,
    WarmupEpochs,
    config_overrides,
)


def command(
    images: ImagesDir,
    labels: Labels,
    out: OutDir,
    config: ConfigFile = None,
    size: int = typer.Option(None, "--size", min=16, help="Image side after downscaling (default 512)."),
    channels: str = typer.Option(None, "--channels", help="Subset, e.g. green, g+b+r, rgb (default all)."),
    model: Model = None,
    epochs: Epochs = None,
    batch_size: TrainBatch = None,
    lr: Lr = None,
    device: Device = None,
    resume: Resume = False,
    pretrained: Pretrained = None,
    sampler: Sampler = None,
    focal: Focal = None,
    class_weights: ClassWeights = None,
    augment: bool = typer.Option(None, "--augment/--no-augment", help="Flips, rot90, affine, intensity."),
    schedule: Schedule = None,
    warmup_epochs: WarmupEpochs = None,
    backbone_lr_mult: BackboneLrMult = None,
    ema_decay: EmaDecay = None,
    folds: Folds = None,
    fold: Fold = None,
    tta: Tta = None,
    cache: Path = typer.Option(None, "--cache", help="Downsized-image cache folder (default RUN/cache)."),
    cache_workers: int = typer.Option(None, "--cache-workers", min=1, help="Processes building the cache."),
    num_workers: NumWorkers = None,
    seed: Seed = None,
    limit_train_batches: LimitBatches = None,
) -> None:
    from hpacell.classifier.images.data import ImageTrainConfig, parse_channels
    from hpacell.classifier.images.train import train_images
    from hpacell.classifier.training.train import check_resume
    from hpacell.utils.outputs import claim_folder
    from hpacell.workflows.config import resolve_run_config, save_config

    given = {**locals(), "channels": parse_channels(channels) if channels is not None else None}
    renamed = {"size": "crop_size", "cache": "cache_dir"}
    flags = config_overrides(
        {k: v for k, v in given.items() if renamed.get(k, k) in ImageTrainConfig.model_fields}, renamed
    )
    cfg = resolve_run_config(ImageTrainConfig, config, out, resume, flags)
    if resume:
        check_resume(out, cfg)  # before config.yaml is rewritten: last.pt and the new options must agree
    claim_folder(out, "train-images", legacy=["last.pt"])  # only a new, empty or own run folder
    save_config(cfg, out / "config.yaml")
    summary = train_images(images, labels, out, cfg, resume=resume)
    best, val = summary.get("best", {}), summary.get("validation", {})
    keep = ("macro_f1_at_0.5", "macro_f1_tuned", "sample_f1_at_0.5", "sample_f1_tuned", "map")
    failed = summary.get("data", {}).get("failed_images", {})
    typer.echo(
        json.dumps(
            {
                "out": str(out),
                "best_epoch": best.get("epoch"),
                **{k: val.get(k) for k in keep},
                "failed_images": len(failed),
                "baseline": summary.get("baseline"),
            }
        )
    )
