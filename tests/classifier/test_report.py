"""The prediction report's pictures: PR curves, AP bars, class montages, image overlays."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest

from hpacell.classifier.scoring.report import (
    class_colors,
    class_montages,
    image_overlays,
    make_report,
    plot_ap_bars,
    plot_pr_curves,
)
from hpacell.segmentation.io import CHANNELS, write_mask, write_png
from hpacell.utils.errors import InputError
from hpacell.utils.render import composite


def _png(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def test_class_colors_are_distinct():
    c = class_colors(19)
    assert c.shape == (19, 3) and c.dtype == np.uint8 and len({tuple(x) for x in c[:19]}) == 19


def test_pr_curves_and_ap_bars_are_written_atomically(tmp_path):
    ev = SimpleNamespace(
        classes=["Nucleoplasm", "Cytosol", "Negative"],
        curves={0: (np.array([1.0, 0.5]), np.array([0.5, 1.0])), 1: (np.array([]), np.array([]))},
        ap=np.array([0.75, 0.0, np.nan]),
        ap_strict=np.array([0.5, 0.0, np.nan]),
        map=0.375,
        map_strict=0.25,
        n_true=np.array([2, 1, 0]),
    )
    for fn, name in ((plot_pr_curves, "pr.png"), (plot_ap_bars, "ap.png")):
        path = fn(ev, tmp_path / name)
        assert path == tmp_path / name and _png(path).shape[0] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ap.png", "pr.png"]  # no temp files left


def test_montage_puts_the_top_scoring_cell_first(tmp_path):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (5, 4, 16, 16), dtype=np.uint8)
    scores = pd.DataFrame({"0": [0.1, 0.2, 0.3, 0.9, 0.5], "1": [0.9, 0.1, 0.1, 0.1, 0.1]})
    paths = class_montages(scores, crops, ["Nuclear membrane", "b", "not scored"], tmp_path, n=4, tile=16)
    assert [p.name for p in paths] == ["montage_00_Nuclear_membrane.png", "montage_01_b.png"]
    canvas = _png(paths[0])[..., ::-1]  # cv2 reads BGR
    assert canvas.shape == (18 + 2 * (16 + 14), 2 * 16, 3)  # title + 2 rows of 2 tiles with captions
    first = cv2.resize(composite(crops[3], percentile=99.8), (16, 16), interpolation=cv2.INTER_AREA)
    assert np.array_equal(canvas[18:34, 0:16], first)  # cell 3 (0.9) first
    second = cv2.resize(composite(crops[4], percentile=99.8), (16, 16), interpolation=cv2.INTER_AREA)
    assert np.array_equal(canvas[18:34, 16:32], second)  # then cell 4 (0.5)


def test_overlays_tint_cells_and_skip_unreadable_images(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for ch in CHANNELS:
        write_png(images / f"img1_{ch}.png", np.full((64, 64), 60, np.uint8))
    mask = np.zeros((64, 64), np.uint16)
    mask[4:30, 4:30], mask[34:60, 34:60] = 1, 2
    write_mask(masks / "img1_cellmask.png", mask)
    scores = pd.DataFrame(
        {
            "image_id": ["img1", "img1", "gone"],
            "cell": [1, 2, 1],
            "x0": [4, 34, 0],
            "y0": [4, 34, 0],
            "x1": [30, 60, 1],
            "y1": [30, 60, 1],
            "0": [0.9, 0.1, 0.5],
            "1": [0.1, 0.8, 0.5],
        }
    )
    paths = image_overlays(scores, images, masks, ["a", "b"], tmp_path / "out", image_ids=["img1", "gone"])
    assert [p.name for p in paths] == ["overlay_img1.png"]  # "gone" has no image: skipped, not fatal
    assert _png(paths[0]).shape[0] > 100


def test_report_refuses_cells_that_are_not_in_the_dataset(tmp_path):
    from hpacell.cellcrops.shards import CropOptions, build_cell_dataset
    from hpacell.cellcrops.synth import make_synth_dataset

    make_synth_dataset(tmp_path / "syn", 1, 96, seed=0, cell_scale=0.3)
    build_cell_dataset(
        tmp_path / "syn/images", tmp_path / "syn/masks", tmp_path / "cells", options=CropOptions(size=16)
    )
    cells = pd.read_parquet(tmp_path / "cells/cells.parquet")
    table = pd.DataFrame({"cell_uid": cells["cell_uid"], "image_id": cells["image_id"], "0": 0.5})
    written = make_report(tmp_path / "pred", tmp_path / "cells", table, ["a"])
    assert [p.name for p in written] == ["montage_00_a.png"] and written[0].parent.name == "report"
    table.loc[0, "cell_uid"] = "not-a-cell"
    with pytest.raises(InputError, match="not in the dataset"):
        make_report(tmp_path / "pred", tmp_path / "cells", table, ["a"])
