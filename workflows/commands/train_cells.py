"""Train the weakly supervised cell classifier on a cell dataset (from hpacell crop).

Writes RUN/best.pt, RUN/last.pt (checkpoints), RUN/config.yaml (resolved config), RUN/metrics.jsonl,
RUN/curves.png and RUN/summary.json; --find-lr writes RUN/lr_find.png + lr_find.json instead.
--cell-labels FILE trains on per-cell targets; --weak-loss mil and --refine-rounds N (RUN/refine/) are the
weak-supervision methods (README, "Weak supervision").
Settings: YAML (--config), overridden by flags; --resume continues after the last finished epoch (it may
change only --epochs (not fewer), --lr and the schedule, the device and workers; README: train-cells).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from hpacell.workflows.options import (
    BackboneLrMult,
    CellLabels,
    CellsDir,
    ClassWeights,
    ConfigFile,
    Device,
    EmaDecay,
    Epochs,
    Focal,
    Fold,
    Folds,
    LimitBatches,
    Lr,
    MilPool,
    Model,
    NumWorkers,
    OutDir,
    Pretrained,
    RefineFolds,
    RefineRounds,
    RefineRule,
    Resume,
    Sampler,
    Schedule,
    Seed,
    TrainBatch,
    WarmupEpochs,
    WeakLoss,
    config_overrides,
)


def command(
    cells: CellsDir,
    out: OutDir,
    config: ConfigFile = None,
    model: Model = None,
    epochs: Epochs = None,
    batch_size: TrainBatch = None,
    lr: Lr = None,
    device: Device = None,
    resume: Resume = False,
    pretrained: Pretrained = None,
    fourth_channel_init: str = typer.Option(
        None, "--fourth-channel-init", help="red|green|blue|mean: first-conv filters for yellow."
    ),
    triplet_lambda: float = typer.Option(
        None, "--triplet-lambda", min=0.0, help="0 disables the triplet term."
    ),
    sampler: Sampler = None,
    single_label_only: bool = typer.Option(
        None, "--single-label-only/--all-labels", help="Train on cells of single-label images only."
    ),
    focal: Focal = None,
    class_weights: ClassWeights = None,
    use_features: bool = typer.Option(
        None, "--use-features/--no-features", help="Concatenate feat_* columns."
    ),
    schedule: Schedule = None,
    warmup_epochs: WarmupEpochs = None,
    backbone_lr_mult: BackboneLrMult = None,
    ema_decay: EmaDecay = None,
    crop_size: int = typer.Option(None, "--crop-size", help="Resize crops to this size."),
    folds: Folds = None,
    fold: Fold = None,
    cell_truth: Path = typer.Option(None, "--cell-truth", help="cells.csv (ID,cell,Label) per-cell truth."),
    cell_labels: CellLabels = None,
    weak_loss: WeakLoss = None,
    mil_pool: MilPool = None,
    refine_rounds: RefineRounds = None,
    refine_folds: RefineFolds = None,
    refine_rule: RefineRule = None,
    num_workers: NumWorkers = None,
    seed: Seed = None,
    limit_train_batches: LimitBatches = None,
    find_lr: bool = typer.Option(False, "--find-lr", help="Run the LR range test instead of training."),
) -> None:
    from hpacell.classifier.training.config import TrainConfig
    from hpacell.classifier.training.train import check_resume, train_cells
    from hpacell.workflows.config import resolve_run_config, save_config
    from hpacell.workflows.launch import claim_for_launch

    flags = config_overrides({k: v for k, v in locals().items() if k in TrainConfig.model_fields})
    cfg = resolve_run_config(TrainConfig, config, out, resume, flags, check_new_run=not find_lr)
    if resume:
        check_resume(out, cfg)  # before anything is written: last.pt and the new options must agree
    claim_for_launch(out, "train-cells", legacy=["last.pt"])  # only a new, empty or own run folder
    if find_lr:
        from hpacell.classifier.training.data import build_cell_data
        from hpacell.classifier.training.lr_finder import lr_find
        from hpacell.classifier.training.train import (
            build_model,
            resolve_device,
            seed_everything,
            wants_deterministic,
        )

        data = build_cell_data(cells, cfg)
        device = resolve_device(cfg.device)
        seed_everything(cfg.seed, wants_deterministic(cfg, device))
        res = lr_find(build_model(cfg, data), data, cfg, out, device)
        typer.echo(json.dumps({"suggested_lr": res["suggested_lr"], "plot": str(out / "lr_find.png")}))
        return
    save_config(cfg, out / "config.yaml")
    summary = train_cells(cells, out, cfg, resume=resume)
    if not summary:  # a rank other than 0 under DDP: rank 0 prints the summary
        return
    best = summary.get("best", {})
    keep = ("epoch", "val_targets", "val_macro_f1", "val_macro_f1_tuned", "val_map")
    typer.echo(
        json.dumps({"out": str(out), **{k: best.get(k) for k in keep}, "baseline": summary.get("baseline")})
    )
