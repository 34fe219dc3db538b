"""Training throughput of the full cell pipeline vs the raw model step, in one run.

Full pipeline = CellDataset (memory-mapped shards) -> DataLoader workers ->
augmentation -> host-to-device -> forward under autocast -> BCE + triplet ->
backward -> AdamW step (the code path of ``hpacell train-cells``). Raw = the
same model and optimizer stepping on random tensors already on the device
with plain BCE. Prints one JSON object; target: full >= 90% of raw.

GPU (the target setting)::

    python benchmarks/train_throughput.py --model resnet50 --size 224 --batch-size 128 --workers 12

CPU smoke run (defaults without CUDA: resnet18, 64 px, batch 16, a few steps)::

    python benchmarks/train_throughput.py

``--cells CELLS`` uses a real ``hpacell crop`` folder; otherwise a temporary
one of random crops (stored at ``--size``) is written first.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def write_random_cells(folder: Path, n: int, size: int, n_classes: int = 19, seed: int = 0) -> Path:
    """A CELLS folder of ``n`` random crops in the ``hpacell crop`` layout."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arr = np.lib.format.open_memmap(folder / "shard-00000.npy", "w+", np.uint8, (n, 4, size, size))
    for i in range(0, n, 256):
        arr[i : i + 256] = rng.integers(0, 255, arr[i : i + 256].shape, dtype=np.uint8)
    arr.flush()
    del arr
    per_image = 8
    labels = [
        sorted(set(rng.integers(0, n_classes, rng.integers(1, 3)).tolist()))
        for _ in range(n // per_image + 1)
    ]
    table = pd.DataFrame(
        {
            "cell_uid": [f"img{i // per_image}_{i % per_image + 1}" for i in range(n)],
            "image_id": [f"img{i // per_image}" for i in range(n)],
            "cell": [i % per_image + 1 for i in range(n)],
            "shard": 0,
            "row": np.arange(n),
            "labels": [labels[i // per_image] for i in range(n)],
        }
    )
    table.to_parquet(folder / "cells.parquet")
    meta = {"version": 1, "crop_size": size, "channels": ["red", "green", "blue", "yellow"]}
    meta |= {"taxonomy": "hpa2021", "classes": [f"c{k}" for k in range(n_classes)], "n_cells": n}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=Path, default=None)
    ap.add_argument("--model", default="resnet50" if cuda else "resnet18")
    ap.add_argument("--size", type=int, default=224 if cuda else 64)
    ap.add_argument("--batch-size", type=int, default=128 if cuda else 16)
    ap.add_argument("--steps", type=int, default=40 if cuda else 6, help="timed steps")
    ap.add_argument("--warmup", type=int, default=8 if cuda else 2, help="untimed steps first")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--triplet-lambda", type=float, default=0.1)
    args = ap.parse_args()

    from hpacell.classifier.training.config import TrainConfig
    from hpacell.classifier.training.data import build_cell_data, make_train_loader
    from hpacell.classifier.training.losses import bce_loss
    from hpacell.classifier.training.train import (
        build_loss,
        build_model,
        make_optimizer,
        resolve_device,
        train_step_fn,
    )

    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True
    cfg = TrainConfig(
        model=args.model,
        batch_size=args.batch_size,
        crop_size=args.size,
        num_workers=args.workers,
        device=device.type,
        triplet_lambda=args.triplet_lambda,
        amp=True,
        amp_dtype="bf16",
        channels_last=True,
        folds=2,
        deterministic=False,
    )
    n_steps = args.steps + args.warmup
    with tempfile.TemporaryDirectory() as tmp:
        cells = args.cells or write_random_cells(
            Path(tmp) / "cells", 2 * n_steps * args.batch_size + 16, args.size
        )
        data = build_cell_data(cells, cfg)
        model = build_model(cfg, data).to(device).train()
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        opt = make_optimizer(model, cfg)
        step = train_step_fn(model, build_loss(cfg, data), device, cfg)

        def update(loss: torch.Tensor) -> None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        # full pipeline
        loader = make_train_loader(data.train, data.train_labels, cfg, epoch=0)
        if len(loader) < n_steps:
            raise SystemExit(f"{cells}: {len(loader)} batches, need {n_steps}")
        t0 = None
        for i, batch in enumerate(loader):
            if i == args.warmup:
                _sync(device)
                t0 = time.perf_counter()
            if i == n_steps:
                break
            update(step(batch)["loss"])
        _sync(device)
        full_s = time.perf_counter() - t0
        full = args.steps * args.batch_size / full_s

        # raw model step on random device tensors
        n_cls = len(data.classes)
        x = torch.randn(args.batch_size, 4, args.size, args.size, device=device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        y = (torch.rand(args.batch_size, n_cls, device=device) < 0.1).float()
        ac = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if device.type == "cuda"
            else torch.autocast("cpu", enabled=False)
        )
        for i in range(n_steps):
            if i == args.warmup:
                _sync(device)
                t0 = time.perf_counter()
            with ac:
                out = model(x)
            update(bce_loss(out["logits"], y))
        _sync(device)
        raw = args.steps * args.batch_size / (time.perf_counter() - t0)

    workers = cfg.num_workers if cfg.num_workers is not None else "default"
    print(
        json.dumps(
            {
                "benchmark": "train_throughput",
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "model": args.model,
                "size": args.size,
                "batch_size": args.batch_size,
                "workers": workers,
                "amp": "bf16" if device.type == "cuda" else "fp32",
                "channels_last": device.type == "cuda",
                "timed_steps": args.steps,
                "full_pipeline_cells_per_s": round(full, 2),
                "raw_model_cells_per_s": round(raw, 2),
                "full_over_raw": round(full / raw, 3),
                "target_full_over_raw": 0.9,
            }
        )
    )


if __name__ == "__main__":
    main()
