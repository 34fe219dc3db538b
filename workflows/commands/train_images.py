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


def command(
    images: Path = typer.Argument(..., help="Folder of <ID>_{red,green,blue,yellow}.png image sets."),
    labels: Path = typer.Option(..., "--labels", "-l", help="Label table: 2021 ID,Label or 2018 Id,Target."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder."),
    config: Path = typer.Option(
        None, "--config", "-c", help="YAML config (workflows/configs/train_images.yaml)."
    ),
    size: int = typer.Option(None, "--size", min=16, help="Image side after downscaling (default 512)."),
    channels: str = typer.Option(None, "--channels", help="Subset, e.g. green, g+b+r, rgb (default all)."),
    model: str = typer.Option(None, "--model", help="timm backbone (default resnet50)."),
    epochs: int = typer.Option(None, "--epochs", min=1),
    batch_size: int = typer.Option(None, "--batch-size", min=2),
    lr: float = typer.Option(None, "--lr", help="Head learning rate (backbone: x backbone_lr_mult)."),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    pretrained: Path = typer.Option(None, "--pretrained", help="Local ImageNet state dict (no downloads)."),
    sampler: str = typer.Option(None, "--sampler", help="random or oversample (rare classes)."),
    focal: bool = typer.Option(None, "--focal/--no-focal", help="Focal BCE."),
    class_weights: bool = typer.Option(
        None, "--class-weights/--no-class-weights", help="ln(neg/pos) weights."
    ),
    augment: bool = typer.Option(None, "--augment/--no-augment", help="Flips, rot90, affine, intensity."),
    schedule: str = typer.Option(None, "--schedule", help="cosine, onecycle, cyclic or constant."),
    warmup_epochs: int = typer.Option(None, "--warmup-epochs", min=0, help="Head-only epochs."),
    backbone_lr_mult: float = typer.Option(None, "--backbone-lr-mult", help="Backbone lr after warm-up."),
    ema_decay: float = typer.Option(None, "--ema-decay", help="EMA of the weights, e.g. 0.999."),
    folds: int = typer.Option(None, "--folds", min=2, help="K of the multilabel-stratified K-fold."),
    fold: int = typer.Option(None, "--fold", min=0, help="Validation fold."),
    tta: bool = typer.Option(None, "--tta/--no-tta", help="Flip TTA in the final validation report."),
    cache: Path = typer.Option(None, "--cache", help="Downsized-image cache folder (default RUN/cache)."),
    cache_workers: int = typer.Option(None, "--cache-workers", min=1, help="Processes building the cache."),
    num_workers: int = typer.Option(None, "--num-workers", min=0, help="DataLoader workers."),
    seed: int = typer.Option(None, "--seed"),
    limit_train_batches: int = typer.Option(None, "--limit-train-batches", min=1, help="Cap batches/epoch."),
) -> None:
    from hpacell.classifier.images.data import ImageTrainConfig, parse_channels
    from hpacell.workflows.config import ConfigError, load_config, save_config
    from pydantic import ValidationError

    try:
        chans = parse_channels(channels) if channels is not None else None
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from None
    overrides = {
        "crop_size": size,
        "channels": chans,
        "model": model,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "device": device,
        "pretrained": str(pretrained) if pretrained else None,
        "sampler": sampler,
        "focal": focal,
        "class_weights": class_weights,
        "augment": augment,
        "schedule": schedule,
        "warmup_epochs": warmup_epochs,
        "backbone_lr_mult": backbone_lr_mult,
        "ema_decay": ema_decay,
        "folds": folds,
        "fold": fold,
        "tta": tta,
        "cache_dir": str(cache) if cache else None,
        "cache_workers": cache_workers,
        "num_workers": num_workers,
        "seed": seed,
        "limit_train_batches": limit_train_batches,
    }
    saved = out / "config.yaml"
    base = config if config is not None else (saved if resume and saved.is_file() else None)
    try:
        # load_config's first parameter is named ``model`` like the backbone option: merge by hand
        cfg = load_config(ImageTrainConfig, base)
        cfg = ImageTrainConfig.model_validate(
            {**cfg.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        )
    except (ConfigError, ValidationError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from None
    if (out / "last.pt").exists() and not resume:
        typer.echo(f"error: {out / 'last.pt'} exists: pass --resume or choose another --out", err=True)
        raise typer.Exit(code=1)

    from hpacell.classifier.images.train import train_images

    try:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, saved)
        summary = train_images(images, labels, out, cfg, resume=resume)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from None
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
