"""Synthetic data: determinism, ground-truth consistency, classes, bit depth, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hpacell.cellcrops.labels import read_labels
from hpacell.cellcrops.synth import (
    NEGATIVE,
    SPINDLE,
    assign_cell_classes,
    image_labels,
    image_rng,
    make_synth_dataset,
    sample_image_classes,
    synth_image,
)
from hpacell.segmentation.io import find_image_sets, read_image_set, read_mask
from hpacell.utils.intensity import effective_bits

SMALL = dict(size=128, cell_scale=0.3)


def _read_cells(path):
    truth: dict[str, dict[int, list[int]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            truth.setdefault(row["ID"], {})[int(row["cell"])] = [int(k) for k in row["Label"].split("|")]
    return truth


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = make_synth_dataset(out, 6, 128, seed=3, cell_scale=0.3, weak_share=0.5)
    return out, summary


def test_same_seed_same_arrays_other_seed_differs():
    a = synth_image(image_rng(7, 0), 128, cell_scale=0.3)
    b = synth_image(image_rng(7, 0), 128, cell_scale=0.3)
    c = synth_image(image_rng(8, 0), 128, cell_scale=0.3)
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_array_equal(x, y)
    assert a[3] == b[3]
    assert not np.array_equal(a[0], c[0])


def test_files_are_byte_identical_for_a_seed(tmp_path, small_set):
    out, _ = small_set
    again = tmp_path / "again"
    make_synth_dataset(again, 6, 128, seed=3, cell_scale=0.3, weak_share=0.5)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert len(files) == 6 * 6 + 3 + 1  # + the .hpacell.json marker
    for rel in files:
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    make_synth_dataset(other, 1, 128, seed=4, cell_scale=0.3)
    assert (other / "images/synth-0000_red.png").read_bytes() != (
        out / "images/synth-0000_red.png"
    ).read_bytes()


def test_ground_truth_is_consistent(small_set):
    out, summary = small_set
    truth = _read_cells(out / "cells.csv")
    table = read_labels(out / "train.csv")
    sets = find_image_sets(out / "images", complete_only=True)
    assert sorted(sets) == sorted(truth) == sorted(table.ids)
    assert summary["n_cells"] == sum(len(t) for t in truth.values())
    for iid, cells in truth.items():
        cell_mask = read_mask(out / "masks" / f"{iid}_cellmask.png")
        nuc_mask = read_mask(out / "masks" / f"{iid}_nucleimask.png")
        img = read_image_set(sets[iid])
        assert cell_mask.dtype == nuc_mask.dtype == np.uint16
        assert cell_mask.shape == nuc_mask.shape == img.shape[1:]
        ids = set(np.unique(cell_mask).tolist()) - {0}
        assert ids == set(cells), iid  # every labelled cell is in the mask and vice versa
        assert set(np.unique(nuc_mask).tolist()) - {0} == ids  # every cell has its nucleus
        inside = nuc_mask > 0
        assert np.array_equal(cell_mask[inside], nuc_mask[inside])  # nuclei inside their own cells
        labels = table.labels_of(iid)
        assert labels == image_labels(cells)
        positive = {k for ks in cells.values() for k in ks} - {NEGATIVE}
        assert labels == (sorted(positive) if positive else [NEGATIVE])
        assert NEGATIVE not in labels or labels == [NEGATIVE]
        for ks in cells.values():
            assert ks and (NEGATIVE not in ks or ks == [NEGATIVE])
        # signal lives in the cells: background is much darker than the cells in red/blue
        bg = cell_mask == 0
        if bg.mean() > 0.05:
            assert img[0][bg].mean() < 0.5 * img[0][~bg].mean()
        assert img[2][inside].mean() > 3 * img[2][~inside].mean()


def test_weak_supervision_share():
    rng = np.random.default_rng(0)
    strict = assign_cell_classes(rng, 50, [3, 7], 0.0, None)
    assert all(c == [3, 7] for c in strict)
    weak = assign_cell_classes(rng, 200, [3, 7], 0.4, None)
    lacking = np.mean([c != [3, 7] for c in weak])
    assert 0.3 < lacking < 0.5
    assert any(c == [NEGATIVE] for c in weak) and any(len(c) == 1 and c != [NEGATIVE] for c in weak)
    # every image class survives in some cell, even when all cells are weakened
    for seed in range(20):
        cells = assign_cell_classes(np.random.default_rng(seed), 3, [1, 5, 9], 1.0, None)
        assert image_labels(dict(enumerate(cells))) == [1, 5, 9]
    mitotic = assign_cell_classes(rng, 4, [SPINDLE], 0.3, 2)
    assert mitotic[2] == [SPINDLE] and image_labels(dict(enumerate(mitotic))) == [SPINDLE]


@pytest.mark.parametrize("cls", range(19))
def test_every_class_is_drawn(cls):
    img, cells, nuclei, truth = synth_image(image_rng(11, cls), 160, cell_scale=0.35, classes=[cls])
    assert any(cls in ks for ks in truth.values())
    assert image_labels(truth) == [cls]
    carriers = [c for c, ks in truth.items() if cls in ks]
    green = img[1].astype(float)
    in_cell = np.isin(cells, carriers)
    if cls == NEGATIVE:  # only a faint non-specific background
        assert green[cells > 0].mean() < 20 and green.max() < 80
    else:  # the pattern's peak is far above that background
        assert green[in_cell].max() > 100, cls


def test_sampled_image_classes_reach_all_19():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        ks = sample_image_classes(rng)
        assert ks == [NEGATIVE] or NEGATIVE not in ks
        seen.update(ks)
    assert seen == set(range(19))


def test_bit_depth_16_uses_12_bits(tmp_path):
    img, *_ = synth_image(image_rng(0, 0), 96, cell_scale=0.3, bit_depth=16, classes=[0])
    assert img.dtype == np.uint16 and 255 < img.max() <= 4095
    make_synth_dataset(tmp_path, 1, 96, seed=0, bit_depth=16, cell_scale=0.3)
    read = read_image_set(tmp_path / "images", "synth-0000")
    assert read.dtype == np.uint16 and effective_bits(read) == 12


def test_non_square_and_bad_arguments():
    img, cells, nuclei, _ = synth_image(image_rng(0, 0), 120, 80, cell_scale=0.3)
    assert img.shape == (4, 80, 120) and cells.shape == nuclei.shape == (80, 120)
    with pytest.raises(ValueError, match="bit_depth"):
        synth_image(image_rng(0, 0), 64, bit_depth=12)
    with pytest.raises(ValueError, match="Negative"):
        synth_image(image_rng(0, 0), 64, classes=[0, 18])


def test_rerun_skips_and_extends(tmp_path):
    first = make_synth_dataset(tmp_path, 2, 96, seed=5, cell_scale=0.3)
    red = (tmp_path / "images/synth-0001_red.png").read_bytes()
    again = make_synth_dataset(tmp_path, 3, 96, seed=5, cell_scale=0.3)
    assert (first["generated"], again["generated"], again["skipped"]) == (2, 1, 2)
    assert (tmp_path / "images/synth-0001_red.png").read_bytes() == red
    assert len(read_labels(tmp_path / "train.csv")) == 3
    with pytest.raises(ValueError, match="seed"):
        make_synth_dataset(tmp_path, 3, 96, seed=6, cell_scale=0.3)
    redo = make_synth_dataset(tmp_path, 1, 96, seed=6, cell_scale=0.3, overwrite=True)
    assert redo["generated"] == 1 and not (tmp_path / "images/synth-0002_red.png").exists()
    assert json.loads((tmp_path / "synth.json").read_text())["seed"] == 6


def test_cli(tmp_path):
    from hpacell.workflows.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["synth", str(out), "--images", "2", "--size", "96", "--height", "64", "--seed", "1"]
    res = runner.invoke(app, args + ["--cell-scale", "0.3", "--bit-depth", "16", "--weak-share", "0.2"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["n_images"] == 2 and summary["n_cells"] >= 2
    assert read_image_set(out / "images", "synth-0001").shape == (4, 64, 96)
    assert (out / "masks/synth-0001_nucleimask.png").is_file()
    bad = runner.invoke(app, ["synth", str(out), "--bit-depth", "12"])
    assert bad.exit_code == 1 and "bit-depth" in bad.output
    clash = runner.invoke(app, args + ["--cell-scale", "0.5"])
    assert clash.exit_code == 1 and "cell_scale" in clash.output


def test_refuses_a_folder_it_did_not_make(tmp_path):
    """Issue 13, case 2: a user's train.csv, cells.csv and masks/ are never replaced."""
    from hpacell.workflows.cli import app

    user = tmp_path / "user"
    (user / "masks").mkdir(parents=True)
    (user / "train.csv").write_text("ID,Label\nmine,1\n")
    (user / "masks" / "mine_cellmask.png").write_bytes(b"x")
    res = CliRunner().invoke(app, ["synth", str(user), "--images", "1", "--size", "64", "--overwrite"])
    assert res.exit_code == 1 and "not made by 'hpacell synth'" in res.output
    assert (user / "train.csv").read_text() == "ID,Label\nmine,1\n"
    assert sorted(p.name for p in user.rglob("*")) == ["masks", "mine_cellmask.png", "train.csv"]
    # a folder written before markers existed (it has synth.json) is still synth's
    old = tmp_path / "old"
    make_synth_dataset(old, 1, 64, seed=1, cell_scale=0.3)
    (old / ".hpacell.json").unlink()
    assert make_synth_dataset(old, 1, 64, seed=1, cell_scale=0.3)["skipped"] == 1
