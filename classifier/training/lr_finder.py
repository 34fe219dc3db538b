"""Learning-rate range test: an exponential LR sweep, loss vs LR plot, a suggestion.

The LR rises from ``lr_find_min`` to ``lr_find_max`` over ``lr_find_steps``
optimizer steps (the head LR; the backbone keeps its ``backbone_lr_mult``
ratio, all layers trainable). The loss is smoothed with an exponential moving
average (bias-corrected, beta 0.98); the sweep stops early once it exceeds 4x
its minimum. The suggested LR is the one with the steepest descent of the
smoothed loss. The model's initial weights are restored afterwards.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpacell.classifier.training.config import TrainConfig
from hpacell.classifier.training.data import TrainData, make_train_loader

log = logging.getLogger(__name__)


def suggest_lr(lrs: np.ndarray, losses: np.ndarray) -> float:
    """LR at the steepest descent of the (smoothed) loss against log LR.

    Examples
    --------
    >>> lrs = np.logspace(-5, 0, 50)
    >>> losses = 1 / (1 + np.exp(4 * (np.log10(lrs) + 3)))   # steepest drop at 1e-3
    >>> bool(5e-4 < suggest_lr(lrs, losses) < 2e-3)
    True
    """
    lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
    if len(lrs) < 3:
        return float(lrs[0]) if len(lrs) else float("nan")
    grad = np.gradient(losses, np.log10(lrs))
    return float(lrs[int(np.argmin(grad))])


def lr_find(
    model: torch.nn.Module,
    data: TrainData,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Run the sweep; writes ``lr_find.png`` and ``lr_find.json`` into ``out_dir``."""
    from tqdm import tqdm

    from hpacell.classifier.training.train import build_loss, make_optimizer, train_step_fn

    device = torch.device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = copy.deepcopy(model.state_dict())
    model.to(device).train()
    loss_fn = build_loss(config, data)
    optimizer = make_optimizer(model, config)
    base = [g["lr"] for g in optimizer.param_groups]
    head0 = base[1]
    steps = config.lr_find_steps
    factor = (config.lr_find_max / config.lr_find_min) ** (1.0 / max(steps - 1, 1))
    step = train_step_fn(model, loss_fn, device, config)
    lrs, raw, smooth = [], [], []
    avg, best, beta = 0.0, float("inf"), 0.98
    epoch, it = 0, iter(make_train_loader(data.train, data.train_labels, config, 0))
    for i in tqdm(range(steps), desc="lr-find", disable=None):
        lr = config.lr_find_min * factor**i
        for g, b in zip(optimizer.param_groups, base, strict=True):
            g["lr"] = lr * b / head0
        try:
            batch = next(it)
        except StopIteration:
            epoch += 1
            it = iter(make_train_loader(data.train, data.train_labels, config, epoch))
            batch = next(it)
        loss = step(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        v = float(loss.detach())
        if not np.isfinite(v):
            break
        avg = beta * avg + (1 - beta) * v
        s = avg / (1 - beta ** (i + 1))
        lrs.append(lr)
        raw.append(v)
        smooth.append(s)
        best = min(best, s)
        if i > 10 and s > 4 * best:
            break
    model.load_state_dict(saved)
    # ignore the noisy start and the blow-up when suggesting
    lo = min(5, max(len(lrs) - 3, 0))
    stop = int(np.argmin(smooth)) + 1 if smooth else 0
    sug = suggest_lr(np.array(lrs[lo:stop]), np.array(smooth[lo:stop])) if stop - lo >= 3 else float("nan")
    result = {"lrs": lrs, "loss": raw, "smoothed_loss": smooth, "suggested_lr": sug, "steps_run": len(lrs)}
    from hpacell.utils.files import atomic_write_bytes

    atomic_write_bytes(out / "lr_find.json", json.dumps(result, indent=1).encode())
    _plot(result, out / "lr_find.png")
    log.info("LR finder: suggested head LR %.3g (%d steps)", sug, len(lrs))
    return result


def _plot(result: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hpacell.utils.files import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result["lrs"], result["loss"], alpha=0.3, label="loss")
    ax.plot(result["lrs"], result["smoothed_loss"], label="smoothed")
    if np.isfinite(result["suggested_lr"]):
        ax.axvline(
            result["suggested_lr"], color="r", ls="--", label=f"suggested {result['suggested_lr']:.2g}"
        )
    ax.set_xscale("log")
    ax.set_xlabel("head learning rate")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(png, buf.getvalue())
