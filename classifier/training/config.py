"""Training configuration of the cell (and image) classifiers.

One flat pydantic model, strict about unknown keys (``extra="forbid"``), so a
typo in a YAML file is an error. :mod:`classifier` must not import
:mod:`workflows`, hence its own strict base; ``hpacell.workflows.config.load_config``
and ``save_config`` work with any pydantic model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: What ``--resume`` may change: the run's length, the step size and its schedule (rebuilt for the new
#: total length), and how/where it runs. Everything else (model, data, split, loss, sampler, batch size,
#: warm-up, EMA, seed, the selection metric) is fixed by ``last.pt``; a resume that changes it is refused.
RESUME_MAY_CHANGE = frozenset(
    {
        "epochs",
        "lr",
        "backbone_lr_mult",
        "weight_decay",
        "schedule",
        "grad_clip",
        "limit_train_batches",
        "device",
        "amp",
        "amp_dtype",
        "channels_last",
        "num_workers",
        "deterministic",
        "lr_find_steps",
        "lr_find_min",
        "lr_find_max",
        "cache_dir",
        "cache_workers",
        "tta",
    }
)


class TrainConfig(BaseModel):
    """Everything a training run needs besides its data.

    Examples
    --------
    >>> TrainConfig(model="resnet18", epochs=2).epochs
    2
    >>> TrainConfig(epochz=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for TrainConfig
    ...
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- model
    model: str = Field("resnet50", description="timm backbone name")
    pretrained: str | None = Field(
        None, description="ImageNet weights: a local state-dict file, 'imagenet' or a timm tag (a1_in1k)"
    )
    fourth_channel_init: Literal["red", "green", "blue", "mean"] = Field(
        "red", description="first-conv filters copied for the 4th (yellow) channel"
    )
    pool: Literal["avgmax", "gem"] = "avgmax"
    embedding_dim: int = Field(512, ge=8)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    use_features: bool = Field(False, description="concatenate the feat_* columns to the pooled features")

    # --- data
    crop_size: int | None = Field(None, ge=16, description="resize crops to this size (default: as stored)")
    augment: bool = True
    folds: int = Field(5, ge=2, description="K of the image-wise multilabel-stratified K-fold split")
    fold: int = Field(0, ge=0, description="which fold is the validation set")
    single_label_only: bool = Field(False, description="train on cells of single-label images only")
    sampler: Literal["random", "oversample", "pk", "image"] = Field(
        "random", description="image: batches of whole images (always used by weak_loss=mil)"
    )
    oversample_power: float = Field(0.5, ge=0.0, description="cell weight = max over its classes of freq^-p")
    pk_classes: int = Field(8, ge=1, description="P of the P x K sampler (classes per batch)")
    pk_samples: int = Field(4, ge=1, description="K of the P x K sampler (cells per class)")
    num_workers: int | None = Field(None, ge=0, description="DataLoader workers (default min(4, cpus))")

    # --- loss
    focal: bool = False
    focal_alpha: float = Field(0.25, ge=0.0, le=1.0)
    focal_gamma: float = Field(2.0, ge=0.0)
    class_weights: bool = Field(False, description="pos_weight = max(1, ln(neg/pos)) per class")
    triplet_lambda: float = Field(0.1, ge=0.0)
    triplet_margin: float = Field(0.3, ge=0.0)
    triplet_gather: bool = Field(True, description="DDP: mine triplets over the embeddings of all ranks")

    # --- weak supervision (README: "Weak supervision")
    cell_labels: str | None = Field(
        None,
        description="per-cell targets replacing the inherited labels of the cells listed: "
        "ID,cell,Label CSV (synth's cells.csv) or image_id,cell,<one column per class> Parquet/CSV",
    )
    weak_loss: Literal["inherit", "mil"] = Field(
        "inherit",
        description="inherit: per-cell BCE on the targets; mil: per-cell BCE on the classes absent "
        "from the image (certain negatives) + the image's classes on cells pooled per image",
    )
    mil_pool: Literal["lse", "topk", "max", "mean"] = Field("topk", description="pooling of an image's cells")
    mil_r: float = Field(5.0, gt=0.0, description="LSE sharpness (large: max, small: mean)")
    mil_topk: float = Field(0.5, gt=0.0, le=1.0, description="top-k mean pools this share of the cells")
    mil_cell_weight: float = Field(
        1.0,
        ge=0.0,
        description="weight of the per-cell BCE on the image's classes next to the pooled term "
        "(1: best on the synth benchmark; 0: pure MIL)",
    )
    mil_negative: Literal["ignore", "zero"] = Field(
        "ignore",
        description="Negative target of cells of positive images under mil: ignore (no loss; a cell may "
        "show none of its image's patterns) or zero (as inherited)",
    )
    refine_rounds: int = Field(
        1,
        ge=0,
        description="label refinement rounds before training (0: none); default 1, or 0 when "
        "cell_labels are given (per-cell targets are not refined unless asked)",
    )
    refine_folds: int = Field(2, ge=2, description="K of the out-of-fold models scoring the cells")
    refine_rule: Literal["hard", "soft"] = Field(
        "soft",
        description="hard: keep an image class where the cell's score >= threshold x the image's best "
        "cell's score for it, else 0; soft: target = that ratio (clipped to 1)",
    )
    refine_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="ratio of the hard rule")
    refine_negative: bool = Field(
        True, description="a cell of a positive image keeping none of its image's classes becomes Negative"
    )
    refine_mix: float = Field(
        0.5, ge=0.0, le=1.0, description="weight of the refined targets against the inherited (1: refined)"
    )

    # --- optimisation
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0.0, description="head learning rate (peak)")
    backbone_lr_mult: float = Field(0.1, gt=0.0, description="backbone lr = lr x this after warm-up")
    weight_decay: float = Field(1e-2, ge=0.0)
    warmup_epochs: int = Field(1, ge=0, description="epochs training the head with the backbone frozen")
    schedule: Literal["cosine", "onecycle", "cyclic", "constant"] = "cosine"
    accumulate: int = Field(1, ge=1, description="gradient accumulation steps")
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0, description="EMA of the weights (e.g. 0.999)")
    amp: bool = Field(True, description="autocast on CUDA (ignored on CPU)")
    amp_dtype: Literal["bf16", "fp16"] = "bf16"
    channels_last: bool = Field(True, description="channels_last memory format on CUDA")
    grad_clip: float | None = Field(None, gt=0.0)
    select_metric: Literal["map", "macro_f1", "val_loss"] = Field(
        "map", description="validation figure that picks best.pt"
    )
    limit_train_batches: int | None = Field(None, ge=1, description="cap batches per epoch (quick runs)")

    # --- LR finder
    lr_find_steps: int = Field(200, ge=10)
    lr_find_min: float = Field(1e-7, gt=0.0)
    lr_find_max: float = Field(1.0, gt=0.0)

    # --- run
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    deterministic: bool | None = Field(
        None,
        description="deterministic kernels (torch.use_deterministic_algorithms, warn only, no cuDNN "
        "autotuning); default: on CPU (bit-identical seeded runs), off on CUDA (autotuned, fastest kernels)",
    )
    cell_truth: str | None = Field(None, description="cells.csv (ID,cell,Label) with per-cell truth")

    @model_validator(mode="before")
    @classmethod
    def _default_refinement(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("refine_rounds") is None:  # unset or null: by cell_labels
            data = {**data, "refine_rounds": 0 if data.get("cell_labels") else 1}
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.fold >= self.folds:
            raise ValueError(f"fold={self.fold} must be < folds={self.folds}")
        if self.lr_find_min >= self.lr_find_max:
            raise ValueError("lr_find_min must be < lr_find_max")
        return self


def resume_conflicts(saved: dict[str, Any], config: BaseModel) -> list[str]:
    """The settings of ``config`` that differ from a checkpoint's ``saved`` config and may not change.

    Settings missing from ``saved`` (an older checkpoint) count as their defaults.

    Examples
    --------
    >>> saved = TrainConfig(model="resnet18").model_dump(mode="json")
    >>> resume_conflicts(saved, TrainConfig(model="resnet18", epochs=30, lr=1e-4))
    []
    >>> resume_conflicts(saved, TrainConfig(model="resnet34"))
    ["model 'resnet18' -> 'resnet34'"]
    """
    new = config.model_dump(mode="json")
    old = {**type(config)().model_dump(mode="json"), **saved}
    keys = [k for k in new if k not in RESUME_MAY_CHANGE and old.get(k) != new[k]]
    keys += [k for k in old if k not in new and k not in RESUME_MAY_CHANGE]
    return [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys]
