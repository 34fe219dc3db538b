"""What weak supervision costs and how much each method recovers, on synthetic data with per-cell truth.

Same synth data, model and budget for every run: training targets inherited from the image labels
(``inherit``), each weak-supervision method, and the true per-cell labels of ``synth``'s ``cells.csv``
(``truth``, the upper bound). Every model (its ``last.pt``) scores held-out synth images and
``evaluate`` compares them with the per-cell truth (mAP, mAP_strict; the box mode too when the
installed ``evaluate`` has one). Prints one JSON object: per method mean, sd and values over seeds,
seconds per run, and the recovered share ``(m - random) / (truth - random)`` of the means, where
``random`` scores every test cell with uniform random numbers.

Default (the issue's setting: 200 + 40 images of 512 px, 64 px crops, resnet18, 9 epochs, seeds 0-2;
estimated 20-35 min on an idle 2-core CPU from train_throughput.py's ~160 cells/s, not yet measured)::

    python benchmarks/weak_supervision.py

Reduced (the README figures; seeds as parallel processes, then summarised)::

    python benchmarks/weak_supervision.py --crop-size 32 --epochs 5 --seeds 0   # and 1, 2
    python benchmarks/weak_supervision.py --crop-size 32 --epochs 5 --seeds 0,1,2 --summarize-only

Methods: ``inherit``, ``mil`` (``weak_loss=mil``, ``mil_cell_weight=0``: pure MIL), ``mil_zero`` (mil with
the inherited Negative 0),
``mil_hybrid`` (mil plus the inherited per-cell BCE on the image's classes, ``mil_cell_weight=1``),
``refine`` (one round of label refinement, hard rule), ``refine_soft``, ``refine_t03`` (hard rule,
threshold 0.3), ``refine_keep_negative`` (no cell made Negative: a cell left without a class has no
positive target), ``refine2_soft`` (two rounds, soft rule), ``refine_soft_mix`` (soft
targets averaged with the inherited ones), ``refine_mil`` (refinement
from MIL-trained fold models, final model plain BCE on the refined targets), ``truth``.
Synth data and crops are cached in ``--work``; runs are redone each call.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

HARD = {"refine_rounds": 1, "refine_rule": "hard", "refine_mix": 1.0}  # every refine setting explicit
METHODS: dict[str, dict[str, Any]] = {
    "inherit": {},
    "mil": {"weak_loss": "mil", "mil_cell_weight": 0.0},  # pure MIL
    "mil_zero": {"weak_loss": "mil", "mil_cell_weight": 0.0, "mil_negative": "zero"},
    "mil_hybrid": {"weak_loss": "mil", "mil_cell_weight": 1.0},  # + the inherited per-cell positives
    "refine": HARD,
    "refine_soft": {**HARD, "refine_rule": "soft"},
    "refine_t03": {**HARD, "refine_threshold": 0.3},  # drops only clearly low-scoring classes
    "refine_keep_negative": {**HARD, "refine_negative": False},  # no cell made Negative
    "refine2_soft": {**HARD, "refine_rounds": 2, "refine_rule": "soft"},  # round 2 learns round 1's targets
    "refine_soft_mix": {**HARD, "refine_rule": "soft", "refine_mix": 0.5},  # = --refine-rounds 1 (defaults)
    "refine_soft_mix03": {**HARD, "refine_rule": "soft", "refine_mix": 0.3},  # nearer the inherited labels
    "refine_soft_mix07": {**HARD, "refine_rule": "soft", "refine_mix": 0.7},  # nearer the refined targets
    "refine_mil": {**HARD, "weak_loss": "mil"},  # fold models only (see run_method)
    "truth": {},  # cell_labels = synth's cells.csv
}


def prepare(args: argparse.Namespace) -> dict[str, Path]:
    """Synth train/test folders and their crops (with the truth masks), cached in ``--work``."""
    from hpacell.cellcrops.shards import CropOptions, build_cell_dataset
    from hpacell.cellcrops.synth import make_synth_dataset

    w = Path(args.work)
    tr, te = (
        w / f"synth-train-{args.train_images}-{args.size}-s{args.train_seed}",
        w / f"synth-test-{args.test_images}-{args.size}-s{args.test_seed}",
    )
    make_synth_dataset(tr, args.train_images, args.size, args.train_seed, workers=args.workers)
    make_synth_dataset(te, args.test_images, args.size, args.test_seed, workers=args.workers)
    ctr, cte = w / f"{tr.name}-cells{args.crop_size}", w / f"{te.name}-cells{args.crop_size}"
    opts = CropOptions(size=args.crop_size)
    build_cell_dataset(
        tr / "images", tr / "masks", ctr, labels=tr / "train.csv", options=opts, workers=args.workers
    )
    build_cell_dataset(te / "images", te / "masks", cte, options=opts, workers=args.workers)
    return {"train": tr, "test": te, "cells_train": ctr, "cells_test": cte}


def score(submission: Path, truth: Path) -> dict[str, float]:
    """mAP and mAP_strict of a submission (and the box mode when ``evaluate`` has one)."""
    from hpacell.classifier.scoring.evaluate import evaluate_files

    ev = evaluate_files(submission, truth).summary()
    out = {"mAP": ev["mAP"], "mAP_strict": ev["mAP_strict"]}
    if "match" in inspect.signature(evaluate_files).parameters:
        box = evaluate_files(submission, truth, match="box").summary()
        out |= {"mAP_box": box["mAP"], "mAP_strict_box": box["mAP_strict"]}
    return out


def random_baseline(paths: dict[str, Path], out: Path, seed: int = 0) -> dict[str, float]:
    """Uniform random scores for every test cell."""
    import pandas as pd

    from hpacell.classifier.scoring.build_submission import build_submission

    table = pd.read_parquet(paths["cells_test"] / "cells.parquet")
    conf = np.random.default_rng(seed).random((len(table), 19))
    out.mkdir(parents=True, exist_ok=True)
    table = table.assign(image_id=table["image_id"].astype(str))
    build_submission(table, conf, paths["test"] / "masks", out / "submission.csv")
    return score(out / "submission.csv", paths["test"])


def base_config(args: argparse.Namespace, seed: int):
    from hpacell.classifier.training.config import TrainConfig

    return TrainConfig(
        model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device,
        seed=seed, schedule="onecycle", warmup_epochs=0, backbone_lr_mult=1.0, triplet_lambda=0.0,
        embedding_dim=128, num_workers=args.num_workers, crop_size=args.crop_size,
        refine_rounds=0,  # train-cells refines by default; here each method says what it refines
    )  # fmt: skip


def run_method(name: str, args: argparse.Namespace, paths: dict[str, Path], seed: int, out: Path) -> dict:
    """Train one method with one seed, predict the test images and score them."""
    from hpacell.classifier.scoring.predict import PredictConfig, run_predict
    from hpacell.classifier.training.refine import relabel
    from hpacell.classifier.training.train import train_cells

    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    cfg = base_config(args, seed).model_copy(update=METHODS[name])
    if name == "truth":
        cfg = cfg.model_copy(update={"cell_labels": str(paths["train"] / "cells.csv")})
    if name == "refine_mil":  # MIL fold models; the final model trains with plain BCE on their targets
        labels = relabel(paths["cells_train"], out / "refine", cfg, rounds=1)
        cfg = cfg.model_copy(update={"refine_rounds": 0, "weak_loss": "inherit", "cell_labels": str(labels)})
    train_cells(paths["cells_train"], out, cfg)
    seconds = time.perf_counter() - t0
    pcfg = PredictConfig(device=args.device, workers=1, num_workers=args.num_workers)
    run_predict(
        out / "last.pt", paths["cells_test"], out / "predict", pcfg, masks_dir=paths["test"] / "masks"
    )
    res = {**score(out / "predict" / "submission.csv", paths["test"]), "train_seconds": seconds}
    (out / "result.json").write_text(json.dumps(res))
    return res


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "values": [round(v, 4) for v in values],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/hpacell-weak-bench", help="cache of synth data, crops and runs")
    p.add_argument("--methods", default="inherit,mil,refine,truth")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--train-images", type=int, default=200)
    p.add_argument("--test-images", type=int, default=40)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--train-seed", type=int, default=7)
    p.add_argument("--test-seed", type=int, default=8)
    p.add_argument("--crop-size", type=int, default=64)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2, help="synth/crop processes")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="train nothing: summarise the result.json of the runs in --work (seeds run in parallel)",
    )
    args = p.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    t_all = time.perf_counter()
    paths = prepare(args)
    work = Path(args.work) / "runs"
    rnd = random_baseline(paths, work / "random")
    metrics = list(rnd)
    per: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in seeds:
        for m in methods:
            out = work / f"{m}-seed{seed}"
            if args.summarize_only:
                res = json.loads((out / "result.json").read_text())
            else:
                res = run_method(m, args, paths, seed, out)
            per[m].append(res)
            print(json.dumps({"method": m, "seed": seed, **res}), flush=True)
    result: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k not in ("work", "summarize_only")},
        "checkpoint": "last.pt",
        "random": {k: round(v, 4) for k, v in rnd.items()},
        "methods": {},
    }
    for m in methods:
        result["methods"][m] = {k: _stats([r[k] for r in per[m]]) for k in [*metrics, "train_seconds"]}
    if "truth" in methods:
        for m in methods:
            rec = result["methods"][m]
            for k in metrics:
                upper, base = result["methods"]["truth"][k]["mean"], rnd[k]
                rec[f"recovered_{k}"] = (
                    round((rec[k]["mean"] - base) / (upper - base), 3) if upper != base else None
                )
    if "inherit" in methods:
        for m in methods:
            result["methods"][m]["wins_every_seed_vs_inherit"] = {
                k: all(a[k] > b[k] for a, b in zip(per[m], per["inherit"], strict=True)) for k in metrics
            }
    if not any(k.endswith("_box") for k in metrics):
        result["notes"] = "mask IoU only: the installed evaluate has no box mode"
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
