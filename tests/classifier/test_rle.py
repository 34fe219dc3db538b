"""Full-image RLE from a cell's bbox equals pycocotools on the full mask, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from hpacell.classifier.scoring.rle import (
    cell_runs,
    decode_counts,
    decode_mask,
    encode_cell,
    encode_counts,
    encode_mask_cells,
    runs_to_string,
)
from hpacell.segmentation.io import read_mask


def _reference(full: np.ndarray) -> bytes:
    return coco_mask.encode(np.asfortranarray(full.astype(np.uint8)))["counts"]


def test_every_real_reference_mask_round_trips(hpa2021, real_ids):
    n = 0
    for image_id in real_ids:
        mask = read_mask(hpa2021 / "masks" / f"{image_id}_cellmask.png")
        encoded = encode_mask_cells(mask)
        assert sorted(encoded) == sorted(int(c) for c in np.unique(mask) if c)
        for cell, text in encoded.items():
            full = mask == cell
            assert decode_counts(text) == _reference(full), (image_id, cell)
            decoded = decode_mask(text, *mask.shape)
            assert np.array_equal(decoded.astype(bool), full)
            n += 1
    assert n == 72


@pytest.mark.parametrize("seed", range(4))
def test_random_masks_including_full_height_wraps(seed):
    rng = np.random.default_rng(seed)
    for _ in range(300):
        h, w = rng.integers(1, 9, 2)
        full = rng.random((h, w)) < rng.random()
        ys, xs = np.nonzero(full)
        if ys.size:
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        else:
            y0 = y1 = x0 = x1 = 0
        ours = runs_to_string(cell_runs(full[y0:y1, x0:x1], x0, y0, h, w), h, w)
        assert ours == _reference(full), full.astype(int)


def test_runs_merge_across_columns_and_trailing_foreground():
    full = np.zeros((3, 3), bool)
    full[2, 0] = full[0, 1] = True  # bottom of column 0 and top of column 1: one run
    full[:, 2] = True  # ends with foreground: no trailing zero-run
    runs = cell_runs(full, 0, 0, 3, 3).tolist()
    assert runs == [2, 2, 2, 3]
    assert runs_to_string(np.array(runs), 3, 3) == _reference(full)


def test_zlib_level_matches_sample_submission(hpa2021):
    import csv

    with open(hpa2021 / "sample_submission.csv") as f:
        row = next(iter(csv.DictReader(f)))
    sample_mask = row["PredictionString"].split()[2]
    assert encode_counts(decode_counts(sample_mask)) == sample_mask


def test_box_outside_image_and_bad_strings_raise():
    with pytest.raises(ValueError, match="outside"):
        encode_cell(np.ones((3, 3), bool), 2, 0, 4, 4)
    with pytest.raises(ValueError, match="base64"):
        decode_counts("not a mask!")
    with pytest.raises(KeyError):
        encode_mask_cells(np.zeros((4, 4), np.uint16), [3])


def test_decode_mask_and_uint16_mask():
    mask = np.zeros((5, 6), np.uint16)
    mask[1:3, 2:5] = 300
    enc = encode_mask_cells(mask)
    assert list(enc) == [300]
    assert np.array_equal(decode_mask(enc[300], 5, 6).astype(bool), mask == 300)


def test_mask_info_area_and_box_equal_the_decoded_mask():
    from hpacell.classifier.scoring.evaluate import normalized_boxes
    from hpacell.classifier.scoring.rle import mask_info

    rng = np.random.default_rng(0)
    for k in range(300):
        h, w = (int(v) for v in rng.integers(1, 25, 2))
        full = rng.random((h, w)) < rng.random() * 0.3
        if k % 5 == 0:
            full[:] = False
        if k % 7 == 0:  # a run wrapping from the bottom of a column to the top of the next
            full[-1, 0] = full[0, min(1, w - 1)] = True
        info = mask_info(encode_counts(_reference(full)), h, w)
        ys, xs = np.nonzero(full)
        assert info.area == full.sum()
        expect = None if not ys.size else (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
        assert info.box == (None if expect is None else tuple(int(v) for v in expect))
    # normalized as the organisers' evaluator: [ymin, xmin, ymax + 1, xmax + 1] / (H, W, H, W)
    full = np.zeros((50, 100), bool)
    full[10:20, 30:60] = True
    box = normalized_boxes([mask_info(encode_counts(_reference(full)), 50, 100)], 50, 100)
    assert box.tolist() == [[10 / 50, 30 / 100, 20 / 50, 60 / 100]]
