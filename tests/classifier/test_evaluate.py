"""The mAP@0.6 scorer on hand-built cases, and image-level F1 against scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from hpacell.classifier.scoring.evaluate import (
    TruthError,
    TruthImage,
    average_precision,
    evaluate,
    read_truth,
    write_truth_csv,
)
from hpacell.classifier.scoring.rle import encode_mask_cells
from hpacell.classifier.scoring.submission import (
    ImagePrediction,
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
