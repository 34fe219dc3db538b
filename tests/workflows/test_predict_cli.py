"""``hpacell evaluate`` and ``hpacell predict`` through the CLI on small synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hpacell.classifier.scoring.evaluate import read_truth
from hpacell.classifier.scoring.submission import prediction_string, read_submission, write_submission
from hpacell.workflows.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    from hpacell.cellcrops.synth import make_synth_dataset

    out = tmp_path_factory.mktemp("synth")
    make_synth_dataset(out, 4, 128, 0, cell_scale=0.4)
    return out


def _submission_from_truth(truth, path, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for img in truth:
        s = np.zeros((len(img.cells), 19))
        for i, lab in enumerate(img.labels):
            s[i, lab] = 0.9
        s += rng.random(s.shape) * noise
        rows.append((img.image_id, img.width, img.height, prediction_string(img.masks, s)))
    write_submission(rows, path)


def test_evaluate_perfect_submission(synth_dir, tmp_path):
    truth = read_truth(synth_dir)
    _submission_from_truth(truth, tmp_path / "sub.csv")
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "sub.csv"),
            "--truth",
            str(synth_dir),
            "--json",
            str(tmp_path / "e.json"),
            "--report",
            str(tmp_path / "rep"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == "mAP=1.000000"
    figures = json.loads((tmp_path / "e.json").read_text())
    assert figures["mAP"] == 1.0 and figures["mAP_strict"] == 1.0 and len(figures["per_class"]) == 19
    assert (tmp_path / "rep" / "pr_curves.png").stat().st_size > 1000


def test_evaluate_wrong_confidences_score_lower_and_errors_exit_1(synth_dir, tmp_path):
    truth = read_truth(synth_dir)
    for t in truth:  # every cell claimed for the wrong class (shift by one)
        t.labels = [[(k + 1) % 19 for k in lab] for lab in t.labels]
    _submission_from_truth(truth, tmp_path / "sub.csv")
    js = tmp_path / "e.json"
    res = runner.invoke(
        app, ["evaluate", str(tmp_path / "sub.csv"), "--truth", str(synth_dir), "--json", str(js)]
    )
    assert res.exit_code == 0, res.output
    value = float(res.output.strip().splitlines()[-1].split("=")[1])
    # default mode ignores the wrong classes outside the image labels, strict mode counts them
    assert value < 1.0 and json.loads(js.read_text())["mAP_strict"] < 0.5
    res = runner.invoke(app, ["evaluate", str(tmp_path / "none.csv"), "--truth", str(synth_dir)])
    assert res.exit_code == 1 and "not found" in res.output


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from hpacell.classifier.model import model_from_config
    from hpacell.classifier.training.config import TrainConfig

    torch.manual_seed(0)
    config = TrainConfig(model="resnet18", embedding_dim=16).model_dump(mode="json")
    model = model_from_config(config, 19)
    path = tmp_path_factory.mktemp("run") / "best.pt"
    from hpacell.cellcrops.labels import HPA2021

    torch.save(
        {
            "model": model.state_dict(),
            "ema": None,
            "epoch": 0,
            "config": config,
            "classes": list(HPA2021.classes),
            "taxonomy": "hpa2021",
            "thresholds": [0.5] * 19,
            "feature_columns": [],
            "crop_size": 32,
            "metrics": {},
        },
        path,
    )
    return path


def test_predict_on_the_fly_then_evaluate(synth_dir, tiny_checkpoint, tmp_path):
    pred = tmp_path / "pred"
    ids = tmp_path / "ids.csv"
    truth = read_truth(synth_dir)
    sizes = {t.image_id: (t.width, t.height) for t in truth} | {"no-cells": (64, 64)}
    write_submission([], ids, ids=["no-cells", *sorted(t.image_id for t in truth)], sizes=sizes)
    args = ["predict", str(tiny_checkpoint), "--images", str(synth_dir / "images"), "--masks",
            str(synth_dir / "masks"), "--out", str(pred), "--ids", str(ids), "--tta", "--embeddings",
            "--num-workers", "0", "--batch-size", "8",
            "--truth", str(synth_dir), "--match", "box"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    n_cells = sum(len(t.cells) for t in truth)
    printed = json.loads(res.output.strip().splitlines()[-1])
    assert printed["cells"] == n_cells
    # --truth: the submission scored with the chosen IoU, as `hpacell evaluate --match box` scores it
    figures = json.loads((pred / "evaluation.json").read_text())
    assert printed["match"] == figures["match"] == "box" and printed["mAP"] == figures["mAP"]
    res_eval = runner.invoke(
        app, ["evaluate", str(pred / "submission.csv"), "--truth", str(synth_dir), "--match", "box"]
    )
    assert res_eval.stdout.strip().splitlines()[-1] == f"mAP={figures['mAP']:.6f}"
    import pandas as pd

    cells = pd.read_parquet(pred / "cell_scores.parquet")
    assert len(cells) == n_cells and len(cells["embedding"].iloc[0]) == 16
    assert {str(c) for c in range(19)} <= set(cells.columns)
    img = pd.read_csv(pred / "image_scores.csv", dtype={"ID": str})
    assert img.set_index("ID").loc[truth[0].image_id, "3"] == pytest.approx(
        cells.loc[cells["image_id"] == truth[0].image_id, "3"].max(), abs=1e-6
    )
    subs = read_submission(pred / "submission.csv")
    assert [s.image_id for s in subs][0] == "no-cells" and len(subs[0]) == 0
    assert sum(len(s) for s in subs) == 19 * n_cells
    assert (pred / "report" / "montage_18_Negative.png").is_file()
    assert len(list((pred / "report").glob("overlay_*.png"))) == 4

    # blending with image-level scores: a class scored 0 at image level vanishes from the confidences
    img_scores = img.copy()
    img_scores["5"] = 0.0
    img_scores.to_csv(tmp_path / "img.csv", index=False)
    res = runner.invoke(
        app,
        [
            "predict",
            str(tiny_checkpoint),
            "--cells",
            str(pred / "cells"),
            "--out",
            str(pred),
            "--image-scores",
            str(tmp_path / "img.csv"),
            "--image-power",
            "2",
            "--no-report",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "reusing the cell scores" in res.output  # a rerun skips the finished inference
    subs = read_submission(pred / "submission.csv")  # masks come from the dataset's meta.json
    conf5 = [c for s in subs for k, c in zip(s.classes, s.confidences, strict=True) if k == 5]
    assert len(conf5) == n_cells and max(conf5) == 0.0

    res = runner.invoke(app, ["evaluate", str(pred / "submission.csv"), "--truth", str(synth_dir)])
    assert res.exit_code == 0, res.output
    assert 0.0 <= float(res.output.strip().splitlines()[-1].split("=")[1]) <= 1.0


def test_predict_bad_arguments_exit_1(tiny_checkpoint, tmp_path):
    res = runner.invoke(app, ["predict", str(tiny_checkpoint), "--out", str(tmp_path)])
    assert res.exit_code == 1 and "--cells or --images" in res.output
    res = runner.invoke(
        app, ["predict", str(tmp_path / "none.pt"), "--cells", str(tmp_path), "--out", str(tmp_path)]
    )
    assert res.exit_code == 1 and "error" in res.output
