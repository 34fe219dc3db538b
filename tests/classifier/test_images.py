"""The image-level classifier library: loading, cache, channel subsets, training and thresholds."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from hpacell.classifier.images.data import (
    ChannelTransform,
    ImageDataset,
    ImageTrainConfig,
    build_cache,
    load_image,
    parse_channels,
)
from hpacell.classifier.images.train import train_images
from hpacell.classifier.metrics import f1_report
from hpacell.classifier.model import load_checkpoint
from hpacell.classifier.training.data import eval_transform
from hpacell.segmentation.io import find_image_sets

# tiny timm model (~0.4 M parameters): the loop, not the accuracy, is under test
TINY = dict(model="test_resnet", embedding_dim=16, batch_size=4, num_workers=0, device="cpu", lr=3e-3)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from hpacell.cellcrops.synth import make_synth_dataset

    out = tmp_path_factory.mktemp("synth_images")
    make_synth_dataset(out, 24, 256, 5)
    return out


@pytest.fixture(scope="module")
def synth_run(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = ImageTrainConfig(crop_size=64, epochs=2, folds=3, warmup_epochs=1, sampler="oversample", **TINY)
    summary = train_images(synth / "images", synth / "train.csv", out, cfg)
    return out, summary


def test_parse_channels_rejects_unknown_and_repeats():
    assert parse_channels("g+b+r") == ["red", "green", "blue"]
    assert parse_channels(["yellow", "green"]) == ["green", "yellow"]
    with pytest.raises(ValueError, match="unknown channel"):
        parse_channels("purple")
    with pytest.raises(ValueError, match="repeated"):
        parse_channels("green,green")
    with pytest.raises(ValueError):
        ImageTrainConfig(channels=[])


def test_load_image_downsizes_with_shared_normalisation(synth):
    sets = find_image_sets(synth / "images")
    files = sets["synth-0000"]
    full = load_image(files, 256)
    assert full.shape == (4, 256, 256) and full.dtype == np.uint8
    small = load_image(files, 64, ["green", "blue"])
    assert small.shape == (2, 64, 64)
    # INTER_AREA by 4 = the 4x4 block mean of the full-size channel
    green = full[1].astype(np.float64).reshape(64, 4, 64, 4).mean((1, 3))
    assert np.abs(small[0] - green).max() <= 1.0


def test_channel_transform_keeps_each_channels_statistics():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (4, 32, 32), dtype=np.uint8)
    ref = eval_transform(16)(img)
    sub = ChannelTransform(eval_transform(16), ["green", "yellow"])(img[[1, 3]])
    assert sub.shape == (2, 16, 16)
    assert torch.allclose(sub, ref[[1, 3]])
    with pytest.raises(ValueError, match="expected 2 channels"):
        ChannelTransform(eval_transform(16), ["green", "yellow"])(img)


def test_cache_is_atomic_reused_and_records_failures(synth, tmp_path):
    sets = find_image_sets(synth / "images")
    ids = list(sets)[:3]
    bad = tmp_path / "bad"
    bad.mkdir()
    for ch in ("red", "green", "blue", "yellow"):
        (bad / f"broken_{ch}.png").write_bytes(b"not a png")
    sets["broken"] = find_image_sets(bad)["broken"]
    folder, failures = build_cache(sets, [*ids, "broken"], tmp_path / "cache", 32, ["green"])
    assert folder.name == "32px-g"
    assert list(failures) == ["broken"] and "broken_red.png" in failures["broken"]
    files = sorted(p.name for p in folder.iterdir())
    assert files == [f"{i}.npy" for i in ids]  # no temp files, no file for the failure
    assert np.load(folder / f"{ids[0]}.npy").shape == (1, 32, 32)
    mtimes = [os.stat(folder / f).st_mtime_ns for f in files]
    build_cache(sets, ids, tmp_path / "cache", 32, ["green"])
    assert [os.stat(folder / f).st_mtime_ns for f in files] == mtimes


def test_dataset_on_the_fly_safe_mode(synth, tmp_path):
    sets = find_image_sets(synth / "images")
    (tmp_path / "x_red.png").write_bytes(b"junk")
    sets["x"] = {"red": tmp_path / "x_red.png"}
    ds = ImageDataset(["synth-0001", "x"], None, sets=sets, size=32, n_classes=19, safe=True)
    a, b = ds[0], ds[1]
    assert a["index"] == 0 and b["index"] == -1 and a["image"].shape == (4, 32, 32)
    strict = ImageDataset(["x"], None, sets=sets, size=32, n_classes=19)
    with pytest.raises(ValueError, match="x_"):
        strict[0]


def test_tiny_run_on_synth_writes_checkpoint_and_reports(synth_run):
    out, summary = synth_run
    for name in ("best.pt", "last.pt", "metrics.jsonl", "summary.json", "val_scores.csv", "val_report.json"):
        assert (out / name).is_file(), name
    model, ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["taxonomy"] == "hpa2021" and len(ckpt["classes"]) == 19
    assert ckpt["crop_size"] == 64 and ckpt["in_chans"] == 4 and ckpt["config"]["channels"][1] == "green"
    with torch.no_grad():
        assert model(torch.zeros(1, 4, 64, 64))["logits"].shape == (1, 19)
    rep = summary["validation"]
    assert rep["n_images"] == summary["data"]["n_val_images"] == 8
    assert {"macro_f1_at_0.5", "sample_f1_at_0.5", "macro_f1_tuned", "sample_f1_tuned"} <= set(rep)
    rec = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["backbone_frozen"] for r in rec] == [True, False]  # head warm-up, then everything


def test_tuned_thresholds_beat_half_on_validation(synth, synth_run):
    """F1 at the checkpoint's thresholds (tuned on validation) >= F1 at 0.5, on that validation set."""
    from hpacell.cellcrops.labels import read_labels

    out, _ = synth_run
    scores = pd.read_csv(out / "val_scores.csv", dtype={"ID": str})
    table = read_labels(synth / "train.csv")
    y = np.stack([table.matrix[table.ids.index(i)] for i in scores["ID"]])
    p = scores[[str(c) for c in range(19)]].to_numpy()
    thr = np.asarray(torch.load(out / "best.pt", weights_only=True)["thresholds"])
    assert thr.shape == (19,) and (thr != 0.5).any()
    half, tuned = f1_report(y, p >= 0.5), f1_report(y, p >= thr)
    assert tuned["macro_f1"] >= half["macro_f1"]
    assert np.all(np.array(tuned["per_class_f1"]) >= np.array(half["per_class_f1"]) - 1e-12)
    assert tuned["macro_f1"] > half["macro_f1"]  # an undertrained model: 0.5 is far from optimal


def test_green_only_run_and_resume(synth, tmp_path):
    cfg = ImageTrainConfig(crop_size=32, epochs=1, folds=3, warmup_epochs=0, channels=["green"], **TINY)
    out = tmp_path / "g"
    train_images(synth / "images", synth / "train.csv", out, cfg, resume=False)
    _, ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["in_chans"] == 1 and ckpt["config"]["channels"] == ["green"]
    assert (out / "cache" / "32px-g").is_dir()
    with pytest.raises(FileExistsError):
        train_images(synth / "images", synth / "train.csv", out, cfg, resume=False)
    cfg2 = cfg.model_copy(update={"epochs": 2})
    summary = train_images(synth / "images", synth / "train.csv", out, cfg2, resume=True)
    assert summary["epochs"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("taxonomy", ["hpa2021", "hpa2018"])
def test_tiny_run_on_real_images(taxonomy, shared_data, real_ids, tmp_path_factory):
    """Both taxonomies on the 5 real images (the 2018 table really lists these IDs)."""
    labels = shared_data / taxonomy / "train.csv"
    cache = tmp_path_factory.getbasetemp() / "real_cache"  # shared by both runs: each image is read once
    out = tmp_path_factory.mktemp(taxonomy)
    cfg = ImageTrainConfig(
        crop_size=64, epochs=1, folds=2, warmup_epochs=0, cache_dir=str(cache), **{**TINY, "batch_size": 2}
    )
    summary = train_images(shared_data / "hpa2021" / "images", labels, out, cfg)
    assert summary["data"]["n_images"] == 5 and not summary["data"]["failed_images"]
    _, ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["taxonomy"] == taxonomy and len(ckpt["classes"]) == (28 if taxonomy == "hpa2018" else 19)
    assert sorted(p.stem for p in (cache / "64px-rgby").glob("*.npy")) == real_ids


def test_example_config_is_valid():
    from pathlib import Path

    from hpacell.workflows.config import load_config

    path = Path(__file__).resolve().parents[2] / "workflows" / "configs" / "train_images.yaml"
    cfg = load_config(ImageTrainConfig, path)
    assert cfg.crop_size == 512 and cfg.channels == ["red", "green", "blue", "yellow"]
