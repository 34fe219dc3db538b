"""One-to-one IoU matching of instance masks."""

from __future__ import annotations

import numpy as np
import pytest

from hpacell.segmentation.matching import iou_matrix, match_instances, segmentation_scores


def _pair(overlap: int, width: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """A reference bar of ``width`` px and a predicted one of equal length sharing ``overlap`` px."""
    ref = np.zeros((1, 300), np.uint16)
    pred = np.zeros((1, 300), np.uint16)
    ref[0, 0:width] = 4
    pred[0, width - overlap : 2 * width - overlap] = 9
    return pred, ref


def test_iou_just_below_and_above_threshold():
    # IoU = o / (200 - o): 74 -> 0.587, 76 -> 0.613
    pred, ref = _pair(74)
    assert match_instances(pred, ref, 0.6).ious.size == 0
    assert segmentation_scores(pred, ref).recall == 0.0
    pred, ref = _pair(76)
    m = match_instances(pred, ref, 0.6)
    assert m.pred_ids.tolist() == [9] and m.ref_ids.tolist() == [4]
    assert m.ious[0] == pytest.approx(76 / 124)


def test_exact_threshold_counts_as_match():
    pred, ref = _pair(75)  # 75 / 125 = 0.6
    assert match_instances(pred, ref, 0.6).ious.size == 1


def test_scores_count_split_and_merge():
    ref = np.zeros((10, 40), np.uint8)
    ref[:, :10], ref[:, 10:20], ref[:, 20:40] = 1, 2, 3
    pred = np.zeros_like(ref, dtype=np.uint32)
    pred[:, :20] = 70000  # merges refs 1 and 2: IoU 0.5 each -> no match
    pred[:, 20:40] = 5  # exactly ref 3
    pred[0, 0] = 0
    s = segmentation_scores(pred, ref)
    assert (s.n_matched, s.n_pred, s.n_ref) == (1, 2, 3)
    assert s.recall == pytest.approx(1 / 3) and s.precision == 0.5 and s.mean_iou == 1.0


def test_empty_masks():
    z = np.zeros((5, 5), np.uint16)
    s = segmentation_scores(z, z)
    assert (s.recall, s.precision, s.n_matched) == (1.0, 1.0, 0)
    ref = z.copy()
    ref[1:3, 1:3] = 1
    s = segmentation_scores(z, ref)
    assert (s.recall, s.precision, s.n_ref) == (0.0, 1.0, 1)


def test_low_threshold_assignment_is_one_to_one():
    ref = np.zeros((1, 10), np.int32)
    ref[0, :5], ref[0, 5:] = 1, 2
    pred = np.zeros_like(ref)
    pred[0, :7] = 1  # IoU 5/7 with ref 1, 2/8 with ref 2
    pred[0, 7:] = 2  # IoU 3/5 with ref 2
    m = match_instances(pred, ref, 0.2)
    assert sorted(zip(m.pred_ids.tolist(), m.ref_ids.tolist(), strict=True)) == [(1, 1), (2, 2)]


def test_sparse_ids_and_shapes():
    ref = np.zeros((4, 4), np.uint32)
    ref[:2] = 4_000_000_000
    iou, pred_ids, ref_ids = iou_matrix(ref.copy(), ref)
    assert iou.tolist() == [[1.0]] and ref_ids.tolist() == [4_000_000_000]
    with pytest.raises(ValueError, match="shape"):
        iou_matrix(ref, ref[:3])
    with pytest.raises(ValueError, match="iou_threshold"):
        match_instances(ref, ref, 0.0)
