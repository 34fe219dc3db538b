import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hpacell.workflows.cli import app


@pytest.fixture
def cells_dir(tmp_path):
    """A tiny cell dataset in the hpacell crop layout: 16 images x 3 cells, 32 px, 3 classes."""
    rng = np.random.default_rng(0)
    n_img, per, size = 16, 3, 32
    rows, crops = [], []
    for i in range(n_img):
        labels = [i % 3] + ([(i + 1) % 3] if i % 5 == 0 else [])
        for c in range(1, per + 1):
            crop = rng.integers(0, 30, (4, size, size), dtype=np.uint8)
            for k in labels:
                crop[1, k * 10 : k * 10 + 10] = 220
            crops.append(crop)
            rows.append(
                {
                    "cell_uid": f"im{i}_{c}",
                    "image_id": f"im{i}",
                    "cell": c,
                    "shard": 0,
                    "row": len(rows),
                    "labels": labels,
                    "feat_area": float(rng.integers(100, 200)),
                }
            )
    d = tmp_path / "cells"
    d.mkdir()
    np.save(d / "shard-00000.npy", np.stack(crops))
    pd.DataFrame(rows).to_parquet(d / "cells.parquet")
    meta = {"version": 1, "crop_size": size, "channels": ["red", "green", "blue", "yellow"], "taxonomy": "t"}
    meta |= {"classes": ["a", "b", "c"], "n_cells": len(rows), "feature_columns": ["feat_area"]}
    (d / "meta.json").write_text(json.dumps(meta))
    truth = ["ID,cell,Label"] + [f"{r['image_id']},{r['cell']},{r['labels'][0]}" for r in rows]
    (tmp_path / "truth.csv").write_text("\n".join(truth) + "\n")
    return d


def test_train_cells_cli_run_resume_and_find_lr(tmp_path, cells_dir):
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("embedding_dim: 16\nnum_workers: 0\nfolds: 4\nlr_find_steps: 12\nuse_features: true\n")
    args = ["train-cells", str(cells_dir), "--out", str(run), "--config", str(cfg), "--model", "resnet18"]
    args += ["--batch-size", "8", "--device", "cpu", "--cell-truth", str(tmp_path / "truth.csv")]
    r = CliRunner().invoke(app, [*args, "--epochs", "1"])
    assert r.exit_code == 0, r.output
    last = json.loads(r.output.strip().splitlines()[-1])
    assert last["val_targets"] == "cell_truth" and 0.0 <= last["val_macro_f1"] <= 1.0
    for f in ("best.pt", "last.pt", "config.yaml", "metrics.jsonl", "curves.png"):
        assert (run / f).is_file(), f
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["feature_columns"] == ["feat_area"] and ckpt["config"]["model"] == "resnet18"

    r = CliRunner().invoke(app, [*args, "--epochs", "1"])  # not --resume: refuses to overwrite
    assert r.exit_code == 1 and "--resume" in r.output

    # issue 13, case 3: a resume with another model is one line, and config.yaml is left as it was
    saved = (run / "config.yaml").read_bytes()
    r = CliRunner().invoke(app, [*args, "--epochs", "2", "--resume", "--model", "resnet34"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert "--resume cannot change model 'resnet18' -> 'resnet34'" in r.output
    assert (run / "config.yaml").read_bytes() == saved

    r = CliRunner().invoke(app, [*args, "--epochs", "2", "--resume"])
    assert r.exit_code == 0, r.output
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1]

    r = CliRunner().invoke(app, [*args, "--find-lr"])
    assert r.exit_code == 0, r.output
    assert (run / "lr_find.png").is_file() and "suggested_lr" in r.output


def test_train_cells_cli_errors(tmp_path, cells_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    r = CliRunner().invoke(
        app, ["train-cells", str(cells_dir), "--out", str(tmp_path / "r"), "--config", str(bad)]
    )
    assert r.exit_code == 1 and "epochz" in r.output
    r = CliRunner().invoke(app, ["train-cells", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 1 and "not found" in r.output
    # a run goes only into a new, empty or own folder: never into e.g. the cell dataset itself
    before = sorted(p.name for p in cells_dir.iterdir())
    r = CliRunner().invoke(app, ["train-cells", str(cells_dir), "--out", str(cells_dir), "--epochs", "1"])
    assert r.exit_code == 1 and "was not made by 'hpacell train-cells'" in r.output, r.output
    assert sorted(p.name for p in cells_dir.iterdir()) == before


def test_example_config_validates():
    from pathlib import Path

    from hpacell.classifier.training.config import TrainConfig
    from hpacell.workflows.config import load_config

    cfg = load_config(TrainConfig, Path(__file__).parents[2] / "workflows" / "configs" / "train_cells.yaml")
    assert cfg.model == "resnet50" and cfg.sampler == "pk"


@pytest.mark.slow
def test_train_cells_ddp_two_cpu_ranks_with_torchrun(tmp_path, cells_dir):
    """The documented torchrun launch runs end to end: 2 gloo ranks on CPU, each its shard, rank 0
    writes. That gathering changes the triplet loss is checked in tests/classifier/test_ddp_triplet.py."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",  # torchrun, without relying on the script being on PATH
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "hpacell.workflows.cli",
        "train-cells",
        str(cells_dir),
    ]
    cmd += ["--out", str(run), "--model", "resnet18", "--batch-size", "8", "--epochs", "1", "--device", "cpu"]
    cmd += ["--num-workers", "0", "--folds", "4", "--limit-train-batches", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    rec = json.loads((run / "metrics.jsonl").read_text())
    assert rec["train_batches"] == 2 and rec["train_triplet"] >= 0
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 0
