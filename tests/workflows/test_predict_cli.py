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


def _masks_with_an_empty_image(synth_dir, tmp_path):
    """The synthetic masks plus ``no-cells``: an image that was segmented and has no cells."""
    import shutil

    from hpacell.segmentation.io import write_mask

    masks = tmp_path / "masks"
    shutil.copytree(synth_dir / "masks", masks)
    write_mask(masks / "no-cells_cellmask.png", np.zeros((64, 64), np.uint16))
    return masks


def test_predict_on_the_fly_then_evaluate(synth_dir, tiny_checkpoint, tmp_path):
    pred = tmp_path / "pred"
    ids = tmp_path / "ids.csv"
    truth = read_truth(synth_dir)
    sizes = {t.image_id: (t.width, t.height) for t in truth}
    write_submission([], ids, ids=sorted(t.image_id for t in truth), sizes=sizes)
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
    assert [s.image_id for s in subs] == sorted(t.image_id for t in truth)
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
            "--tta",
            "--embeddings",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "reusing the cell scores" in res.output  # a rerun with the same inputs skips the inference
    subs = read_submission(pred / "submission.csv")  # masks come from the dataset's meta.json
    conf5 = [c for s in subs for k, c in zip(s.classes, s.confidences, strict=True) if k == 5]
    assert len(conf5) == n_cells and max(conf5) == 0.0

    res = runner.invoke(app, ["evaluate", str(pred / "submission.csv"), "--truth", str(synth_dir)])
    assert res.exit_code == 0, res.output
    assert 0.0 <= float(res.output.strip().splitlines()[-1].split("=")[1]) <= 1.0

    # an ID of --ids whose image was segmented without cells gets an empty string, and is no failure
    write_submission([], ids, ids=["no-cells", *sorted(sizes)], sizes=sizes | {"no-cells": (64, 64)})
    masks = _masks_with_an_empty_image(synth_dir, tmp_path)
    args = ["predict", str(tiny_checkpoint), "--cells", str(pred / "cells"), "--out", str(pred), "--masks",
            str(masks), "--ids", str(ids), "--tta", "--embeddings", "--no-report"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    subs = read_submission(pred / "submission.csv")
    assert subs[0].image_id == "no-cells" and len(subs[0]) == 0 and sum(len(s) for s in subs) == 19 * n_cells


def test_predict_bad_arguments_exit_1(tiny_checkpoint, tmp_path):
    res = runner.invoke(app, ["predict", str(tiny_checkpoint), "--out", str(tmp_path)])
    assert res.exit_code == 1 and "--cells or --images" in res.output
    res = runner.invoke(
        app, ["predict", str(tmp_path / "none.pt"), "--cells", str(tmp_path), "--out", str(tmp_path)]
    )
    assert res.exit_code == 1 and "error" in res.output


# --------------------------------------------------------------------------- reuse, failures, wrong files
def _tiny_ckpt(path, seed=0, image_level=False):
    """A checkpoint like ``tiny_checkpoint``: another ``seed`` gives other weights; ``image_level`` a
    train-images one."""
    import torch

    from hpacell.cellcrops.labels import HPA2021
    from hpacell.classifier.images.data import ImageTrainConfig
    from hpacell.classifier.model import model_from_config
    from hpacell.classifier.training.config import TrainConfig

    torch.manual_seed(seed)
    kind = ImageTrainConfig if image_level else TrainConfig
    config = kind(model="resnet18", embedding_dim=16).model_dump(mode="json")
    state = {"model": model_from_config(config, 19).state_dict(), "ema": None, "epoch": 0, "config": config}
    state |= {"classes": list(HPA2021.classes), "taxonomy": "hpa2021", "thresholds": [0.5] * 19}
    state |= {"feature_columns": [], "crop_size": 32, "metrics": {}}
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def synth_cells(synth_dir, tmp_path_factory):
    from hpacell.cellcrops.shards import CropOptions, build_cell_dataset

    out = tmp_path_factory.mktemp("cells") / "cells"
    build_cell_dataset(synth_dir / "images", synth_dir / "masks", out, options=CropOptions(size=32))
    return out


def _predict(ckpt, cells, out, *extra):
    args = ["predict", str(ckpt), "--cells", str(cells), "--out", str(out), "--no-report"]
    return runner.invoke(app, [*args, "--num-workers", "0", "--batch-size", "8", *extra])


def test_predict_reuses_cell_scores_only_for_the_same_checkpoint_cells_and_options(
    synth_cells, tiny_checkpoint, tmp_path
):
    """Issue 13, case 4: a rerun with another checkpoint, other cells or --tta never reuses old scores."""
    import shutil

    pred = tmp_path / "pred"
    assert _predict(tiny_checkpoint, synth_cells, pred).exit_code == 0
    scores = (pred / "cell_scores.parquet").read_bytes()
    other = _tiny_ckpt(tmp_path / "other.pt", seed=1)
    res = _predict(other, synth_cells, pred)
    assert res.exit_code == 1 and "checkpoint:" in res.output and "--overwrite" in res.output
    assert (pred / "cell_scores.parquet").read_bytes() == scores  # refused: nothing rewritten
    res = _predict(tiny_checkpoint, synth_cells, pred, "--tta")
    assert res.exit_code == 1 and "tta: false -> true" in res.output
    fewer = tmp_path / "fewer"
    shutil.copytree(synth_cells, fewer)
    import pandas as pd

    table = pd.read_parquet(fewer / "cells.parquet")
    table.iloc[: len(table) // 2].to_parquet(fewer / "cells.parquet")
    res = _predict(tiny_checkpoint, fewer, pred)
    assert res.exit_code == 1 and "dataset_cells" in res.output
    res = _predict(other, synth_cells, pred, "--overwrite")
    assert res.exit_code == 0, res.output
    assert (pred / "cell_scores.parquet").read_bytes() != scores
    assert json.loads((pred / "summary.json").read_text())["checkpoint"] == str(other)
    res = _predict(other, synth_cells, pred)  # same inputs again: reused
    assert res.exit_code == 0 and "reusing the cell scores" in res.output


def test_predict_on_a_dataset_without_cells_writes_empty_strings(
    synth_dir, synth_cells, tiny_checkpoint, tmp_path
):
    """Issue 13, case 17: 0 cells is a valid input (was `zip() argument 2 is longer than argument 1`)."""
    import shutil

    import pandas as pd

    empty = tmp_path / "empty"
    shutil.copytree(synth_cells, empty)
    pd.read_parquet(empty / "cells.parquet").iloc[:0].to_parquet(empty / "cells.parquet")
    res = _predict(tiny_checkpoint, empty, tmp_path / "pred", "--masks", str(synth_dir / "masks"))
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["cells"] == 0
    subs = read_submission(tmp_path / "pred" / "submission.csv")
    assert len(subs) == 4 and all(len(s) == 0 for s in subs)


def test_predict_ids_without_images_are_failures(synth_dir, synth_cells, tiny_checkpoint, tmp_path):
    """Issue 13, case 14: IDs of --ids that were never segmented are recorded and make the exit code 1."""
    ids = tmp_path / "ids.csv"
    write_submission([], ids, ids=["nope-1", "nope-2"], sizes={"nope-1": (64, 64), "nope-2": (64, 64)})
    res = _predict(tiny_checkpoint, synth_cells, tmp_path / "pred", "--ids", str(ids))
    assert res.exit_code == 1
    assert "failed: nope-1: no image" in res.output and "failed: nope-2: no image" in res.output
    failed = json.loads((tmp_path / "pred" / "summary.json").read_text())["failed"]
    assert set(failed) == {"nope-1", "nope-2"}


def test_predict_images_with_a_corrupt_image_records_it_and_exits_1(synth_dir, tiny_checkpoint, tmp_path):
    """Issue 13, case 12: as predict-images does, an image that cannot be read is a failure."""
    import shutil

    images = tmp_path / "images"
    shutil.copytree(synth_dir / "images", images)
    bad = sorted(images.glob("*_green.png"))[0]
    bad.write_bytes(b"not a png")
    image_id = bad.name[: -len("_green.png")]
    args = ["predict", str(tiny_checkpoint), "--images", str(images), "--masks", str(synth_dir / "masks")]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "pred"), "--num-workers", "0", "--no-report"])
    assert res.exit_code == 1
    assert f"failed: {image_id}: crop:" in res.output
    assert image_id in json.loads((tmp_path / "pred" / "summary.json").read_text())["failed"]


def _bad_checkpoints(folder):
    import pickle

    import torch

    from hpacell.classifier.model import create_model

    files = {}
    (folder / "garbage.pt").write_bytes(bytes(range(256)) * 3)
    files["garbage.pt"] = "not a PyTorch file"
    (folder / "zero.pt").write_bytes(b"")
    files["zero.pt"] = "empty file"
    torch.save(torch.zeros(3), folder / "tensor.pt")
    files["tensor.pt"] = "a bare tensor"
    torch.save(create_model("resnet18", 3, embedding_dim=16).state_dict(), folder / "weights.pt")
    files["weights.pt"] = "bare model weights"
    torch.save({"model": {"a": torch.zeros(1)}, "config": {}, "classes": ["x"]}, folder / "foreign.pt")
    files["foreign.pt"] = "no 'crop_size'"
    torch.save({"model": {"a": torch.zeros(1)}, "config": {"model": "resnet18"}, "classes": ["x"],
                "crop_size": 32}, folder / "mismatch.pt")  # fmt: skip
    files["mismatch.pt"] = "do not fit a resnet18 model"
    torch.save({"model": torch.zeros(1), "config": {"model": "resnet18"}, "classes": ["x"],
                "crop_size": 32}, folder / "tensor_model.pt")  # fmt: skip
    files["tensor_model.pt"] = "'model' is not a state dict"
    with open(folder / "pickled.pt", "wb") as f:
        pickle.dump(torch.nn.Linear(1, 1), f)
    files["pickled.pt"] = "a pickle"
    torch.save(torch.nn.Linear(1, 1), folder / "module.pt")
    files["module.pt"] = "a pickled Python object, torch.nn.modules.linear.Linear"
    return files


def _one_line_error(args, command, path, what, out):
    res = runner.invoke(app, args)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1, (path, res.output)
    assert len(lines) == 1 and lines[0].startswith(f"hpacell {command}: error: {path}: "), res.output
    assert what in lines[0] and "weights_only=False" not in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir()), f"{path}: wrote into {out}"


def _args(command, path, synth_dir, synth_cells, out):
    if command == "predict":
        return ["predict", str(path), "--cells", str(synth_cells), "--out", str(out)]
    return ["predict-images", str(path), str(synth_dir / "images"), "--out", str(out)]


@pytest.mark.parametrize("command", ["predict", "predict-images"])
def test_wrong_checkpoint_files_are_one_line_errors_naming_the_file(
    synth_dir, synth_cells, tmp_path, command
):
    """Issue 13: garbage, empty, bare-tensor, bare-weights, pickled or foreign files."""
    for name, what in _bad_checkpoints(tmp_path).items():
        if command == "predict-images" and name == "mismatch.pt":  # refused earlier: not image-level
            what = "a cell classifier checkpoint"
        out = tmp_path / f"out-{name}"
        _one_line_error(
            _args(command, tmp_path / name, synth_dir, synth_cells, out), command, tmp_path / name, what, out
        )


def test_a_checkpoint_of_the_other_kind_is_refused(synth_dir, synth_cells, tmp_path):
    """Issue 13, case 9: a train-images checkpoint to predict, a cell checkpoint to predict-images."""
    images = _tiny_ckpt(tmp_path / "images.pt", image_level=True)
    what = "an image-level checkpoint (hpacell train-images; scored with hpacell predict-images)"
    args = _args("predict", images, synth_dir, synth_cells, tmp_path / "a")
    _one_line_error(args, "predict", images, what, tmp_path / "a")
    cells = _tiny_ckpt(tmp_path / "cells.pt")
    what = "a cell classifier checkpoint (hpacell train-cells; scored with hpacell predict)"
    args = _args("predict-images", cells, synth_dir, synth_cells, tmp_path / "b")
    _one_line_error(args, "predict-images", cells, what, tmp_path / "b")


def test_predict_images_with_other_masks_into_the_same_folder_needs_overwrite(
    synth_dir, tiny_checkpoint, tmp_path
):
    """The on-the-fly crops of PRED/cells are reused only for the same images and masks."""
    args = ["predict", str(tiny_checkpoint), "--images", str(synth_dir / "images"), "--out",
            str(tmp_path / "pred"), "--num-workers", "0", "--no-report"]  # fmt: skip
    res = runner.invoke(app, [*args, "--masks", str(synth_dir / "masks")])
    assert res.exit_code == 0, res.output
    import shutil

    other = tmp_path / "other-masks"
    shutil.copytree(synth_dir / "masks", other)
    res = runner.invoke(app, [*args, "--masks", str(other)])
    assert res.exit_code == 1 and "other inputs or options" in res.output and "--overwrite" in res.output
    res = runner.invoke(app, [*args, "--masks", str(other), "--overwrite"])
    assert res.exit_code == 0, res.output
