from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hpacell.cellcrops.crop import cell_boxes, crop_cells, resize_hwc, resize_square, square_crop
from hpacell.cellcrops.labels import read_labels, write_labels
from hpacell.cellcrops.shards import CropOptions, build_cell_dataset
from hpacell.segmentation.io import CHANNELS, read_image_set, read_mask, write_mask
from hpacell.utils.intensity import to_uint8
from hpacell.workflows.cli import app


def _write_image(folder: Path, image_id: str, planes: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for ch, plane in zip(CHANNELS, planes, strict=True):
        assert cv2.imwrite(str(folder / f"{image_id}_{ch}.png"), plane)


def _synthetic(shape=(120, 160), dtype=np.uint8, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """An image with three cells (one touching the left border) and its mask."""
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == np.uint8 else 4095
    planes = rng.integers(0, hi + 1, size=(4, *shape)).astype(dtype)
    mask = np.zeros(shape, np.uint16)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask[(yy - 40) ** 2 + (xx - 50) ** 2 < 20**2] = 3
    mask[70:110, 90:150] = 7
    mask[10:50, 0:15] = 9
    return planes, mask


def _dataset(folder: Path):
    cells = pd.read_parquet(folder / "cells.parquet")
    shards = {k: np.load(folder / f"shard-{k:05d}.npy", mmap_mode="r") for k in cells["shard"].unique()}
    return cells, shards


# --------------------------------------------------------------------------- geometry
def test_boxes_match_pixels_and_square_is_centred():
    _, mask = _synthetic()
    ids, boxes = cell_boxes(mask)
    assert ids.tolist() == [3, 7, 9]
    for cid, (x0, y0, x1, y1) in zip(ids, boxes, strict=True):
        ys, xs = np.nonzero(mask == cid)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_square_crop_pads_outside_image_and_keeps_cell_pixels():
    planes, mask = _synthetic()
    crop, cell, (sx0, sy0, side) = square_crop(planes, mask, 9)  # 15 x 40 box at the left border
    assert side == 40 and sx0 < 0
    assert crop.shape == (4, 40, 40)
    ys, xs = np.nonzero(cell)
    np.testing.assert_array_equal(crop[:, ys, xs], planes[:, ys + sy0, xs + sx0])
    assert not crop[:, ~cell].any()
    assert not crop[:, :, :-sx0].any()  # columns left of the image
    raw, _, _ = square_crop(planes, mask, 9, mask_background=False)
    np.testing.assert_array_equal(raw[:, :, -sx0:], planes[:, sy0 : sy0 + side, : side + sx0])
    with pytest.raises(ValueError, match="not in the mask"):
        square_crop(planes, mask, 4)


def test_fast_resize_is_close_to_inter_area():
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 256, (600, 600), dtype=np.uint8), (0, 0), 4)
    img = np.stack([img, img[::-1], img[:, ::-1], img.T])
    fast, exact = resize_square(img, 256), resize_square(img, 256, exact_area=True)
    assert fast.shape == exact.shape == (4, 256, 256)
    assert np.abs(fast.astype(int) - exact).mean() < 1.0
    assert resize_square(img[:, :100, :100], 256).shape == (4, 256, 256)  # upscaling


def test_crop_cells_filters_and_validates():
    planes, mask = _synthetic()
    crops, table = crop_cells(planes, mask, size=32)
    assert crops.shape == (3, 4, 32, 32) and table["cell"].tolist() == [3, 7, 9]
    assert table["touches_border"].tolist() == [False, False, True]
    assert table["area"].tolist() == [int((mask == c).sum()) for c in (3, 7, 9)]
    _, t2 = crop_cells(planes, mask, size=32, drop_border_cells=True, min_area=1300)
    assert t2["cell"].tolist() == [7]  # the disk has ~1250 px
    # no cells, or every cell dropped: 0 crops and an empty table with the same columns (issue 13, case 16)
    for kw in ({"mask": np.zeros_like(mask)}, {"mask": mask, "min_area": 10**6}, {"mask": mask[:, :12]}):
        p = planes[:, :, :12] if kw["mask"].shape[1] == 12 else planes
        c0, t0 = crop_cells(p, kw.pop("mask"), size=32, drop_border_cells=True, **kw)
        assert c0.shape == (0, 4, 32, 32) and c0.dtype == np.uint8
        assert list(t0.columns) == list(table.columns) and len(t0) == 0
        assert (t0.dtypes == table.dtypes).all()
    with pytest.raises(ValueError, match="mask size"):
        crop_cells(planes, mask[:, :100])


def test_nuclei_mask_gives_exact_nucleus_area():
    planes, mask = _synthetic()
    nuclei = np.where((mask == 7) & (np.arange(160)[None, :] < 110), 7, 0).astype(np.uint16)
    _, table = crop_cells(planes, mask, nuclei, size=32)
    assert table.set_index("cell").loc[7, "nucleus_area"] == 40 * 20
    assert table.set_index("cell").loc[3, "nucleus_area"] == 0


# --------------------------------------------------------------------------- the real data
@pytest.fixture(scope="module")
def real_cells(hpa2021, tmp_path_factory):
    out = tmp_path_factory.mktemp("cells")
    summary = build_cell_dataset(
        hpa2021 / "images", hpa2021 / "masks", out, labels=hpa2021 / "train.csv", shard_size=30
    )
    return out, summary


def test_real_images_rows_labels_and_pixels(real_cells, hpa2021, real_ids):
    out, summary = real_cells
    assert summary.failed == {} and summary.n_cells == 72
    cells, shards = _dataset(out)
    assert len(cells) == 72 and cells["cell_uid"].is_unique
    assert len(shards) > 1  # shard_size=30 splits the 72 cells
    train = read_labels(hpa2021 / "train.csv")
    for image_id in real_ids:
        image = read_image_set(hpa2021 / "images", image_id)
        mask = read_mask(hpa2021 / "masks" / f"{image_id}_cellmask.png")
        rows = cells[cells["image_id"] == image_id]
        assert sorted(rows["cell"]) == sorted(set(np.unique(mask).tolist()) - {0})
        for _, r in rows.iterrows():
            assert list(r["labels"]) == train.labels_of(image_id)
            crop, cell, (sx0, sy0, side) = square_crop(image, mask, r["cell"])
            assert (r["crop_x0"], r["crop_y0"], r["crop_side"]) == (sx0, sy0, side)
            ys, xs = np.nonzero(cell)
            assert r["area"] == ys.size
            assert (r["x0"], r["y0"], r["x1"], r["y1"]) == (
                xs.min() + sx0,
                ys.min() + sy0,
                xs.max() + 1 + sx0,
                ys.max() + 1 + sy0,
            )
            # Exact: the crop's pixels inside the cell are the source pixels; outside they are 0.
            np.testing.assert_array_equal(crop[:, ys, xs], image[:, ys + sy0, xs + sx0])
            assert not crop[:, ~cell].any()
            # The stored crop is that crop resized; where no cell pixel contributes it is 0.
            stored = np.asarray(shards[r["shard"]][r["row"]])
            np.testing.assert_array_equal(stored, resize_square(crop, 256))
            coverage = resize_hwc(cell.view(np.uint8) * np.uint8(255), 256)
            assert not stored[:, coverage == 0].any()


def test_real_meta_and_status(real_cells):
    import json

    out, _ = real_cells
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_cells"] == 72 and meta["crop_size"] == 256 and meta["taxonomy"] == "hpa2021"
    assert meta["channels"] == ["red", "green", "blue", "yellow"] and len(meta["classes"]) == 19
    cells = pd.read_parquet(out / "cells.parquet")
    assert all(c in cells.columns for c in meta["feature_columns"])
    assert all(cells[c].dtype == np.float32 for c in meta["feature_columns"])
    assert np.isfinite(cells[meta["feature_columns"]].to_numpy()).all()
    status = pd.read_parquet(out / "crop_status.parquet")
    assert (status["status"] == "ok").all() and status["n_cells"].sum() == 72


# --------------------------------------------------------------------------- batch behaviour
@pytest.fixture
def messy(tmp_path):
    """a: fine; b: mask size != image size; c: no cells (fine, 0 rows); d: mask without image; e: image
    without mask."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    masks.mkdir()
    planes, mask = _synthetic()
    for image_id in "abce":
        _write_image(images, image_id, planes)
    write_mask(masks / "a_cellmask.png", mask)
    write_mask(masks / "b_cellmask.png", mask[:, :100])
    write_mask(masks / "c_cellmask.png", np.zeros_like(mask))
    write_mask(masks / "d_cellmask.png", mask)
    write_labels(tmp_path / "labels.csv", {"a": [1, 4], "b": [2], "x": [0]})
    return tmp_path


def _crop_cli(root: Path, *extra: str):
    args = ["crop", str(root / "images"), "--masks", str(root / "masks"), "--out", str(root / "cells")]
    return CliRunner().invoke(app, [*args, "--labels", str(root / "labels.csv"), "--size", "32", *extra])


def test_bad_inputs_recorded_others_processed_then_resume(messy):
    res = _crop_cli(messy)
    assert res.exit_code == 1, res.output
    status = pd.read_parquet(messy / "cells" / "crop_status.parquet").set_index("image_id")
    assert status.loc["a", "status"] == "ok" and status.loc["a", "n_cells"] == 3
    assert "mask size 100x120 != image size 160x120" in status.loc["b", "error"]
    assert status.loc["c", "status"] == "ok" and status.loc["c", "n_cells"] == 0  # issue 13, case 16
    assert "mask without image" in status.loc["d", "error"]
    assert "no cell mask" in status.loc["e", "error"]
    cells = pd.read_parquet(messy / "cells" / "cells.parquet")
    assert cells["image_id"].unique().tolist() == ["a"]
    assert all(list(x) == [1, 4] for x in cells["labels"])

    # Fix b; the rerun skips a and c (done), crops b, and still reports d, e.
    planes, mask = _synthetic()
    write_mask(messy / "masks" / "b_cellmask.png", mask)
    res = _crop_cli(messy)
    assert res.exit_code == 1
    assert '"skipped_done": 2' in res.stdout
    cells = pd.read_parquet(messy / "cells" / "cells.parquet")
    assert sorted(cells["image_id"].unique()) == ["a", "b"] and cells["cell_uid"].is_unique
    status = pd.read_parquet(messy / "cells" / "crop_status.parquet").set_index("image_id")
    assert status.loc["b", "status"] == "ok" and len(status) == 5


def test_rerun_skips_and_cleans_a_killed_run(tmp_path):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "cells"
    masks.mkdir()
    for i in range(3):
        planes, mask = _synthetic(seed=i)
        _write_image(images, f"img{i}", planes)
        write_mask(masks / f"img{i}_cellmask.png", mask)
    opts = CropOptions(size=24, feature_size=16)
    s1 = build_cell_dataset(images, masks, out, options=opts, shard_size=4)
    assert s1.n_cells == 9 and s1.n_skipped == 0
    before = pd.read_parquet(out / "cells.parquet")
    # A killed run: a stale temp shard, and a shard committed without its table part.
    (out / ".shard-00007.npy.999.tmp").write_bytes(b"half")
    np.save(out / "shard-00009.npy", np.zeros((2, 4, 24, 24), np.uint8))
    s2 = build_cell_dataset(images, masks, out, options=opts, shard_size=4)
    assert s2.n_skipped == 3 and s2.n_cells == 9
    assert not (out / ".shard-00007.npy.999.tmp").exists() and not (out / "shard-00009.npy").exists()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "cells.parquet"), before)
    with pytest.raises(ValueError, match="other inputs or options"):
        build_cell_dataset(images, masks, out, options=CropOptions(size=32), shard_size=4)


def test_16bit_input_uses_shared_normalisation_and_unlabelled_get_empty_labels(tmp_path):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "cells"
    masks.mkdir()
    planes, mask = _synthetic(dtype=np.uint16)  # 12-bit values in 16-bit files
    _write_image(images, "deep", planes)
    write_mask(masks / "deep_cellmask.png", mask)
    write_labels(tmp_path / "labels.csv", {"other": [3]})
    summary = build_cell_dataset(images, masks, out, labels=tmp_path / "labels.csv")
    assert summary.images_without_labels == ["deep"] and summary.labels_without_images == ["other"]
    cells, shards = _dataset(out)
    assert all(len(x) == 0 for x in cells["labels"])
    r = cells[cells["cell"] == 7].iloc[0]
    norm = to_uint8(planes)
    assert norm.max() > 200  # 12-bit scaled up, not truncated
    crop, _, _ = square_crop(norm, mask, 7)
    np.testing.assert_array_equal(shards[r["shard"]][r["row"]], resize_square(crop, 256))


# --------------------------------------------------------------------------- issue 13
def _one_image(root: Path) -> tuple[Path, Path]:
    images, masks = root / "images", root / "masks"
    masks.mkdir(parents=True)
    planes, mask = _synthetic()
    _write_image(images, "a", planes)
    write_mask(masks / "a_cellmask.png", mask)
    return images, masks


def test_rerun_with_other_labels_masks_or_none_is_refused_or_recomputed(tmp_path):
    """Case 5: the crops are stamped with their inputs (label table content, masks, images) + options."""
    images, masks = _one_image(tmp_path)
    write_labels(tmp_path / "l1.csv", {"a": [1]})
    write_labels(tmp_path / "l2.csv", {"a": [2]})
    out = tmp_path / "cells"
    build_cell_dataset(images, masks, out, labels=tmp_path / "l1.csv", options=CropOptions(size=16))
    # same inputs: resumes (skips)
    again = build_cell_dataset(images, masks, out, labels=tmp_path / "l1.csv", options=CropOptions(size=16))
    assert again.n_skipped == 1
    # a copy of the same table under another name is the same input
    (tmp_path / "copy.csv").write_bytes((tmp_path / "l1.csv").read_bytes())
    copy = build_cell_dataset(images, masks, out, labels=tmp_path / "copy.csv", options=CropOptions(size=16))
    assert copy.n_skipped == 1
    other_masks = tmp_path / "masks2"
    other_masks.mkdir()
    write_mask(other_masks / "a_cellmask.png", _synthetic()[1][:, ::-1])
    for kw in ({"labels": tmp_path / "l2.csv"}, {"labels": None}):
        with pytest.raises(ValueError, match="labels: "):
            build_cell_dataset(images, masks, out, options=CropOptions(size=16), **kw)
    with pytest.raises(ValueError, match="masks: "):
        build_cell_dataset(images, other_masks, out, labels=tmp_path / "l1.csv", options=CropOptions(size=16))
    assert all(list(x) == [1] for x in pd.read_parquet(out / "cells.parquet")["labels"])
    # --overwrite recomputes with the new inputs
    res = CliRunner().invoke(
        app, ["crop", str(images), "-m", str(masks), "-o", str(out), "-l", str(tmp_path / "l2.csv"),
              "--size", "16", "--overwrite"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert '"skipped_done": 0' in res.stdout
    assert all(list(x) == [2] for x in pd.read_parquet(out / "cells.parquet")["labels"])


def test_failed_first_run_does_not_block_the_corrected_rerun(tmp_path):
    images, masks = _one_image(tmp_path)
    out = tmp_path / "cells"
    # an image folder without image sets: refused, exit 1
    (tmp_path / "none").mkdir()
    res = CliRunner().invoke(app, ["crop", str(tmp_path / "none"), "-m", str(masks), "-o", str(out)])
    assert res.exit_code == 1 and "no image sets found" in res.output
    # a first run that fails on every image leaves its stamp, but no crops: the rerun with other options runs
    (masks / "a_cellmask.png").rename(tmp_path / "kept.png")
    write_mask(masks / "a_cellmask.png", _synthetic()[1][:, :100])  # wrong size: fails
    assert build_cell_dataset(images, masks, out, options=CropOptions(size=16)).failed
    assert (out / "parts" / "options.json").is_file()
    (tmp_path / "kept.png").replace(masks / "a_cellmask.png")
    fixed = build_cell_dataset(images, masks, out, options=CropOptions(size=24))
    assert not fixed.failed and fixed.n_cells == 3


def test_images_without_cells_or_with_all_cells_dropped_succeed_with_0_rows(tmp_path):
    """Case 16: an empty mask, or every cell dropped, is done (0 rows), not failed; merge takes the part."""
    images, masks = _one_image(tmp_path)
    planes, mask = _synthetic()
    _write_image(images, "empty", planes)
    write_mask(masks / "empty_cellmask.png", np.zeros_like(mask))
    out = tmp_path / "cells"
    args = ["crop", str(images), "-m", str(masks), "-o", str(out), "--size", "16", "--feature-size", "16"]
    res = CliRunner().invoke(app, [*args, "--min-area", "100000"])
    assert res.exit_code == 0, res.output
    status = pd.read_parquet(out / "crop_status.parquet").set_index("image_id")
    assert (status["status"] == "ok").all() and status["n_cells"].tolist() == [0, 0]
    assert len(pd.read_parquet(out / "cells.parquet")) == 0
    assert CliRunner().invoke(app, args + ["--min-area", "100000"]).exit_code == 0  # rerun: done
    only_empty = tmp_path / "only-empty"
    (tmp_path / "m2").mkdir()
    write_mask(tmp_path / "m2" / "empty_cellmask.png", np.zeros_like(mask))
    _write_image(tmp_path / "i2", "empty", planes)
    small = CropOptions(size=16, feature_size=16)
    build_cell_dataset(tmp_path / "i2", tmp_path / "m2", only_empty, options=small)
    full = tmp_path / "full"
    build_cell_dataset(images, masks, full, options=small)
    from hpacell.cellcrops.dataset import CellDataset
    from hpacell.cellcrops.merge import merge_cell_datasets

    assert merge_cell_datasets([only_empty, full], tmp_path / "merged") == 3
    ds = CellDataset(tmp_path / "merged")
    assert len(ds) == 3 and ds[2]["image"].shape == (4, 16, 16)


def test_bad_mask_error_names_the_file(tmp_path):
    images, masks = _one_image(tmp_path)
    neg = np.zeros((120, 160), np.int16)
    neg[1, 1] = -3
    assert cv2.imwrite(str(tmp_path / "n.tiff"), neg)
    (tmp_path / "n.tiff").replace(masks / "a_cellmask.png")
    summary = build_cell_dataset(images, masks, tmp_path / "cells", options=CropOptions(size=16))
    assert "a_cellmask.png: mask ids must be >= 0" in summary.failed["a"]


def test_meta_paths_are_relative_to_meta_json(tmp_path, monkeypatch):
    """Case 13: sources are recorded relative to meta.json and resolve from any working directory."""
    from hpacell.cellcrops.shards import recorded_source

    images, masks = _one_image(tmp_path / "data")
    monkeypatch.chdir(tmp_path / "data")
    build_cell_dataset("images", "masks", "../run/cells", options=CropOptions(size=16))
    meta = __import__("json").loads((tmp_path / "run" / "cells" / "meta.json").read_text())
    assert meta["sources"]["masks"] == "../../data/masks"
    monkeypatch.chdir(tmp_path)
    assert recorded_source(tmp_path / "run" / "cells", "masks") == masks
    (tmp_path / "run").rename(tmp_path / "moved")  # moving the dataset beside its inputs' parent
    monkeypatch.chdir("/")
    assert recorded_source(tmp_path / "moved" / "cells", "masks") == masks


def test_crop_refuses_a_foreign_folder(tmp_path):
    images, masks = _one_image(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not made by 'hpacell crop'"):
        build_cell_dataset(images, masks, tmp_path / "mine", options=CropOptions(size=16))


def test_predict_finds_masks_from_any_directory_and_refuses_moved_masks(tmp_path, monkeypatch):
    """Case 13 as predict sees it: masks_from_meta resolves from meta.json; moved masks are an error."""
    from hpacell.classifier.scoring.predict import masks_from_meta

    images, masks = _one_image(tmp_path / "data")
    monkeypatch.chdir(tmp_path / "data")
    build_cell_dataset("images", "masks", "cells", options=CropOptions(size=16))
    monkeypatch.chdir(tmp_path)
    assert masks_from_meta(tmp_path / "data" / "cells") == masks
    masks.rename(tmp_path / "data" / "masks-moved")
    with pytest.raises(ValueError, match="records the masks folder .*masks, which does not exist"):
        masks_from_meta(tmp_path / "data" / "cells")
