"""The whole pipeline at real size: time, memory and output size of every stage.

Generates realistic synthetic data (``hpacell synth``: by default 24 images of
2048 px, 16-bit, ``--cell-scale 1.7``, i.e. real HPA cell sizes) and runs each
stage as its own CLI process, as a user would::

    synth -> segment -> crop -> train-cells (a few batches) -> predict -> evaluate

For every stage it records wall seconds, CPU seconds (the stage's process and
all its workers), images/s or cells/s, the peak resident memory of the largest
process of the stage (``peak_rss_mb``, exact: ``wait4`` rusage, which covers
waited-for workers), the peak summed RSS of the stage's process tree
(``peak_tree_rss_mb``, sampled every 0.2 s with psutil) and the bytes it wrote.
A stage that fails is recorded with its exit code and the tail of its stderr
(``error``); the next stages run on what it wrote (e.g. crop exits 1 when one
image failed but writes the others) and are left out when it wrote nothing.

    python benchmarks/pipeline_scale.py                                  # 24 x 2048 px
    python benchmarks/pipeline_scale.py --images 16 --size 3072          # HPA's largest images
    python benchmarks/pipeline_scale.py --images 8 --size 2048 --height 1728   # non-square

The last stdout line is one JSON object ``{"config": {...}, "stages": {...}}``.
Synthetic data are kept in ``--out`` and reused by a rerun with the same
parameters (``--fresh`` regenerates everything).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path


def _tree_rss_sampler(pid: int, stop: threading.Event, peak: list[int]) -> None:
    try:
        import psutil
    except ImportError:
        return
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        peak[0] = max(peak[0], total)
        stop.wait(0.2)


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def run_stage(name: str, args: list[str], out: Path, log_dir: Path) -> dict:
    """Run ``hpacell ARGS`` as a child process; its time, CPU, memory and output bytes."""
    cmd = [sys.executable, "-m", "hpacell.workflows.cli", *args]
    log_dir.mkdir(parents=True, exist_ok=True)
    err_path = log_dir / f"{name}.stderr"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with open(log_dir / f"{name}.stdout", "wb") as so, open(err_path, "wb") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env)
        stop, peak = threading.Event(), [0]
        sampler = threading.Thread(target=_tree_rss_sampler, args=(proc.pid, stop, peak), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
    wall = time.perf_counter() - t0
    rec = {
        "seconds": round(wall, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        "peak_tree_rss_mb": round(peak[0] / 2**20, 1) if peak[0] else None,
        "output_bytes": folder_bytes(out) if out.exists() else 0,
        "command": "hpacell " + " ".join(args),
    }
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace").strip().splitlines()[-3:]
        rec["error"] = f"exit {proc.returncode}: " + " | ".join(tail)
    print(json.dumps({name: rec}), flush=True)
    return rec


def _n_cells(cells: Path) -> int | None:
    try:
        import pandas as pd

        return len(pd.read_parquet(cells / "cells.parquet", columns=["cell"]))
    except (OSError, ValueError, ImportError):
        return None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24, help="synthetic images (default 24)")
    ap.add_argument("--size", type=int, default=2048, help="image width in px (default 2048; HPA: 1728-3072)")
    ap.add_argument("--height", type=int, default=None, help="image height (default --size: square)")
    ap.add_argument("--cell-scale", type=float, default=1.7, help="1.7 = real 2048-px HPA cell sizes")
    ap.add_argument("--bit-depth", type=int, default=16, choices=(8, 16))
    ap.add_argument("--workers", type=int, default=2, help="worker processes of every stage")
    ap.add_argument("--out", type=Path, default=Path("out/pipeline_scale"))
    ap.add_argument("--crop-size", type=int, default=256, help="hpacell crop --size")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--train-crop", type=int, default=224, help="train-cells --crop-size")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--train-batches", type=int, default=3, help="training batches per epoch")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true", help="regenerate the synthetic data too")
    args = ap.parse_args(argv)

    out: Path = args.out
    height = args.height or args.size
    synth = out / f"synth-{args.images}x{args.size}x{height}-s{args.cell_scale}-b{args.bit_depth}-{args.seed}"
    work = out / "work"
    if args.fresh and synth.exists():
        shutil.rmtree(synth)
    if work.exists():
        shutil.rmtree(work)  # every stage after synth runs from scratch
    logs = work / "logs"
    w = str(args.workers)
    stages: dict[str, dict] = {}

    synth_args = ["synth", str(synth), "--images", str(args.images), "--size", str(args.size)]
    synth_args += ["--height", str(height), "--cell-scale", str(args.cell_scale), "--seed", str(args.seed)]
    synth_args += ["--bit-depth", str(args.bit_depth), "--workers", w]
    reused = (synth / "synth.json").is_file()
    stages["synth"] = run_stage("synth", synth_args, synth, logs)
    stages["synth"]["reused_existing"] = reused  # a rerun with the same parameters only checks the files
    stages["synth"]["images_per_s"] = round(args.images / stages["synth"]["seconds"], 3)
    images = synth / "images"

    seg = work / "segment"
    if any(images.glob("*_red.png")):
        stages["segment"] = run_stage(
            "segment", ["segment", str(images), "--out", str(seg), "-j", w], seg, logs
        )
        stages["segment"]["images_per_s"] = round(args.images / stages["segment"]["seconds"], 3)

    cells = work / "cells"
    if any((seg / "masks").glob("*_cellmask.png")):
        crop = ["crop", str(images), "--masks", str(seg / "masks"), "--out", str(cells)]
        crop += ["--labels", str(synth / "train.csv"), "--size", str(args.crop_size), "-j", w]
        stages["crop"] = run_stage("crop", crop, cells, logs)
        n = _n_cells(cells)
        stages["crop"]["cells"] = n
        if n:
            stages["crop"]["cells_per_s"] = round(n / stages["crop"]["seconds"], 1)
            stages["crop"]["cells_per_cpu_s"] = round(n / max(stages["crop"]["cpu_seconds"], 1e-9), 1)

    run = work / "train"
    if (cells / "cells.parquet").is_file():
        train = ["train-cells", str(cells), "--out", str(run), "--model", args.model]
        train += ["--crop-size", str(args.train_crop), "--batch-size", str(args.batch_size)]
        train += ["--epochs", str(args.epochs), "--limit-train-batches", str(args.train_batches)]
        train += [
            "--warmup-epochs",
            "0",
            "--num-workers",
            w,
            "--device",
            args.device,
            "--seed",
            str(args.seed),
            "--folds",
            str(max(2, min(5, args.images))),
            "--refine-rounds",  # the throughput of one training run (refinement adds ~one more)
            "0",
        ]
        stages["train-cells"] = run_stage("train-cells", train, run, logs)
        trained = args.epochs * args.train_batches * args.batch_size
        stages["train-cells"]["trained_cells"] = trained
        stages["train-cells"]["note"] = "includes model build and one validation pass per epoch"
        summary = run / "summary.json"
        if summary.is_file():
            stages["train-cells"]["validated_cells"] = json.loads(summary.read_text())["data"].get(
                "n_val_cells"
            )

    pred = work / "predict"
    if (run / "best.pt").is_file():
        predict = ["predict", str(run / "best.pt"), "--cells", str(cells), "--out", str(pred)]
        predict += [
            "--batch-size",
            str(args.batch_size),
            "--num-workers",
            w,
            "-j",
            w,
            "--device",
            args.device,
        ]
        predict += ["--no-report"]
        stages["predict"] = run_stage("predict", predict, pred, logs)
        n = _n_cells(cells)
        if n:
            stages["predict"]["cells_per_s"] = round(n / stages["predict"]["seconds"], 2)

    if (pred / "submission.csv").is_file():
        ev_json = work / "evaluate.json"
        evaluate = ["evaluate", str(pred / "submission.csv"), "--truth", str(synth), "--json", str(ev_json)]
        stages["evaluate"] = run_stage("evaluate", evaluate, ev_json, logs)
        stages["evaluate"]["images_per_s"] = round(args.images / stages["evaluate"]["seconds"], 2)
        if ev_json.is_file():
            ev = json.loads(ev_json.read_text())
            stages["evaluate"]["mAP"] = ev.get("mAP")

    result = {
        "benchmark": "pipeline_scale",
        "config": {
            "images": args.images,
            "width": args.size,
            "height": height,
            "cell_scale": args.cell_scale,
            "bit_depth": args.bit_depth,
            "workers": args.workers,
            "crop_size": args.crop_size,
            "model": args.model,
            "train_crop": args.train_crop,
            "batch_size": args.batch_size,
            "train_batches": args.train_batches,
            "epochs": args.epochs,
            "device": args.device,
            "cpus": os.cpu_count(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "stages": stages,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
