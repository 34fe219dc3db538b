"""``hpacell train-images`` / ``predict-images`` through the CLI: synth data, real images, both taxonomies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hpacell.workflows.cli import COMMANDS, app

runner = CliRunner()
TINY = [
    "--model",
    "test_resnet",
    "--size",
    "32",
    "--batch-size",
    "4",
    "--num-workers",
    "0",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from hpacell.cellcrops.synth import make_synth_dataset

    out = tmp_path_factory.mktemp("synth_cli")
    make_synth_dataset(out, 12, 256, 11)
    return out


@pytest.fixture(scope="module")
def run_2021(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    res = runner.invoke(
        app,
        ["train-images", str(synth / "images"), "--labels", str(synth / "train.csv"), "--out", str(out)]
        + [*TINY, "--epochs", "1", "--folds", "3", "--warmup-epochs", "0", "--channels", "g+b+r", "--tta"],
    )
    assert res.exit_code == 0, res.output
    return out, json.loads(res.output.strip().splitlines()[-1])


def test_registered():
    assert "train-images" in COMMANDS and "predict-images" in COMMANDS


def test_train_then_predict_scores_feed_cell_blending(synth, run_2021, tmp_path):
    from hpacell.classifier.scoring.predict import blend, read_image_scores

    run, printed = run_2021
    assert {"macro_f1_at_0.5", "macro_f1_tuned", "sample_f1_at_0.5", "sample_f1_tuned"} <= set(printed)
    assert json.loads((run / "val_report.json").read_text())["tta"] is True
    cfg = (run / "config.yaml").read_text()
    assert "- red\n- green\n- blue\n" in cfg and "crop_size: 32" in cfg
    pred = tmp_path / "pred"
    args = ["predict-images", str(run / "best.pt"), str(synth / "images"), "--out", str(pred), "--tta"]
    res = runner.invoke(app, [*args, "--num-workers", "0", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    scores = read_image_scores(pred / "image_scores.csv", 19)  # the format `predict --image-scores` takes
    assert list(scores.index) == [f"synth-{i:04d}" for i in range(12)]
    cell = np.full((2, 19), 0.5)
    assert blend(cell, ["synth-0000", "synth-0003"], scores).shape == (2, 19)
    labels = pd.read_csv(pred / "image_labels.csv", dtype=str)
    assert list(labels.columns) == ["ID", "Label"] and labels["Label"].str.len().min() > 0
    sub = pd.read_csv(pred / "submission.csv", dtype=str)
    assert list(sub.columns) == ["ID", "Label"] and sub["Label"].tolist() == labels["Label"].tolist()


def test_cli_errors_are_clear(synth, run_2021, tmp_path):
    run, _ = run_2021
    base = ["train-images", str(synth / "images"), "--out"]
    res = runner.invoke(app, [*base, str(tmp_path / "a"), "--labels", str(tmp_path / "none.csv"), *TINY])
    assert res.exit_code == 1 and "none.csv" in res.output
    res = runner.invoke(
        app, [*base, str(tmp_path / "b"), "--labels", str(synth / "train.csv"), "--channels", "uv"]
    )
    assert res.exit_code == 1 and "unknown channel" in res.output
    res = runner.invoke(app, [*base, str(run), "--labels", str(synth / "train.csv"), *TINY])
    assert res.exit_code == 1 and "--resume" in res.output
    res = runner.invoke(
        app, ["predict-images", str(tmp_path / "x.pt"), str(synth / "images"), "-o", str(tmp_path)]
    )
    assert res.exit_code == 1 and "x.pt" in res.output


def test_predict_records_unreadable_images_and_exits_1(synth, run_2021, tmp_path):
    import shutil

    run, _ = run_2021
    imgs = tmp_path / "imgs"
    shutil.copytree(synth / "images", imgs)
    (imgs / "synth-0002_green.png").write_bytes(b"broken")
    pred = tmp_path / "pred"
    res = runner.invoke(
        app, ["predict-images", str(run / "best.pt"), str(imgs), "-o", str(pred), "--num-workers", "0"]
    )
    assert res.exit_code == 1 and "synth-0002" in res.output
    assert len(pd.read_csv(pred / "image_scores.csv")) == 11
    assert "synth-0002_green.png" in (pred / "failures.csv").read_text()


def test_2018_run_on_real_images_and_submission_parses_like_the_sample(shared_data, real_ids, tmp_path):
    """2018 labels of the 5 real images (the 2018 table lists them) -> ``Id,Predicted`` like the sample."""
    images = shared_data / "hpa2021" / "images"
    sample = shared_data / "hpa2018" / "sample_submission.csv"
    run = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "train-images",
            str(images),
            "--labels",
            str(shared_data / "hpa2018" / "train.csv"),
            "--out",
            str(run),
        ]
        + [*TINY, "--batch-size", "2", "--epochs", "1", "--folds", "2", "--warmup-epochs", "0"]
        + ["--channels", "green"],
    )
    assert res.exit_code == 0, res.output
    ids = tmp_path / "ids.csv"  # a sample submission in the 2018 format, fixing the order
    order = real_ids[::-1]
    ids.write_text("Id,Predicted\n" + "".join(f"{i},0\n" for i in order))
    pred = tmp_path / "pred"
    args = ["predict-images", str(run / "best.pt"), str(images), "-o", str(pred), "--ids", str(ids)]
    res = runner.invoke(app, [*args, "--num-workers", "0", "--cache", str(run / "cache")])
    assert res.exit_code == 0, res.output
    ref = pd.read_csv(sample, nrows=50)
    sub = pd.read_csv(pred / "submission.csv")
    assert list(sub.columns) == list(ref.columns) == ["Id", "Predicted"]
    assert sub["Id"].dtype == ref["Id"].dtype and sub["Id"].tolist() == order
    for text in sub["Predicted"].astype(str):
        ks = [int(k) for k in text.split(" ")]
        assert ks and all(0 <= k < 28 for k in ks) and ks == sorted(set(ks))
    labels = pd.read_csv(pred / "image_labels.csv", dtype=str)
    assert list(labels.columns) == ["Id", "Target"]
    scores = pd.read_csv(pred / "image_scores.csv")
    assert list(scores.columns) == ["ID", *[str(c) for c in range(28)]]
    missing = tmp_path / "missing.csv"
    missing.write_text("Id,Predicted\nnot-an-image,0\n")
    res = runner.invoke(
        app, ["predict-images", str(run / "best.pt"), str(images), "-o", str(pred), "--ids", str(missing)]
    )
    assert res.exit_code == 1 and "not-an-image" in res.output
