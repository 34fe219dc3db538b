"""Predict throughput: cells per second of model inference (and of the submission) with a small model.

Builds a synthetic cell dataset (``hpacell synth`` + ``hpacell crop`` libraries) in a temp folder, then
times :func:`hpacell.classifier.scoring.predict.score_cells` (DataLoader over the memory-mapped shards,
eval transform, ``torch.inference_mode``) on CPU, and on CUDA when present, with and without flip TTA;
and the submission's mask encoding (:func:`hpacell.classifier.scoring.build_submission.build_submission`).
Untrained weights: speed only.
Prints JSON.

    python benchmarks/predict_throughput.py [--images 24] [--model resnet18] [--crop 128] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hpacell.cellcrops.dataset import CellDataset
from hpacell.cellcrops.shards import CropOptions, build_cell_dataset
from hpacell.cellcrops.synth import make_synth_dataset
from hpacell.classifier.model import create_model
from hpacell.classifier.scoring.build_submission import build_submission
from hpacell.classifier.scoring.predict import score_cells
from hpacell.classifier.training.data import eval_transform


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", type=int, default=512, help="synthetic image side")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_synth_dataset(tmp / "syn", args.images, args.size, 0)
        build_cell_dataset(tmp / "syn" / "images", tmp / "syn" / "masks", tmp / "cells",
                           options=CropOptions(size=args.crop))  # fmt: skip
        ds = CellDataset(tmp / "cells", transform=eval_transform(args.crop))
        model = create_model(args.model, num_classes=19, embedding_dim=128).eval()
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        results = {"n_cells": len(ds), "model": args.model, "crop": args.crop, "batch": args.batch,
                   "dataloader_workers": args.workers, "torch_threads": torch.get_num_threads()}  # fmt: skip
        for device in devices:
            score_cells(model, ds, batch_size=args.batch, device=device)  # warm-up
            for tta in (False, True):
                t0 = time.perf_counter()
                score_cells(
                    model, ds, batch_size=args.batch, num_workers=args.workers, device=device, tta=tta
                )
                results[f"cells_per_s_{device}{'_tta' if tta else ''}"] = round(
                    len(ds) / (time.perf_counter() - t0), 1
                )
        conf = np.random.default_rng(0).random((len(ds), 19))
        t0 = time.perf_counter()
        build_submission(ds.table, conf, tmp / "syn" / "masks", tmp / "sub.csv")
        results["submission_cells_per_s"] = round(len(ds) / (time.perf_counter() - t0), 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
