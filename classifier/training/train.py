"""The training loop: dataset-agnostic, resumable, AMP/DDP-ready.

:func:`fit` takes a :class:`hpacell.classifier.training.data.TrainData` (train/validation
datasets yielding dicts with ``"image"``, ``"labels"`` and optionally
``"features"``) and a :class:`hpacell.classifier.training.config.TrainConfig`, and writes to
``out_dir``:

* ``last.pt`` every epoch and ``best.pt`` when the validation figure
  (``config.select_metric``) improves: dicts loadable with
  ``torch.load(..., weights_only=True)`` holding the model, EMA, optimizer,
  scheduler, scaler and RNG states, epoch, config, class names and per-class
  thresholds tuned on validation (:func:`hpacell.classifier.metrics.tune_thresholds`);
* ``metrics.jsonl`` (one JSON line per epoch: each loss part, validation loss,
  macro-F1 at 0.5 and at the tuned thresholds, per-class F1 and AP, mAP, and
  ``val_targets`` saying whether the targets are per-cell truth or labels
  inherited from the image);
* ``curves.png`` (loss and metric curves) and ``summary.json``.

Schedule: the first ``warmup_epochs`` train the head with the backbone frozen
(and its BatchNorm statistics fixed); then everything trains, the backbone at
``lr * backbone_lr_mult`` (differential learning rates). The LR schedule runs
per optimizer step over the whole run.

Resume (:func:`check_resume`): ``last.pt`` must agree with the new options before
anything is written; only :data:`~hpacell.classifier.training.config.RESUME_MAY_CHANGE`
may differ. The optimizer keeps its state but takes the new LRs, and the schedule
is rebuilt for the steps taken plus those to come and fast-forwarded to the step
reached (the same schedule when nothing changed). Each epoch writes
``metrics.jsonl``, then ``last.pt`` (which holds every epoch's record), then
``best.pt``; a resume after a kill at any point rebuilds ``metrics.jsonl`` whole
and, when ``last.pt`` is the best epoch, makes sure ``best.pt`` is too.

Distributed: launched with ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``)
or ``srun`` (``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``, with
``MASTER_ADDR``/``MASTER_PORT`` exported), each rank draws its own shard of
every epoch; rank 0 validates and writes the outputs.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hpacell.classifier.metrics import f1_report, per_class_ap, tune_thresholds
from hpacell.classifier.model import CellClassifier, checkpoint_kind, create_model, read_checkpoint
from hpacell.classifier.training.config import RESUME_MAY_CHANGE, TrainConfig, resume_conflicts
from hpacell.classifier.training.data import (
    TrainData,
    build_cell_data,
    make_eval_loader,
    make_train_loader,
    set_loader_epoch,
)
from hpacell.classifier.training.losses import CellLoss, class_pos_weight
from hpacell.utils.device import resolve_device  # this rank's device: one GPU per task or all per node
from hpacell.utils.errors import InputError

log = logging.getLogger(__name__)

Hook = Callable[[int, dict[str, Any]], None]


# --------------------------------------------------------------------------- environment
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # setup_distributed joined the group, so fit leaves it (teardown_distributed)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_info(env: Mapping[str, str] | None = None) -> DistInfo:
    """This process's place in its launch, without joining a group.

    torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; srun's ``SLURM_PROCID`` /
    ``SLURM_NTASKS`` / ``SLURM_LOCALID`` when torchrun set no ``RANK``; else one process.

    Examples
    --------
    >>> launch_info({"SLURM_NTASKS": "2", "SLURM_PROCID": "1"})
    DistInfo(rank=1, world_size=2, local_rank=0, owns_group=False)
    >>> launch_info({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}).world_size
    4
    """
    env = os.environ if env is None else env
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "RANK" not in env:
        return DistInfo(
            int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", "0"))
        )
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(env["RANK"]), world, int(env.get("LOCAL_RANK", "0")))


def setup_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun or srun (several tasks); no-op otherwise."""
    env = os.environ
    launch = launch_info(env)
    if launch.world_size <= 1:
        return DistInfo()
    if "RANK" not in env:  # srun: its task variables in torchrun's names
        env["RANK"], env["WORLD_SIZE"] = str(launch.rank), str(launch.world_size)
        env["LOCAL_RANK"] = str(launch.local_rank)
    import torch.distributed as dist

    info = DistInfo(launch.rank, launch.world_size, launch.local_rank, owns_group=not dist.is_initialized())
    if info.owns_group:
        if "MASTER_ADDR" not in env:
            raise InputError(
                f"{info.world_size} ranks but MASTER_ADDR is not set: launch with torchrun, or srun inside "
                "the allocation of workflows/slurm/train_cells.sbatch (it exports MASTER_ADDR/MASTER_PORT)"
            )
        dev = resolve_device(device, info.local_rank)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        log.info(
            "rank %d of world_size=%d (local rank %d) on %s", info.rank, info.world_size, info.local_rank, dev
        )
    return info


def teardown_distributed(info: DistInfo) -> None:
    """Leave the process group that :func:`setup_distributed` joined (a group the caller made stays).

    All ranks meet at a barrier first, so no rank tears down while another still talks to it. A gloo
    group left to interpreter shutdown can abort the process ("terminate called without an active
    exception"): its worker threads may still release tensors then (pytorch/pytorch#190489).
    """
    if not info.owns_group:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; deterministic kernels when asked, else cuDNN autotuning."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global state is what libraries use)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (CUDA >= 10.2)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def wants_deterministic(config: TrainConfig, device: torch.device) -> bool:
    """``config.deterministic``, or by default: yes on CPU, no on CUDA (autotuned cuDNN kernels)."""
    return device.type == "cpu" if config.deterministic is None else config.deterministic


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()  # noqa: NPY002 (the global state is what libraries use)
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))  # noqa: NPY002 (the global state is what libraries use)
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- building blocks
def build_model(config: TrainConfig, data: TrainData) -> CellClassifier:
    """The model of a run (pretrained backbone when configured)."""
    return create_model(
        config.model,
        num_classes=len(data.classes),
        in_chans=data.in_chans,
        pretrained=config.pretrained,
        pool=config.pool,
        embedding_dim=config.embedding_dim,
        dropout=config.dropout,
        n_features=len(data.feature_columns),
        fourth_channel_init=config.fourth_channel_init,
    )


def build_loss(config: TrainConfig, data: TrainData, distributed: bool = False) -> CellLoss:
    return CellLoss(
        pos_weight=class_pos_weight(data.train_labels).float() if config.class_weights else None,
        focal=config.focal,
        alpha=config.focal_alpha,
        gamma=config.focal_gamma,
        triplet_lambda=config.triplet_lambda,
        margin=config.triplet_margin,
        gather=config.triplet_gather and distributed,
        mil=_mil_options(config, data),
        groups=data.groups,
    )


def _mil_options(config: TrainConfig, data: TrainData) -> dict[str, Any] | None:
    if config.weak_loss != "mil":
        return None
    return {
        "pool": config.mil_pool,
        "r": config.mil_r,
        "topk": config.mil_topk,
        "cell_weight": config.mil_cell_weight,
        "negative": data.negative,
        "negative_mode": config.mil_negative,
    }


def make_optimizer(model: CellClassifier, config: TrainConfig, lr_scale: float = 1.0) -> torch.optim.AdamW:
    """AdamW with two groups: backbone (``lr * backbone_lr_mult``) and head (``lr``)."""
    return torch.optim.AdamW(
        [
            {
                "params": list(model.backbone.parameters()),
                "lr": config.lr * config.backbone_lr_mult * lr_scale,
            },
            {"params": model.head_parameters(), "lr": config.lr * lr_scale},
        ],
        weight_decay=config.weight_decay,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """Per-step LR schedule: cosine, one-cycle, cyclic (triangular2) or constant."""
    from torch.optim import lr_scheduler as S

    peaks = [g["lr"] for g in optimizer.param_groups]
    total_steps = max(1, total_steps)
    if config.schedule == "cosine":
        return S.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=0.0)
    if config.schedule == "onecycle" and total_steps >= 2:
        # the warm-up phase must span at least one step, or torch divides by zero on tiny runs
        pct = max(0.2, 1.5 / total_steps)
        return S.OneCycleLR(optimizer, max_lr=peaks, total_steps=total_steps, pct_start=min(pct, 0.75))
    if config.schedule == "cyclic":
        half = max(1, total_steps // (2 * max(1, min(config.epochs, 4))))
        return S.CyclicLR(
            optimizer,
            base_lr=[p / 10 for p in peaks],
            max_lr=peaks,
            step_size_up=half,
            mode="triangular2",
            cycle_momentum=False,
        )
    return S.LambdaLR(optimizer, lambda _: 1.0)


def set_backbone_trainable(model: CellClassifier, trainable: bool) -> None:
    for p in model.backbone.parameters():
        p.requires_grad_(trainable)


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if k == "image" and channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def _autocast(device: torch.device, config: TrainConfig):
    if device.type != "cuda" or not config.amp:
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if config.amp_dtype == "bf16" else torch.float16)


class EMA:
    """Exponential moving average of a model's weights (buffers copied)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if e.dtype.is_floating_point:
                e.lerp_(m.detach(), 1.0 - self.decay)
            else:
                e.copy_(m)


def train_step_fn(model: nn.Module, loss_fn: CellLoss, device: torch.device, config: TrainConfig):
    """``step(batch) -> dict of loss tensors`` (forward + loss under autocast), shared with the LR finder."""
    cl = config.channels_last and device.type == "cuda"

    def step(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        b = _to_device(batch, device, cl)
        with _autocast(device, config):
            out = model(b["image"], b.get("features"))
        return loss_fn(out, b["labels"], b.get("index"))

    return step


# --------------------------------------------------------------------------- one epoch
def train_one_epoch(
    model: nn.Module,
    loader,
    step: Callable,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    ema: EMA | None = None,
    raw_model: nn.Module | None = None,
) -> dict[str, float]:
    """Train for one pass over ``loader``; mean of each loss part and cells/s."""
    from tqdm import tqdm

    sums: dict[str, float] = {}
    n_batches = n_cells = 0
    t0 = time.perf_counter()
    acc = config.accumulate
    n_total = (
        len(loader) if config.limit_train_batches is None else min(len(loader), config.limit_train_batches)
    )
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(tqdm(loader, total=n_total, desc="train", leave=False, disable=None)):
        if i >= n_total:
            break
        last_micro = (i + 1) % acc == 0 or i + 1 == n_total
        sync = model.no_sync() if (hasattr(model, "no_sync") and not last_micro) else nullcontext()
        with sync:
            parts = step(batch)
            scaler.scale(parts["loss"] / acc).backward()
        if last_micro:
            if config.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update(raw_model if raw_model is not None else model)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n_batches += 1
        n_cells += len(batch["labels"])
    dt = time.perf_counter() - t0
    out = {f"train_{k}": v / max(n_batches, 1) for k, v in sums.items()}
    out["train_cells_per_s"] = n_cells / dt if dt > 0 else 0.0
    out["train_batches"] = n_batches
    return out


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device, config: TrainConfig) -> dict[str, np.ndarray]:
    """Sigmoid probabilities, targets and embeddings over a loader (model in eval mode)."""
    model.eval()
    cl = config.channels_last and device.type == "cuda"
    probs, targets, logits_all = [], [], []
    for batch in loader:
        b = _to_device(batch, device, cl)
        with _autocast(device, config):
            out = model(b["image"], b.get("features"))
        logits = out["logits"].float()
        logits_all.append(logits.cpu())
        probs.append(torch.sigmoid(logits).cpu())
        targets.append(b["labels"].float().cpu())
    return {
        "probs": torch.cat(probs).numpy(),
        "targets": torch.cat(targets).numpy(),
        "logits": torch.cat(logits_all),
    }


def validation_metrics(
    pred: dict[str, Any], data: TrainData, loss_fn: CellLoss
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics of one validation pass; also returns the (targets, probs) used."""
    from hpacell.classifier.training.losses import bce_loss

    probs, inherited = pred["probs"], pred["targets"]
    val_loss = float(bce_loss(pred["logits"], torch.from_numpy(inherited), loss_fn.pos_weight))
    if data.val_truth is not None:
        mask = np.ones(len(probs), bool) if data.val_truth_mask is None else data.val_truth_mask
        y, p, kind = data.val_truth[mask], probs[mask], "cell_truth"
    else:
        y, p, kind = inherited, probs, "inherited_image_labels"
    at_half = f1_report(y, p >= 0.5)
    thr = tune_thresholds(y, p)
    tuned = f1_report(y, p >= thr[None, :])
    ap = per_class_ap(y, p)
    rec = {
        "val_loss": val_loss,
        "val_targets": kind,
        "val_cells": len(y),
        "val_macro_f1": at_half["macro_f1"],
        "val_sample_f1": at_half["sample_f1"],
        "val_macro_f1_tuned": tuned["macro_f1"],
        "val_map": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
        "val_per_class_f1": at_half["per_class_f1"],
        "val_per_class_f1_tuned": tuned["per_class_f1"],
        "val_per_class_ap": [None if not np.isfinite(a) else float(a) for a in ap],
    }
    return rec, y, p


def frequency_baseline(train_labels: np.ndarray, y_val: np.ndarray) -> dict[str, float]:
    """Label-frequency baselines on the validation targets.

    Every cell gets, for each class, its training frequency as score. Such a
    score ranks all cells alike, so: AP = the class's validation prevalence;
    F1 either predicts a class for every cell or for none. ``macro_f1_majority``
    predicts the classes with training frequency >= 0.5; ``macro_f1_all`` the
    best case of the rule, predicting every class seen in training for every cell.
    """
    freq = np.asarray(train_labels, float).mean(0)
    y = np.asarray(y_val).astype(bool)
    n = len(y)
    major = np.repeat((freq >= 0.5)[None, :], n, 0)
    allp = np.repeat((freq > 0)[None, :], n, 0)
    prev = y.mean(0)
    return {
        "macro_f1_majority": f1_report(y, major)["macro_f1"],
        "macro_f1_all": f1_report(y, allp)["macro_f1"],
        "map": float(prev[y.any(0)].mean()) if y.any() else float("nan"),
    }


# --------------------------------------------------------------------------- checkpoints and outputs
def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temp file in the same folder, then rename."""
    from hpacell.utils.files import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_metrics(path: Path, records: Sequence[dict[str, Any]]) -> None:
    from hpacell.utils.files import atomic_write_bytes

    text = "".join(json.dumps(r, allow_nan=True) + "\n" for r in records)
    atomic_write_bytes(path, text.encode())


def _checkpoint_epoch(path: Path) -> int | None:
    """The epoch of the checkpoint at ``path``; ``None`` when there is none or it is unreadable."""
    from hpacell.classifier.model import CheckpointError

    if not path.is_file():
        return None
    try:
        return int(read_checkpoint(path).get("epoch", -1))
    except CheckpointError:
        return None


def _resumed_records(ckpt: dict[str, Any], metrics_path: Path, start: int) -> list[dict[str, Any]]:
    """The records of the epochs before ``start``: from ``last.pt`` (older checkpoints: metrics.jsonl,
    completed by the last epoch's own figures when its line was lost)."""
    if ckpt.get("records") is not None:
        return [r for r in ckpt["records"] if r["epoch"] < start]
    records = [r for r in _read_metrics(metrics_path) if r["epoch"] < start]
    if ckpt.get("metrics") and all(r["epoch"] != ckpt["epoch"] for r in records):
        records.append(dict(ckpt["metrics"]))
    return records


def plot_curves(records: Sequence[dict[str, Any]], png: Path) -> Path:
    """Loss parts and validation metrics per epoch, written atomically to ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hpacell.utils.files import atomic_write_bytes

    ep = [r["epoch"] for r in records]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for k in ("train_loss", "train_bce", "train_triplet", "val_loss"):
        if any(k in r for r in records):
            a1.plot(ep, [r.get(k, np.nan) for r in records], marker="o", label=k)
    a1.set_xlabel("epoch")
    a1.set_title("loss")
    a1.legend()
    for k in ("val_macro_f1", "val_macro_f1_tuned", "val_map"):
        a2.plot(ep, [r.get(k, np.nan) for r in records], marker="o", label=k)
    a2.set_xlabel("epoch")
    a2.set_title(f"validation ({records[-1].get('val_targets', '')})" if records else "validation")
    a2.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return atomic_write_bytes(png, buf.getvalue())


def _score(rec: dict[str, Any], metric: str) -> float:
    if metric == "val_loss":
        return -rec["val_loss"]
    v = rec["val_map"] if metric == "map" else rec["val_macro_f1"]
    return -math.inf if v is None or not np.isfinite(v) else float(v)


# --------------------------------------------------------------------------- resume
def check_resume(out_dir: str | os.PathLike, config: TrainConfig) -> dict[str, Any] | None:
    """``RUN/last.pt`` checked against the options of a resume, before anything is written.

    Returns the checkpoint dict (``None`` when there is no ``last.pt``: a new run).
    A resume may change only :data:`~hpacell.classifier.training.config.RESUME_MAY_CHANGE`
    (the length, LR and schedule, and where it runs), and ``epochs`` not below the
    finished epochs.

    Raises
    ------
    CheckpointError, InputError
        ``last.pt`` is unreadable or of another kind, or the options change what it fixes.
    """
    last = Path(out_dir) / "last.pt"
    if not last.exists():
        return None
    new = config.model_dump(mode="json")
    ckpt = read_checkpoint(last, kind=checkpoint_kind(new))
    for key in ("optimizer", "scheduler", "rng", "epoch"):
        if key not in ckpt:
            raise InputError(f"{last}: no {key!r} in it: not a training checkpoint that can be resumed")
    conflicts = resume_conflicts(ckpt["config"], config)
    if conflicts:
        allowed = ", ".join(sorted(RESUME_MAY_CHANGE - {"lr_find_steps", "lr_find_min", "lr_find_max"}))
        raise InputError(
            f"{last}: --resume cannot change {'; '.join(conflicts)} (a resume may change only {allowed}); "
            "train into a new --out instead"
        )
    done = int(ckpt["epoch"]) + 1
    if config.epochs < done:
        raise InputError(f"{last}: the run has finished {done} epochs; --epochs {config.epochs} is fewer")
    return ckpt


def _reset_hyperparameters(optimizer: torch.optim.Optimizer, fresh: list[dict[str, Any]]) -> None:
    """After ``load_state_dict``: the new config's LRs etc., and no keys of the old schedule."""
    for group, new in zip(optimizer.param_groups, fresh, strict=True):
        for key in [k for k in group if k != "params" and k not in new]:
            del group[key]
        group.update(new)


def _fast_forward(scheduler, steps: int) -> None:
    """Step a freshly built scheduler ``steps`` times (as many as the run has already taken)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "scheduler.step() before optimizer.step()"
        for _ in range(steps):
            scheduler.step()


# --------------------------------------------------------------------------- the loop
def fit(
    data: TrainData,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    resume: bool = False,
    hooks: Sequence[Hook] = (),
    distributed: bool = True,
) -> dict[str, Any]:
    """Train, validate and checkpoint every epoch; returns the summary (also ``summary.json``).

    ``hooks`` are called as ``hook(epoch, record)`` after each epoch's outputs
    are written (tests use one to simulate a kill). Under torchrun/srun the ranks
    train one model together (DDP); ``distributed=False`` trains this process's own
    model on its local device (the fold models of label refinement).
    """
    out = Path(out_dir)
    last_path, best_path, metrics_path = out / "last.pt", out / "best.pt", out / "metrics.jsonl"
    if last_path.exists() and not resume:
        raise FileExistsError(f"{last_path} exists: pass resume=True (--resume) or use another output folder")
    ckpt = check_resume(out, config) if resume else None  # nothing is written before this agrees
    if len(data.train) == 0 or len(data.val) == 0:
        raise InputError(f"empty split: {len(data.train)} training and {len(data.val)} validation samples")
    out.mkdir(parents=True, exist_ok=True)

    dist_info = (
        setup_distributed(config.device) if distributed else DistInfo(local_rank=launch_info().local_rank)
    )
    device = resolve_device(config.device, dist_info.local_rank)
    seed_everything(config.seed + dist_info.rank, wants_deterministic(config, device))
    model = build_model(config, data).to(device)
    if config.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, config.ema_decay) if config.ema_decay else None
    loss_fn = build_loss(config, data, distributed=dist_info.world_size > 1)
    optimizer = make_optimizer(model, config)
    # one loader for the whole run: its workers persist, set_loader_epoch moves it from epoch to epoch
    train_loader = make_train_loader(data.train, data.train_labels, config, 0, **_ranks(dist_info))
    n_batches = len(train_loader)
    if config.limit_train_batches:
        n_batches = min(n_batches, config.limit_train_batches)
    if n_batches == 0:
        raise InputError(
            f"{len(data.train)} training samples make no batch of {config.batch_size} "
            f"(over {dist_info.world_size} rank(s)); a batch needs at least 2 samples"
        )
    steps_per_epoch = math.ceil(n_batches / config.accumulate)
    scaler = torch.amp.GradScaler(
        "cuda", enabled=device.type == "cuda" and config.amp and config.amp_dtype == "fp16"
    )

    start, best_score, best_epoch, done_steps = 0, -math.inf, -1, 0
    records: list[dict[str, Any]] = []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if ema is not None and ckpt.get("ema"):
            ema.module.load_state_dict(ckpt["ema"])
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        optimizer.load_state_dict(ckpt["optimizer"])
        _reset_hyperparameters(optimizer, fresh)  # a resume applies the new lr / weight decay
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        start, best_score, best_epoch = ckpt["epoch"] + 1, ckpt["best_score"], ckpt["best_epoch"]
        done_steps = int(ckpt.get("steps", ckpt["scheduler"].get("last_epoch", 0)))
        records = _resumed_records(ckpt, metrics_path, start)
        if dist_info.is_main:
            _write_metrics(metrics_path, records)  # the finished epochs, as last.pt knows them
            if ckpt["best_epoch"] == ckpt["epoch"] and _checkpoint_epoch(best_path) != ckpt["epoch"]:
                save_checkpoint(best_path, ckpt)  # killed between last.pt and best.pt
        log.info("resuming %s after epoch %d", out, ckpt["epoch"])
    elif dist_info.is_main and metrics_path.exists():
        metrics_path.unlink()
    # the schedule spans the whole run as it is now planned: the steps taken plus those to come
    scheduler = make_scheduler(optimizer, config, done_steps + (config.epochs - start) * steps_per_epoch)
    _fast_forward(scheduler, done_steps)

    base = {
        "kind": checkpoint_kind(config.model_dump(mode="json")),
        "config": config.model_dump(mode="json"),
        "classes": list(data.classes),
        "taxonomy": data.taxonomy,
        "feature_columns": list(data.feature_columns),
        "crop_size": int(data.crop_size),
        "in_chans": int(data.in_chans),
    }
    val_loader = make_eval_loader(data.val, config) if dist_info.is_main else None
    ddp_model: nn.Module = model
    frozen_state: bool | None = None
    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        frozen = epoch < config.warmup_epochs
        if frozen != frozen_state:
            set_backbone_trainable(model, not frozen)
            if dist_info.world_size > 1:  # DDP registers the trainable parameters at construction
                from torch.nn.parallel import DistributedDataParallel as DDP

                ids = [device.index] if device.type == "cuda" else None
                ddp_model = DDP(model, device_ids=ids)
            frozen_state = frozen
        ddp_model.train()
        if frozen:
            model.backbone.eval()
        loader = set_loader_epoch(train_loader, epoch)
        step = train_step_fn(ddp_model, loss_fn, device, config)
        rec: dict[str, Any] = {"epoch": epoch, "backbone_frozen": frozen}
        rec["lr_head"] = optimizer.param_groups[1]["lr"]
        rec["lr_backbone"] = 0.0 if frozen else optimizer.param_groups[0]["lr"]
        rec.update(train_one_epoch(ddp_model, loader, step, optimizer, scheduler, scaler, config, ema, model))
        if dist_info.is_main:
            eval_model = ema.module if ema is not None else model
            pred = predict(eval_model, val_loader, device, config)
            vrec, y_val, p_val = validation_metrics(pred, data, loss_fn)
            rec.update(vrec)
            rec["time_s"] = time.perf_counter() - t0
            score = _score(rec, config.select_metric)
            thresholds = tune_thresholds(y_val, p_val).tolist()
            improved = score > best_score or best_epoch < 0
            if improved:
                best_score, best_epoch = score, epoch
            rec["best_epoch"] = best_epoch
            records.append(rec)
            state = {
                **base,
                "model": model.state_dict(),
                "ema": ema.module.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "epoch": epoch,
                "steps": int(scheduler.last_epoch),
                "thresholds": thresholds,
                "metrics": {k: v for k, v in rec.items() if not k.startswith("val_per_class")},
                "records": records,  # every finished epoch's record: metrics.jsonl can be rebuilt from it
                "best_score": best_score,
                "best_epoch": best_epoch,
                "rng": _rng_state(),
            }
            # metrics first: a kill before last.pt reruns this epoch and rewrites its line; best.pt last:
            # a kill before it is repaired by the resume (last.pt then holds the best epoch)
            _write_metrics(metrics_path, records)
            save_checkpoint(last_path, state)
            if improved:
                save_checkpoint(best_path, state)
            plot_curves(records, out / "curves.png")
            log.info(
                "epoch %d: loss %.4f val_loss %.4f macro-F1 %.3f (tuned %.3f) mAP %.3f [%s]",
                epoch,
                rec.get("train_loss", float("nan")),
                rec["val_loss"],
                rec["val_macro_f1"],
                rec["val_macro_f1_tuned"],
                rec["val_map"],
                rec["val_targets"],
            )
        if dist_info.world_size > 1:
            import torch.distributed as dist

            dist.barrier()
        for hook in hooks:
            hook(epoch, rec)

    summary: dict[str, Any] = {}
    if dist_info.is_main:
        best = next((r for r in records if r["epoch"] == best_epoch), None)
        if best is None:  # an old run whose metrics.jsonl lost the best epoch: best.pt still has it
            best = read_checkpoint(best_path).get("metrics") or {} if best_path.is_file() else {}
        y_val = data.val_truth[data.val_truth_mask] if data.val_truth is not None else data.val_labels
        if data.val_truth is not None and data.val_truth_mask is None:
            y_val = data.val_truth
        summary = {
            "best_epoch": best_epoch,
            "epochs": config.epochs,
            "best": {k: v for k, v in best.items() if not k.startswith("val_per_class")},
            "baseline": frequency_baseline(data.train_labels, y_val),
            "data": data.info,
        }
        from hpacell.utils.files import atomic_write_bytes

        atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    teardown_distributed(dist_info)
    return summary


def _ranks(d: DistInfo) -> dict[str, int]:
    return {"rank": d.rank, "world_size": d.world_size}


def train_cells(
    cells_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train the cell classifier on a cell dataset (``hpacell crop`` output); returns fit's summary.

    The library call behind ``hpacell train-cells``: :func:`build_cell_data`
    (image-wise split, transforms, per-cell targets) then :func:`fit`; with
    ``config.refine_rounds`` the targets are first refined into ``OUT/refine/``
    (:func:`hpacell.classifier.training.refine.relabel`).

    Examples
    --------
    >>> summary = train_cells("run/cells", "run/cls", TrainConfig(model="resnet18"))  # doctest: +SKIP
    """
    config = config if config is not None else TrainConfig()
    labels = None
    if config.refine_rounds > 0:  # label refinement first (README: "Weak supervision")
        from hpacell.classifier.training.refine import LABELS_FILE, relabel

        labels = Path(out_dir) / "refine" / LABELS_FILE
        if not (resume and labels.is_file() and (Path(out_dir) / "last.pt").is_file()):
            labels = relabel(cells_dir, Path(out_dir) / "refine", config)
        # else: the resumed run keeps the targets it started with (e.g. more --epochs)
    return fit(build_cell_data(cells_dir, config, cell_labels=labels), config, out_dir, resume=resume)
