"""The GPU figures in one prepared run (<= 8 minutes on one GPU); prints JSON.

Sections (each recorded on its own; a failing one gets ``"error"`` and the rest go on):

* ``train``: train-cells throughput, **full pipeline vs raw model step**, side by side, with and
  without ``torch.compile``. Full = :func:`hpacell.classifier.training.train.train_one_epoch` (the
  loop of ``hpacell train-cells``) over a real ``CellDataset`` (memory-mapped shards of random
  256 px crops) with the training augmentation, resized to 224 px, through the persistent
  DataLoader workers of :func:`make_train_loader`, host-to-device copies, bf16 autocast,
  channels_last, BCE + triplet loss, AdamW. Raw = the same loop, model, loss and optimizer over one
  batch already on the GPU. Target: full >= 90% of raw.
* ``predict``: :func:`hpacell.classifier.scoring.predict.score_cells` cells/s (as ``hpacell
  predict`` runs it: fp32), and the same with bf16 autocast + channels_last.
* ``hpacellseg``: the hpacellseg backend's batched device path
  (:meth:`HpaCellSegBackend.infer_batch`: resize to 1/4, normalise, pad, both models, softmax) on
  2048 px image sets with a stand-in U-Net (encoder widths 32..512, 4 levels, the real 512 px
  input) pickled and loaded like the published files; images/s, fp32 and fp16 autocast. The
  stand-in is not DPN-UNet: its speed only bounds the real one's order of magnitude.
* ``ddp``: a 2-process DistributedDataParallel step over NCCL (resnet50, 224 px, bf16) when two GPUs
  exist; else skipped.

::

    python benchmarks/gpu_suite.py                 # on a GPU machine (defaults: resnet50, 224 px, batch 128)
    python benchmarks/gpu_suite.py --smoke         # seconds on a CPU: the same code paths, tiny sizes

The last stdout line is one JSON object. ``--budget`` (seconds, default 420) skips the sections
that would start after it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import write_random_cells  # noqa: E402 (the benchmark folder is not a package)


class StandInUNet(nn.Module):
    """A plain U-Net, (B, 3, H, W) -> (B, 3, H, W) logits, H and W multiples of 16."""

    def __init__(self, width: int = 32, levels: int = 4) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        widths = [width * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList(
            [block(3, widths[0])] + [block(a, b) for a, b in zip(widths, widths[1:], strict=False)]
        )
        self.up = nn.ModuleList([block(b + a, a) for a, b in zip(widths[:-1], widths[1:], strict=True)][::-1])
        self.head = nn.Conv2d(widths[0], 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for blk, skip in zip(self.up, skips[-2::-1], strict=True):
            x = nn.functional.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = blk(torch.cat([x, skip], 1))
        return self.head(x)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- train
def train_section(a: argparse.Namespace, cells: Path, device: torch.device, compiled: bool) -> dict:
    from hpacell.classifier.training.config import TrainConfig
    from hpacell.classifier.training.data import build_cell_data, make_train_loader, set_loader_epoch
    from hpacell.classifier.training.train import (
        build_loss,
        build_model,
        make_optimizer,
        make_scheduler,
        seed_everything,
        train_one_epoch,
        train_step_fn,
        wants_deterministic,
    )

    cfg = TrainConfig(
        model=a.model,
        batch_size=a.batch_size,
        crop_size=a.size,
        num_workers=a.workers,
        device=device.type,
        folds=10,
        warmup_epochs=0,
        schedule="constant",
        amp=True,
        amp_dtype="bf16",
        channels_last=True,
    )
    seed_everything(0, wants_deterministic(cfg, device))
    data = build_cell_data(cells, cfg)
    model = build_model(cfg, data).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, 10_000)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    loss_fn = build_loss(cfg, data)
    fwd = torch.compile(model) if compiled else model
    step = train_step_fn(fwd, loss_fn, device, cfg)
    loader = make_train_loader(data.train, data.train_labels, cfg, 0)
    if len(loader) < max(a.steps, a.warmup):
        raise RuntimeError(f"{len(loader)} batches per epoch, need {max(a.steps, a.warmup)}")

    def timed(batches, epoch_limit: int) -> float:
        cfg.limit_train_batches = epoch_limit
        _sync(device)
        t0 = time.perf_counter()
        train_one_epoch(fwd, batches, step, opt, sched, scaler, cfg)
        _sync(device)
        return time.perf_counter() - t0

    t_first = timed(set_loader_epoch(loader, 0), a.warmup)  # worker start, autotuning, compilation
    full_s = timed(set_loader_epoch(loader, 1), a.steps)
    first = next(iter(set_loader_epoch(loader, 2)))
    on_device = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in first.items()}
    if device.type == "cuda":
        on_device["image"] = on_device["image"].contiguous(memory_format=torch.channels_last)
    timed([on_device] * a.warmup, a.warmup)
    raw_s = timed([on_device] * a.steps, a.steps)
    n = a.steps * a.batch_size
    return {
        "compiled": compiled,
        "first_epoch_s": round(t_first, 2),
        "full_pipeline_cells_per_s": round(n / full_s, 1),
        "raw_model_step_cells_per_s": round(n / raw_s, 1),
        "full_over_raw": round(raw_s / full_s, 3),
        "target_full_over_raw": 0.9,
        "timed_steps": a.steps,
    }


# --------------------------------------------------------------------------- predict
class _Bf16ChannelsLast(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)
        self.classifier = getattr(model, "classifier", None)

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> dict:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return self.model(x.contiguous(memory_format=torch.channels_last), features)


def predict_section(a: argparse.Namespace, cells: Path, device: torch.device) -> dict:
    from hpacell.cellcrops.dataset import CellDataset
    from hpacell.classifier.model import create_model
    from hpacell.classifier.scoring.predict import score_cells
    from hpacell.classifier.training.data import eval_transform

    ds = CellDataset(cells, transform=eval_transform(a.size))
    model = create_model(a.model, num_classes=19).eval().to(device)
    out: dict = {"cells": len(ds), "batch_size": a.predict_batch, "workers": a.workers}
    variants = {"fp32": model}
    if device.type == "cuda":
        variants["bf16_channels_last"] = _Bf16ChannelsLast(model)
    kw = {"batch_size": a.predict_batch, "num_workers": a.workers, "device": device}
    for name, m in variants.items():
        score_cells(m, torch.utils.data.Subset(ds, range(min(len(ds), 2 * a.predict_batch))), **kw)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        score_cells(m, ds, **kw)
        _sync(device)
        out[f"cells_per_s_{name}"] = round(len(ds) / (time.perf_counter() - t0), 1)
    return out


# --------------------------------------------------------------------------- hpacellseg
def hpacellseg_section(a: argparse.Namespace, tmp: Path, device: torch.device) -> dict:
    from hpacell.segmentation.backends.hpacellseg import HpaCellSegBackend

    path = tmp / "standin_unet.pth"
    torch.save(StandInUNet(width=a.unet_width), path)  # a whole pickled module, like the Zenodo files
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (4, a.seg_size, a.seg_size), dtype=np.uint8) for _ in range(a.seg_images)]
    out: dict = {"image_px": a.seg_size, "model_input_px": a.seg_size // 4, "images": a.seg_images}
    out["unet_params_m"] = round(sum(p.numel() for p in StandInUNet(a.unet_width).parameters()) / 1e6, 2)
    for amp in (False, True) if device.type == "cuda" else (False,):
        be = HpaCellSegBackend(path, path, device=str(device), batch_size=a.seg_batch, amp=amp)
        be.infer_batch(images[: a.seg_batch])  # warm-up (cuDNN autotuning)
        _sync(device)
        t0 = time.perf_counter()
        be.infer_batch(images)
        _sync(device)
        out[f"images_per_s_{'fp16' if amp else 'fp32'}"] = round(len(images) / (time.perf_counter() - t0), 2)
    out["batch_size"] = a.seg_batch
    out["note"] = "device part only (infer_batch); labelling runs in CPU workers"
    return out


# --------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world: int, port: int, a: argparse.Namespace, result_file: str) -> None:
    import torch.distributed as dist

    from hpacell.classifier.model import create_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    device = torch.device("cuda", rank)
    torch.backends.cudnn.benchmark = True
    model = create_model(a.model, num_classes=19).to(device).to(memory_format=torch.channels_last)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank])
    opt = torch.optim.AdamW(ddp.parameters(), 1e-3)
    x = torch.randn(a.batch_size, 4, a.size, a.size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    y = (torch.rand(a.batch_size, 19, device=device) < 0.1).float()
    times = []
    for i in range(a.warmup + a.steps):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.binary_cross_entropy_with_logits(ddp(x)["logits"].float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        torch.cuda.synchronize(device)
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        step = float(np.median(times))
        res = {
            "world_size": world,
            "step_s": round(step, 4),
            "cells_per_s_total": round(world * a.batch_size / step, 1),
        }
        Path(result_file).write_text(json.dumps(res))
    dist.destroy_process_group()


def ddp_section(a: argparse.Namespace, tmp: Path) -> dict:
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return {"skipped": f"needs 2 GPUs, found {n}"}
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = tmp / "ddp.json"
    mp.spawn(_ddp_worker, args=(2, port, a, str(result)), nprocs=2, join=True)
    return {
        **json.loads(result.read_text()),
        "backend": "nccl",
        "model": a.model,
        "batch_per_gpu": a.batch_size,
    }


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (seconds; for the tests)")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--size", type=int, default=224, help="training/predict crop size (stored crops: 256)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=6, help="untimed steps first (compilation, autotuning)")
    ap.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--predict-batch", type=int, default=256)
    ap.add_argument("--seg-images", type=int, default=32)
    ap.add_argument("--seg-size", type=int, default=2048)
    ap.add_argument("--seg-batch", type=int, default=8)
    ap.add_argument("--unet-width", type=int, default=32)
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile runs")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds after which sections are skipped")
    a = ap.parse_args(argv)
    if a.smoke:
        a.model, a.size, a.batch_size, a.steps, a.warmup, a.workers = "resnet18", 32, 8, 2, 1, 1
        a.predict_batch, a.seg_images, a.seg_size, a.seg_batch, a.unet_width = 16, 2, 128, 2, 4
        a.no_compile = True
    cuda = torch.cuda.is_available() and not a.smoke
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    t_start = time.perf_counter()
    res: dict = {
        "benchmark": "gpu_suite",
        "smoke": a.smoke,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "model": a.model,
        "size": a.size,
        "batch_size": a.batch_size,
        "dataloader_workers": a.workers,
    }

    def run(name: str, fn, *args) -> None:
        if time.perf_counter() - t_start > a.budget:
            res[name] = {"skipped": f"time budget of {a.budget:.0f} s used"}
        else:
            t0 = time.perf_counter()
            try:
                res[name] = fn(*args)
            except Exception as e:  # noqa: BLE001 - one section failing must not lose the others
                traceback.print_exc()
                res[name] = {"error": f"{type(e).__name__}: {e}"}
            res[name]["section_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({name: res[name]}), file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stored = 256 if not a.smoke else 48
        n_cells = int(max(a.steps, a.warmup) * a.batch_size * 1.25) + 64  # 10% validation, full epochs
        cells = write_random_cells(tmp / "cells", n_cells, stored)
        res["cells"], res["stored_crop_px"] = n_cells, stored
        run("train", train_section, a, cells, device, False)
        if a.no_compile:
            res["train_compiled"] = {"skipped": "--no-compile" if not a.smoke else "smoke mode"}
        else:
            run("train_compiled", train_section, a, cells, device, True)
        run("predict", predict_section, a, cells, device)
        run("hpacellseg", hpacellseg_section, a, tmp, device)
        run("ddp", ddp_section, a, tmp)
    res["total_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(res), flush=True)
    return res


if __name__ == "__main__":
    main()
