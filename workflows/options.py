"""Command-line options shared by several commands, declared once.

Each alias is a Typer ``Annotated`` type: a command declares ``out: OutDir`` (required)
or ``workers: Workers = 1``, so the flag name, its short form and its help are the
same wherever the option appears. Short forms are the same across commands:
``-o`` output folder, ``-j`` worker processes, ``-c`` YAML config.

Training options (``train-cells`` and ``train-images``) default to ``None`` ("not
given"), so that :func:`config_overrides` keeps only the flags a user set and the
YAML file or the saved run config supplies the rest.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

# --------------------------------------------------------------------------- common
ImagesDir = Annotated[
    Path, typer.Argument(help="Folder of <ID>_{red,green,blue,yellow}.<png|tif|jpg> image sets.")
]
Checkpoint = Annotated[
    Path, typer.Argument(help="A checkpoint (RUN/best.pt or RUN/last.pt of a training run).")
]
CellsDir = Annotated[Path, typer.Argument(help="Cell dataset folder (hpacell crop output).")]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
Workers = Annotated[int, typer.Option("--workers", "-j", min=1, help="Worker processes.")]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (CLI flags override it).")
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Recompute outputs that already exist.")]
IdList = Annotated[
    Path | None,
    typer.Option("--ids", help="Only these IDs: a text file (one per line) or a CSV with an ID/Id column."),
]
Labels = Annotated[
    Path, typer.Option("--labels", "-l", help="Image label table (2021 ID,Label or 2018 Id,Target).")
]
Masks = Annotated[
    Path, typer.Option("--masks", "-m", help="Folder of <ID>_cellmask.png (and _nucleimask.png).")
]
Taxonomy = Annotated[str, typer.Option("--taxonomy", help="Class set: hpa2021 or hpa2018.")]
Device = Annotated[
    str | None, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")
]
BatchSize = Annotated[int | None, typer.Option("--batch-size", min=1, help="Samples per batch.")]
NumWorkers = Annotated[int | None, typer.Option("--num-workers", min=0, help="DataLoader worker processes.")]


class MatchMode(StrEnum):
    """``evaluate --match``: IoU of masks or of their enclosing boxes."""

    mask = "mask"
    box = "box"


Match = Annotated[
    MatchMode,
    typer.Option(
        "--match",
        help="IoU of masks (Kaggle's stated metric) or of their enclosing boxes (organisers' re-scoring).",
    ),
]
Tta = Annotated[
    bool | None, typer.Option("--tta/--no-tta", help="Average over horizontal and vertical flips.")
]

# ------------------------------------------------------------------ training (train-cells, train-images)
Model = Annotated[str | None, typer.Option("--model", help="timm backbone (default resnet50).")]
Epochs = Annotated[int | None, typer.Option("--epochs", min=1, help="Training epochs.")]
TrainBatch = Annotated[int | None, typer.Option("--batch-size", min=2, help="Samples per training batch.")]
Lr = Annotated[float | None, typer.Option("--lr", help="Head learning rate (backbone: x backbone_lr_mult).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")]
Pretrained = Annotated[
    str | None,
    typer.Option(
        "--pretrained",
        help="ImageNet weights: a local state-dict file, or 'imagenet' / a timm tag (HF hub cache).",
    ),
]
Sampler = Annotated[str | None, typer.Option("--sampler", help="random, oversample (rare classes) or pk.")]
Focal = Annotated[bool | None, typer.Option("--focal/--no-focal", help="Focal BCE.")]
ClassWeights = Annotated[
    bool | None, typer.Option("--class-weights/--no-class-weights", help="ln(neg/pos) weights.")
]
Schedule = Annotated[str | None, typer.Option("--schedule", help="cosine, onecycle, cyclic or constant.")]
WarmupEpochs = Annotated[int | None, typer.Option("--warmup-epochs", min=0, help="Head-only epochs.")]
BackboneLrMult = Annotated[
    float | None, typer.Option("--backbone-lr-mult", help="Backbone lr = lr x this after warm-up.")
]
EmaDecay = Annotated[float | None, typer.Option("--ema-decay", help="EMA of the weights, e.g. 0.999.")]
Folds = Annotated[int | None, typer.Option("--folds", min=2, help="K of the image-wise K-fold split.")]
Fold = Annotated[int | None, typer.Option("--fold", min=0, help="Validation fold.")]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed.")]
LimitBatches = Annotated[
    int | None, typer.Option("--limit-train-batches", min=1, help="Cap training batches per epoch.")
]


def config_overrides(values: dict[str, Any], rename: dict[str, str] | None = None) -> dict[str, Any]:
    """The config fields a user set on the command line: ``None`` dropped, paths as text.

    Examples
    --------
    >>> config_overrides({"epochs": 3, "lr": None, "cache": Path("c")}, rename={"cache": "cache_dir"})
    {'epochs': 3, 'cache_dir': 'c'}
    """
    rename = rename or {}
    return {
        rename.get(k, k): str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None
    }


# --------------------------------------------------------------------------- weak supervision
CellLabels = Annotated[
    Path | None,
    typer.Option(
        "--cell-labels",
        help="Per-cell targets replacing inherited labels: ID,cell,Label CSV (synth's cells.csv) or "
        "image_id,cell,<one column per class> Parquet/CSV (hpacell relabel).",
    ),
]
WeakLoss = Annotated[
    str | None,
    typer.Option("--weak-loss", help="inherit (per-cell BCE on image labels) or mil (pooled per image)."),
]
MilPool = Annotated[str | None, typer.Option("--mil-pool", help="MIL pooling: lse, topk, max or mean.")]
RefineRounds = Annotated[
    int | None, typer.Option("--refine-rounds", min=0, help="Label refinement rounds before training.")
]
RefineFolds = Annotated[
    int | None, typer.Option("--refine-folds", min=2, help="Out-of-fold models per refinement round.")
]
RefineRule = Annotated[str | None, typer.Option("--refine-rule", help="hard or soft refined targets.")]
