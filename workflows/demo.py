"""``hpacell demo``: the whole pipeline on generated data, small enough for a laptop CPU.

synth (train + held-out test images with per-cell truth) → segment (builtin) →
crop → train-cells (small model) → predict (test images) → evaluate (mAP@0.6
against the synthetic truth) → report. ``real`` also segments, crops and
scores real HPA images with the demo model and writes overlays.

Each step is the library function behind the matching command, so the demo
exercises exactly what users run. The output folder is marked as a demo's
(``.hpacell.json``); any other non-empty folder is refused. Steps resume: a rerun into the same folder
skips finished work (segment, crop and predict outputs are kept; training
resumes from ``last.pt``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from hpacell.utils.errors import HpacellError
from hpacell.workflows.config import StrictModel, save_config

log = logging.getLogger(__name__)


class DemoConfig(StrictModel):
    """Sizes of the demo run (defaults: about 2 minutes on 2 CPU cores; README, hpacell demo)."""

    train_images: int = Field(400, ge=8, description="synthetic training images")
    test_images: int = Field(32, ge=1, description="held-out synthetic images scored and evaluated")
    size: int = Field(256, ge=128, description="synthetic image side (px)")
    cell_scale: float = Field(
        0.5, gt=0, le=2, description="synthetic cell size vs real HPA 2048-px images (segmenter pixel_scale)"
    )
    seed: int = 0
    crop_size: int = Field(48, ge=16)
    model: str = Field("resnet10t", description="timm backbone (trained from scratch)")
    epochs: int = Field(12, ge=1)
    refine_rounds: int = Field(
        0,
        ge=0,
        description="label refinement rounds (train-cells' default is 1; 0 here keeps the demo ~2 min: "
        "a round doubles the training time; README, Weak supervision)",
    )
    batch_size: int = Field(32, ge=2)
    lr: float = Field(3e-3, gt=0)
    workers: int = Field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)), ge=1)
    device: str = "auto"
    match: Literal["mask", "box"] = Field(
        "mask", description="IoU the reported mAP uses: masks (Kaggle's metric) or boxes (organisers')"
    )


def _segment_agreement(seg_masks: Path, truth_masks: Path, ids: list[str]) -> dict[str, float]:
    """Pooled one-to-one IoU>=0.6 agreement of our masks with the synthetic truth."""
    from hpacell.segmentation.io import mask_paths, read_mask
    from hpacell.segmentation.matching import segmentation_scores

    matched = n_pred = n_ref = 0
    ious: list[float] = []
    for image_id in ids:
        pred = read_mask(mask_paths(seg_masks, image_id)[0])
        ref = read_mask(mask_paths(truth_masks, image_id)[0])
        s = segmentation_scores(pred, ref)
        matched += s.n_matched
        n_pred += s.n_pred
        n_ref += s.n_ref
        ious.extend([s.mean_iou] * s.n_matched)
    return {
        "recall": matched / max(n_ref, 1),
        "precision": matched / max(n_pred, 1),
        "mean_iou": float(np.mean(ious)) if ious else 0.0,
        "true_cells": n_ref,
        "found_cells": n_pred,
    }


def _segment(images: Path, out: Path, workers: int, overlays: bool = False, pixel_scale: float = 1.0) -> Path:
    from hpacell.segmentation.batch import segment_folder

    options = {"pixel_scale": pixel_scale}
    table = segment_folder(images, out, backend_options=options, workers=workers, overlays=overlays)
    failed = table[table["status"] != "ok"]
    if len(failed):
        raise HpacellError(f"segmentation failed for {len(failed)} images, e.g. {failed.iloc[0]['error']}")
    return out / "masks"


def _crop(images: Path, masks: Path, out: Path, size: int, workers: int, labels: Path | None = None) -> Path:
    from hpacell.cellcrops.shards import CropOptions, build_cell_dataset

    # features on crops of the crop size: the demo does not train on them, and upscaling small crops
    # to the default 128 px only costs time
    options = CropOptions(size=size, feature_size=max(16, min(size, 128)))
    summary = build_cell_dataset(images, masks, out, labels=labels, options=options, workers=workers)
    if summary.failed:
        raise HpacellError(f"cropping failed: {summary.failed}")
    return out


def run_demo(
    out: str | os.PathLike,
    config: DemoConfig | None = None,
    real: str | os.PathLike | None = None,
    say: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary (also ``out/summary.json``)."""
    from hpacell.cellcrops.labels import HPA2021
    from hpacell.cellcrops.synth import make_synth_dataset
    from hpacell.classifier.scoring.evaluate import MATCH_MODES, evaluate, read_truth
    from hpacell.classifier.scoring.predict import CELL_SCORES, PredictConfig, run_predict
    from hpacell.classifier.scoring.report import make_report, plot_ap_bars, plot_pr_curves
    from hpacell.classifier.scoring.submission import read_submission
    from hpacell.classifier.training.config import TrainConfig
    from hpacell.classifier.training.train import check_resume, train_cells
    from hpacell.utils.files import atomic_write_bytes
    from hpacell.utils.outputs import claim_folder

    cfg = config or DemoConfig()
    out = Path(out)
    # Only into a demo folder (demo.yaml marks one made before markers existed): never mixed into,
    # or overwriting, another command's outputs.
    claim_folder(out, "demo", legacy=["demo.yaml"])
    save_config(cfg, out / "demo.yaml")
    summary: dict[str, Any] = {"out": str(out), "seconds": {}}
    t_all = time.perf_counter()

    def step(name: str, text: str):
        say(f"[{len(summary['seconds']) + 1}/7] {text}")
        return _Timer(summary["seconds"], name)

    with step("synth", f"synthetic data: {cfg.train_images} training + {cfg.test_images} test images"):
        train_dir, test_dir = out / "synth-train", out / "synth-test"
        kw = {"cell_scale": cfg.cell_scale, "workers": cfg.workers}
        make_synth_dataset(train_dir, cfg.train_images, cfg.size, cfg.seed, **kw)
        make_synth_dataset(test_dir, cfg.test_images, cfg.size, cfg.seed + 10_000, **kw)

    with step("segment", "segment (builtin backend)"):
        scale = cfg.cell_scale
        train_masks = _segment(train_dir / "images", out / "segment-train", cfg.workers, pixel_scale=scale)
        test_masks = _segment(test_dir / "images", out / "segment-test", cfg.workers, True, scale)
        test_ids = sorted(
            p.name[: -len("_cellmask.png")] for p in (test_dir / "masks").glob("*_cellmask.png")
        )
        summary["segmentation"] = _segment_agreement(test_masks, test_dir / "masks", test_ids)

    with step("crop", f"crop cells ({cfg.crop_size} px)"):
        train_cells_dir = _crop(
            train_dir / "images", train_masks, out / "cells-train", cfg.crop_size, cfg.workers,
            labels=train_dir / "train.csv",
        )  # fmt: skip
        test_cells = _crop(test_dir / "images", test_masks, out / "cells-test", cfg.crop_size, cfg.workers)

    run = out / "run"
    refined = f", {cfg.refine_rounds} refinement round(s)" if cfg.refine_rounds else ""
    with step("train", f"train-cells ({cfg.model}, {cfg.epochs} epochs{refined}, {cfg.device})"):
        # From scratch (no ImageNet file in a demo): no frozen warm-up, one LR for all, one-cycle; the
        # triplet term did not help on synth data (README, train-cells), so the demo leaves it out.
        tcfg = TrainConfig(
            model=cfg.model, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, device=cfg.device,
            seed=cfg.seed, folds=5, warmup_epochs=0, backbone_lr_mult=1.0, schedule="onecycle",
            embedding_dim=128, triplet_lambda=0.0, num_workers=min(cfg.workers, 2),
            refine_rounds=cfg.refine_rounds,
        )  # fmt: skip
        check_resume(run, tcfg)  # a changed model etc. is refused before config.yaml is rewritten
        save_config(tcfg, run / "config.yaml")
        done = _finished_epochs(run)
        if done < cfg.epochs:
            train_cells(train_cells_dir, run, tcfg, resume=(run / "last.pt").exists())
        summary["train"] = _best_record(run)

    pred = out / "predict"
    with step("predict", "predict the held-out test images + Kaggle submission"):
        pcfg = PredictConfig(device=cfg.device, workers=cfg.workers)
        save_config(pcfg, pred / "predict.yaml")
        # the demo's own folder: reuse the cell scores when best.pt and the cells are the same, else redo
        run_predict(run / "best.pt", test_cells, pred, pcfg, masks_dir=test_masks, on_change="recompute")

    with step("evaluate", "evaluate: mAP@0.6 against the synthetic per-cell truth"):
        sub = read_submission(pred / "submission.csv", n_classes=len(HPA2021.classes))
        truth = read_truth(test_dir)
        evs = {m: evaluate(sub, truth, match=m) for m in MATCH_MODES}  # both; the summary shows both
        ev = evs[cfg.match]
        figures = ev.summary()
        atomic_write_bytes(pred / "evaluation.json", json.dumps(figures, indent=2).encode())
        summary["evaluation"] = {
            k: figures[k] for k in ("match", "mAP", "mAP_strict", "macro_f1", "sample_f1")
        }
        summary["evaluation"]["mAP_by_match"] = {m: e.map for m, e in evs.items()}

    with step("report", "report (montages, overlays, PR curves)"):
        import pandas as pd

        report = pred / "report"
        plot_pr_curves(ev, report / "pr_curves.png")
        plot_ap_bars(ev, report / "ap_per_class.png")
        meta = json.loads((test_cells / "meta.json").read_text())
        table = pd.read_parquet(pred / CELL_SCORES)
        make_report(pred, test_cells, table, meta["classes"], test_dir / "images", test_masks)
        summary["report"] = str(report)

    if real is not None:
        say(f"[+] real images in {real}: segment, crop, predict with the demo model")
        with _Timer(summary["seconds"], "real"):
            real = Path(real)
            real_out = out / "real"
            masks = _segment(real, real_out / "segment", cfg.workers, overlays=True)
            cells = _crop(real, masks, real_out / "cells", cfg.crop_size, cfg.workers)
            res = run_predict(
                run / "best.pt", cells, real_out / "predict", pcfg, masks_dir=masks, on_change="recompute"
            )
            table = pd.read_parquet(real_out / "predict" / CELL_SCORES)
            make_report(real_out / "predict", cells, table, meta["classes"], real, masks)
            summary["real"] = {
                "cells": res["n_cells"],
                "overlays": str(real_out / "segment" / "overlays"),
                "report": str(real_out / "predict" / "report"),
            }

    summary["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    return summary


_MATCH_BODY = {"mask": "Kaggle's stated metric", "box": "organisers' published re-scoring"}


def format_summary(summary: dict[str, Any]) -> str:
    """The short human summary; its last line is ``mAP=<value>``."""
    seg, ev = summary["segmentation"], summary["evaluation"]
    lines = [
        f"segmentation vs synthetic truth (IoU>=0.6): recall {seg['recall']:.3f}, precision "
        f"{seg['precision']:.3f}, mean IoU {seg['mean_iou']:.3f} ({seg['true_cells']} true cells)",
        f"cell mAP@0.6 {ev['mAP']:.3f} ({ev['match']} IoU; strict, false positives in unlabelled classes "
        f"counted: {ev['mAP_strict']:.3f})",
        "cell mAP@0.6 by IoU: "
        + ", ".join(f"{m} {v:.3f} ({_MATCH_BODY[m]})" for m, v in ev["mAP_by_match"].items()),
        f"image macro-F1 {ev['macro_f1']:.3f}, sample-F1 {ev['sample_f1']:.3f}",
        f"report: {summary['report']}",
    ]
    if "real" in summary:
        lines.append(
            f"real images: {summary['real']['cells']} cells; overlays in {summary['real']['overlays']}"
        )
    lines.append(f"total {summary['seconds']['total']:.0f} s; everything in {summary['out']}")
    lines.append(f"mAP={ev['mAP']:.6f}")
    return "\n".join(lines)


class _Timer:
    def __init__(self, store: dict[str, float], name: str) -> None:
        self.store, self.name = store, name

    def __enter__(self) -> _Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.store[self.name] = round(time.perf_counter() - self.t0, 1)


def _finished_epochs(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.is_file() or not (run / "last.pt").is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def _best_record(run: Path) -> dict[str, Any]:
    summary = run / "summary.json"
    if summary.is_file():
        best = json.loads(summary.read_text()).get("best", {})
        return {k: best.get(k) for k in ("epoch", "val_macro_f1", "val_macro_f1_tuned", "val_map")}
    return {}
