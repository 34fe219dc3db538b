"""Refine inherited image labels into per-cell targets from out-of-fold scores (label refinement rounds).

Each round trains --refine-folds models (image-wise folds, the training settings of --config and the
flags), scores every cell with the model that did not see it, and keeps an image class for a cell only
where its score is at least --refine-threshold x the image's best cell's; a cell keeping none becomes
Negative. Writes OUT/round-R/{fold-K/, oof.parquet, cell_labels.parquet, summary.json} and
OUT/cell_labels.parquet (the last round), for `hpacell train-cells --cell-labels`. Reruns reuse rounds.
"""

from __future__ import annotations

import json

import typer

from hpacell.workflows.options import (
    CellLabels,
    CellsDir,
    ConfigFile,
    Device,
    Epochs,
    Lr,
    MilPool,
    Model,
    NumWorkers,
    OutDir,
    RefineFolds,
    RefineRule,
    Seed,
    TrainBatch,
    WeakLoss,
    config_overrides,
)


def command(
    cells: CellsDir,
    out: OutDir,
    config: ConfigFile = None,
    rounds: int = typer.Option(1, "--rounds", min=1, help="Refinement rounds."),
    model: Model = None,
    epochs: Epochs = None,
    batch_size: TrainBatch = None,
    lr: Lr = None,
    device: Device = None,
    cell_labels: CellLabels = None,
    weak_loss: WeakLoss = None,
    mil_pool: MilPool = None,
    refine_folds: RefineFolds = None,
    refine_rule: RefineRule = None,
    refine_threshold: float = typer.Option(
        None, "--refine-threshold", min=0.0, max=1.0, help="Keep ratio of the hard rule."
    ),
    num_workers: NumWorkers = None,
    seed: Seed = None,
) -> None:
    from hpacell.classifier.training.config import TrainConfig
    from hpacell.classifier.training.refine import relabel
    from hpacell.classifier.training.train import launch_info
    from hpacell.workflows.config import resolve_run_config, save_config
    from hpacell.workflows.launch import claim_for_launch

    flags = config_overrides({k: v for k, v in locals().items() if k in TrainConfig.model_fields})
    cfg = resolve_run_config(TrainConfig, config, out, False, flags, check_new_run=False)
    claim_for_launch(out, "relabel")
    main = launch_info().is_main  # under torchrun/srun rank 0 writes the config and prints the summary
    if main:
        save_config(cfg, out / "config.yaml")
    path = relabel(cells, out, cfg, rounds)
    if main:
        summary = json.loads((out / f"round-{rounds}" / "summary.json").read_text())
        typer.echo(json.dumps({**summary, "labels_file": str(path)}))
