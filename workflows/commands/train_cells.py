"""Train the weakly supervised cell classifier on a cell dataset (from hpacell crop).

Writes RUN/best.pt, RUN/last.pt (checkpoints), RUN/config.yaml (resolved config), RUN/metrics.jsonl,
RUN/curves.png and RUN/summary.json; --find-lr writes RUN/lr_find.png + lr_find.json instead.
Settings: YAML (--config), overridden by flags; --resume continues after the last finished epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def command(
    cells: Path = typer.Argument(..., help="Cell dataset folder (hpacell crop output)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML train config (see workflows/configs)."),
    model: str = typer.Option(None, "--model", help="timm backbone (default resnet50)."),
    epochs: int = typer.Option(None, "--epochs", min=1),
    batch_size: int = typer.Option(None, "--batch-size", min=2),
    lr: float = typer.Option(None, "--lr", help="Head learning rate (backbone: x backbone_lr_mult)."),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    pretrained: Path = typer.Option(None, "--pretrained", help="Local ImageNet state dict (no downloads)."),
    fourth_channel_init: str = typer.Option(
        None, "--fourth-channel-init", help="red|green|blue|mean: first-conv filters for yellow."
    ),
    triplet_lambda: float = typer.Option(
        None, "--triplet-lambda", min=0.0, help="0 disables the triplet term."
    ),
    sampler: str = typer.Option(None, "--sampler", help="random, oversample (rare classes) or pk."),
    single_label_only: bool = typer.Option(
        None, "--single-label-only/--all-labels", help="Train on cells of single-label images only."
    ),
    focal: bool = typer.Option(None, "--focal/--no-focal", help="Focal BCE."),
    class_weights: bool = typer.Option(
        None, "--class-weights/--no-class-weights", help="ln(neg/pos) weights."
    ),
    use_features: bool = typer.Option(
        None, "--use-features/--no-features", help="Concatenate feat_* columns."
    ),
    schedule: str = typer.Option(None, "--schedule", help="cosine, onecycle, cyclic or constant."),
    warmup_epochs: int = typer.Option(None, "--warmup-epochs", min=0, help="Head-only epochs."),
    ema_decay: float = typer.Option(None, "--ema-decay", help="EMA of the weights, e.g. 0.999."),
    crop_size: int = typer.Option(None, "--crop-size", help="Resize crops to this size."),
    folds: int = typer.Option(None, "--folds", min=2, help="K of the image-wise K-fold split."),
    fold: int = typer.Option(None, "--fold", min=0, help="Validation fold."),
    cell_truth: Path = typer.Option(None, "--cell-truth", help="cells.csv (ID,cell,Label) per-cell truth."),
    num_workers: int = typer.Option(None, "--num-workers", min=0, help="DataLoader workers."),
    seed: int = typer.Option(None, "--seed"),
    limit_train_batches: int = typer.Option(None, "--limit-train-batches", min=1, help="Cap batches/epoch."),
    find_lr: bool = typer.Option(False, "--find-lr", help="Run the LR range test instead of training."),
) -> None:
    from hpacell.classifier.training.config import TrainConfig
    from hpacell.workflows.config import ConfigError, load_config, save_config
    from pydantic import ValidationError

    overrides = {
        "model": model,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "device": device,
        "pretrained": str(pretrained) if pretrained else None,
        "fourth_channel_init": fourth_channel_init,
        "triplet_lambda": triplet_lambda,
        "sampler": sampler,
        "single_label_only": single_label_only,
        "focal": focal,
        "class_weights": class_weights,
        "use_features": use_features,
        "schedule": schedule,
        "warmup_epochs": warmup_epochs,
        "ema_decay": ema_decay,
        "crop_size": crop_size,
        "folds": folds,
        "fold": fold,
        "cell_truth": str(cell_truth) if cell_truth else None,
        "num_workers": num_workers,
        "seed": seed,
        "limit_train_batches": limit_train_batches,
    }
    saved = out / "config.yaml"
    base = config if config is not None else (saved if resume and saved.is_file() else None)
    try:
        # load_config's first parameter is named ``model``, like the backbone option: merge by hand
        cfg = load_config(TrainConfig, base)
        set_flags = {k: v for k, v in overrides.items() if v is not None}
        cfg = TrainConfig.model_validate({**cfg.model_dump(), **set_flags})
    except (ConfigError, ValidationError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from None
    if (out / "last.pt").exists() and not resume and not find_lr:
        typer.echo(f"error: {out / 'last.pt'} exists: pass --resume or choose another --out", err=True)
        raise typer.Exit(code=1)

    from hpacell.classifier.training.data import build_cell_data
    from hpacell.classifier.training.train import fit

    try:
        data = build_cell_data(cells, cfg)
        if find_lr:
            from hpacell.classifier.training.lr_finder import lr_find
            from hpacell.classifier.training.train import build_model, resolve_device, seed_everything

            seed_everything(cfg.seed, cfg.deterministic)
            res = lr_find(build_model(cfg, data), data, cfg, out, resolve_device(cfg.device))
            typer.echo(json.dumps({"suggested_lr": res["suggested_lr"], "plot": str(out / "lr_find.png")}))
            return
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, saved)
        summary = fit(data, cfg, out, resume=resume)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from None
    best = summary.get("best", {})
    keep = ("epoch", "val_targets", "val_macro_f1", "val_macro_f1_tuned", "val_map")
    typer.echo(
        json.dumps({"out": str(out), **{k: best.get(k) for k in keep}, "baseline": summary.get("baseline")})
    )
