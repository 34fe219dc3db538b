"""The mAP@0.6 scorer on hand-built cases, and image-level F1 against scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as coco_mask
from sklearn.metrics import f1_score

from hpacell.classifier.scoring.evaluate import (
    TruthError,
    TruthImage,
    average_precision,
    evaluate,
    iou_matrix,
    read_truth,
    truth_infos,
    write_truth_csv,
)
from hpacell.classifier.scoring.rle import encode_counts, encode_mask_cells
from hpacell.classifier.scoring.submission import (
    ImagePrediction,
    check_prediction,
    prediction_string,
    read_submission,
    write_submission,
)
from hpacell.segmentation.io import write_mask

H = W = 100


def _box(x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _enc(m: np.ndarray) -> str:
    return encode_mask_cells(m.astype(np.uint8))[1]


def _truth(cells: list[tuple[np.ndarray, list[int]]], image_id="a") -> TruthImage:
    return TruthImage(
        image_id, W, H, list(range(1, len(cells) + 1)), [lab for _, lab in cells], [_enc(m) for m, _ in cells]
    )


def _pred(dets: list[tuple[int, float, np.ndarray]], image_id="a") -> ImagePrediction:
    return ImagePrediction(
        image_id, W, H, [d[0] for d in dets], [d[1] for d in dets], [_enc(d[2]) for d in dets]
    )


def test_perfect_submission_scores_one():
    rng = np.random.default_rng(0)
    truth, subs = [], []
    for k in range(4):
        cells = [
            (_box(10 * j, 0, 10 * j + 8, 50), sorted(rng.choice(19, 2, replace=False).tolist()))
            for j in range(6)
        ]
        t = _truth(cells, f"img{k}")
        truth.append(t)
        dets = [(c, 0.9, m) for m, lab in cells for c in lab]
        subs.append(_pred(dets, f"img{k}"))
    ev = evaluate(subs, truth)
    assert ev.map == 1.0 and ev.map_strict == 1.0
    assert ev.macro_f1 == 1.0 and ev.sample_f1 == 1.0


def test_iou_just_below_and_above_threshold():
    gt = _box(0, 0, 10, 10)  # 100 px
    truth = [_truth([(gt, [3])])]
    # 0.59: det covers 59 of the 100 px;  0.61: det covers 61 px
    below = np.zeros((H, W), np.uint8)
    below.flat[np.flatnonzero(gt)[:59]] = 1
    above = np.zeros((H, W), np.uint8)
    above.flat[np.flatnonzero(gt)[:61]] = 1
    assert evaluate([_pred([(3, 0.9, below)])], truth).map == 0.0
    assert evaluate([_pred([(3, 0.9, above)])], truth).map == 1.0


def test_false_positive_ranked_first_and_a_missed_cell():
    a, b, c = _box(0, 0, 10, 10), _box(20, 0, 30, 10), _box(40, 0, 50, 10)
    truth = [_truth([(a, [0]), (b, [0]), (c, [0])])]
    wrong = _box(60, 60, 70, 70)
    sub = [_pred([(0, 0.95, wrong), (0, 0.9, a), (0, 0.8, b)])]  # c missed
    # precision 0, 1/2, 2/3 at recall 0, 1/3, 2/3 -> interpolated: 2/3 * 1/3 + 2/3 * 1/3
    ev = evaluate(sub, truth)
    assert ev.ap[0] == pytest.approx(4 / 9)
    assert ev.map == pytest.approx(4 / 9)  # only class 0 has true cells
    assert ev.confusion[0, 0] == 2 and ev.confusion[0, 19] == 1


def test_duplicate_detection_is_a_false_positive_and_classes_without_truth_excluded():
    a = _box(0, 0, 10, 10)
    truth = [_truth([(a, [5])])]
    sub = [_pred([(5, 0.9, a), (5, 0.8, a), (7, 0.7, a)])]
    ev = evaluate(sub, truth)
    assert ev.ap[5] == 1.0  # the second hit comes after full recall
    assert np.isnan(ev.ap[7]) and ev.map == 1.0
    assert ev.n_det[5] == 2 and ev.n_true[5] == 1


def test_default_ignores_classes_outside_image_labels_strict_counts_them():
    a, b = _box(0, 0, 10, 10), _box(20, 0, 30, 10)
    t1 = _truth([(a, [1])], "x")
    t2 = _truth([(b, [2])], "y")
    # class 1 predicted with high confidence in image y (whose labels are {2})
    sub = [_pred([(1, 0.5, a)], "x"), _pred([(1, 0.9, b), (2, 0.9, b)], "y")]
    ev = evaluate(sub, [t1, t2])
    assert ev.ap[1] == 1.0 and ev.map == 1.0
    assert ev.ap_strict[1] == pytest.approx(0.5) and ev.map_strict == pytest.approx(0.75)


def test_average_precision_matches_open_images_formula():
    ap, p, r = average_precision(np.array([0.3, 0.9, 0.5, 0.7]), np.array([1, 1, 0, 0]), 4)
    # ranked: 0.9 hit, 0.7 miss, 0.5 miss, 0.3 hit -> recall .25 @ p 1, .5 @ p .5
    assert ap == pytest.approx(0.25 * 1 + 0.25 * 0.5)
    assert p.tolist() == [1.0, 0.5, 1 / 3, 0.5]
    assert np.isnan(average_precision(np.array([]), np.array([]), 0)[0])
    assert average_precision(np.array([]), np.array([]), 3)[0] == 0.0


def test_image_f1_equals_sklearn():
    rng = np.random.default_rng(1)
    truth, subs, yt, yp = [], [], [], []
    for k in range(12):
        lab = sorted(rng.choice(19, rng.integers(1, 4), replace=False).tolist())
        cell = _box(0, 0, 20, 20)
        truth.append(_truth([(cell, lab)], f"i{k}"))
        conf = rng.random(19)
        subs.append(_pred([(c, float(conf[c]), cell) for c in range(19)], f"i{k}"))
        yt.append(np.isin(np.arange(19), lab))
        yp.append(conf >= 0.5)
    ev = evaluate(subs, truth, threshold=0.5)
    yt, yp = np.array(yt), np.array(yp)
    assert ev.sample_f1 == pytest.approx(f1_score(yt, yp, average="samples", zero_division=0))
    present = yt.any(0) | yp.any(0)
    sk = f1_score(yt[:, present], yp[:, present], average="macro", zero_division=0)
    assert ev.macro_f1 == pytest.approx(sk)


def test_truth_folder_and_csv_agree(tmp_path):
    mask = np.zeros((H, W), np.uint16)
    mask[0:10, 0:10] = 1
    mask[50:70, 20:40] = 2
    write_mask(tmp_path / "masks" / "img_cellmask.png", mask)
    pd.DataFrame({"ID": ["img", "img"], "cell": [1, 2], "Label": ["0|5", "18"]}).to_csv(
        tmp_path / "cells.csv", index=False
    )
    t = read_truth(tmp_path)
    assert t[0].labels == [[0, 5], [18]] and t[0].image_labels == {0, 5, 18}
    write_truth_csv(t, tmp_path / "truth.csv")
    t2 = read_truth(tmp_path / "truth.csv")
    assert t2[0].masks == t[0].masks and t2[0].labels == t[0].labels
    enc = encode_mask_cells(mask)
    text = prediction_string([enc[1], enc[2]], np.eye(19)[[0, 18]] * 0.9 + 0.01)
    write_submission([("img", W, H, text)], tmp_path / "sub.csv")
    ev = evaluate(read_submission(tmp_path / "sub.csv"), t2)
    assert ev.ap[0] == 1.0 and ev.ap[18] == 1.0
    # class 5: both cells score 0.01; the tie keeps file order, so the true cell (1) ranks first
    assert ev.ap[5] == 1.0
    pd.DataFrame({"ID": ["img"], "cell": [9], "Label": ["1"]}).to_csv(tmp_path / "cells.csv", index=False)
    with pytest.raises(TruthError, match="cell 9"):
        read_truth(tmp_path)


def test_size_mismatch_raises():
    truth = [_truth([(_box(0, 0, 5, 5), [0])])]
    sub = [ImagePrediction("a", 50, 50, [0], [1.0], ["x"])]
    with pytest.raises(ValueError, match="size"):
        evaluate(sub, truth)


# --------------------------------------------------------------------------- the organisers' rules (issue 12)
def _empty_mask_string(h=H, w=W) -> str:
    return encode_counts(coco_mask.encode(np.zeros((h, w), np.uint8, order="F"))["counts"])


def test_box_and_mask_differ_as_the_rules_say():
    truth_cell = _box(0, 0, 20, 20)  # box [0, 0, 20, 20] (last index 19, + 1)
    det = _box(0, 0, 20, 12)  # rows 0..11, 240 px
    det[19, 22] = 1  # one stray pixel: box [0, 0, 20, 23]
    t, s = _truth([(truth_cell, [4])]), _pred([(4, 0.9, det)])
    iou_mask = iou_matrix(list(check_prediction(s).values()), truth_infos(t), H, W, "mask")
    iou_box = iou_matrix(list(check_prediction(s).values()), truth_infos(t), H, W, "box")
    assert iou_mask[0, 0] == pytest.approx(240 / 401)  # < 0.6
    assert iou_box[0, 0] == pytest.approx((0.2 * 0.2) / (0.2 * 0.23))  # 400 / 460 > 0.6
    assert evaluate([s], [t], match="mask").ap[4] == 0.0
    ev = evaluate([s], [t], match="box")
    assert ev.ap[4] == 1.0 and ev.summary()["match"] == "box"
    assert "organisers" in ev.summary()["match_used_by"]


def test_a_detection_whose_best_cell_is_taken_is_a_false_positive_no_fallback():
    ring = _box(0, 0, 20, 20)
    ring[2:18, 2:18] = 0  # cell A: a frame, box [0, 0, 20, 20], 144 px
    inner = _box(2, 2, 18, 18)  # cell B inside it, box [2, 2, 18, 18], 256 px
    square = _box(0, 0, 19, 19)  # box IoU with A 361/400, with B 256/361: both >= 0.6, best A
    t = _truth([(ring, [0]), (inner, [0])])
    s = _pred([(0, 0.9, ring), (0, 0.8, square)])
    box = evaluate([s], [t], match="box")
    # ranked: A hit (recall 1/2, precision 1), then the square takes A again: false positive; B missed
    assert box.ap[0] == pytest.approx(0.5)
    # mask IoU: the square overlaps A 105/400 and B 256/361, so its best cell is B: a hit
    assert evaluate([s], [t], match="mask").ap[0] == 1.0


def test_empty_mask_detections_are_dropped_in_both_modes():
    a = _box(0, 0, 10, 10)
    t = _truth([(a, [2])])
    s = ImagePrediction("a", W, H, [2, 2], [0.99, 0.5], [_empty_mask_string(), _enc(a)])
    for match in ("mask", "box"):
        ev = evaluate([s], [t], match=match)
        assert ev.ap[2] == 1.0 and ev.ap_strict[2] == 1.0  # as a false positive it would rank first
        assert ev.n_det[2] == 1 and ev.n_empty == 1 and any("empty mask" in n for n in ev.notes)


def test_ap_by_hand_over_two_images_with_dropped_detections_and_ties_in_file_order():
    a, b, c = _box(0, 0, 10, 10), _box(20, 0, 30, 10), _box(40, 0, 50, 10)
    far = _box(60, 60, 70, 70)
    t1 = _truth([(a, [0]), (b, [0, 3])], "i1")  # labels {0, 3}
    t2 = _truth([(c, [0])], "i2")  # labels {0}
    s1 = _pred([(0, 0.8, a), (0, 0.6, far), (3, 0.7, b), (5, 0.99, a)], "i1")
    s2 = _pred([(0, 0.6, c), (3, 0.95, c), (0, 0.3, a)], "i2")
    ev = evaluate([s2, s1], [t1, t2], match="box")  # the submission lists i2 first
    # class 0, 3 true cells (a, b, c). Ranked: 0.8 hit (a); 0.6 i2 c hit and 0.6 i1 far miss tie:
    # file order puts i2 (row 1) before i1 (row 2); 0.3 (a in i2) misses (no cell there).
    # precision 1, 1, 2/3, 1/2 at recall 1/3, 2/3, 2/3, 2/3 -> AP = 1/3 + 1/3 = 2/3
    assert ev.ap[0] == pytest.approx(2 / 3)
    # class 3: one true cell (b); the 0.95 detection in i2 (labels {0}) is dropped; 0.7 hits b -> 1.
    # strict: 0.95 miss first, then the hit -> precision 1/2 at recall 1 -> 0.5
    assert ev.ap[3] == 1.0 and ev.ap_strict[3] == pytest.approx(0.5)
    # class 5: no true cell -> no AP; the 0.99 detection in i1 is outside its labels
    assert np.isnan(ev.ap[5]) and ev.map == pytest.approx((2 / 3 + 1) / 2)
    assert ev.map_strict == pytest.approx((2 / 3 + 0.5) / 2)
    # the other file order ranks the 0.6 miss first: precision 1, 1/2, 2/3 -> AP = 1/3 + 2/3 * 1/3
    assert evaluate([s1, s2], [t1, t2], match="box").ap[0] == pytest.approx(1 / 3 + 2 / 9)


def test_real_size_rows_have_no_field_limit(tmp_path):
    side, grid = 2048, 8  # 64 cells x 19 classes at 2048 px
    mask = np.zeros((side, side), np.uint16)
    yy, xx = np.mgrid[:256, :256]
    disc = (yy - 128) ** 2 + ((xx - 128) / 1.2) ** 2 < 110**2
    for k in range(grid * grid):
        y, x = divmod(k, grid)
        mask[y * 256 : (y + 1) * 256, x * 256 : (x + 1) * 256][disc] = k + 1
    enc = encode_mask_cells(mask)
    cells = sorted(enc)
    labels = [[k % 19] for k in range(len(cells))]
    scores = np.full((len(cells), 19), 0.05)
    for i, lab in enumerate(labels):
        scores[i, lab] = 0.9
    text = prediction_string([enc[c] for c in cells], scores)
    assert len(cells) == 64 and len(text) > 131072  # the csv module's default field limit
    write_submission([("big", side, side, text)], tmp_path / "sub.csv")
    truth = [TruthImage("big", side, side, cells, labels, [enc[c] for c in cells])]
    write_truth_csv(truth, tmp_path / "truth.csv")
    sub = read_submission(tmp_path / "sub.csv", n_classes=19)
    assert len(sub[0]) == 64 * 19 and len(sub[0].checked) == 64  # each distinct mask decoded once
    for match in ("mask", "box"):
        ev = evaluate(sub, read_truth(tmp_path / "truth.csv"), match=match)
        assert ev.map == 1.0, match
