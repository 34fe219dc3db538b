"""The builtin backend's classical steps, one by one: nuclei (nuclei.py) and cells (cells.py)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.morphology import h_maxima as sk_h_maxima

from hpacell.segmentation.cells import cytoplasm_signal, segment_cells
from hpacell.segmentation.nuclei import (
    disk,
    h_maxima,
    otsu,
    relabel,
    remove_small,
    segment_nuclei,
    smooth,
)

YY, XX = np.mgrid[:160, :160]


def _disk(cy, cx, r, value=1.0, shape=(160, 160)):
    out = np.zeros(shape, np.float32)
    out[(YY[: shape[0], : shape[1]] - cy) ** 2 + (XX[: shape[0], : shape[1]] - cx) ** 2 < r**2] = value
    return out


# --------------------------------------------------------------------------- nuclei.py helpers
def test_small_helpers():
    assert disk(0.2).shape == (3, 3) and disk(3).shape == (7, 7)  # at least 1 px
    plane = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    assert smooth(plane, 0) is not None and np.array_equal(smooth(plane, 0), plane)
    assert smooth(plane, 2).std() < plane.std()
    assert otsu(np.full((4, 4), 0.3, np.float32)) == pytest.approx(0.3)  # constant plane: no split
    two = np.r_[np.full(50, 0.2), np.full(50, 0.8)].astype(np.float32).reshape(10, 10)
    assert ((two > otsu(two)) == (two > 0.5)).all()  # splits the two levels
    lab = np.array([[0, 5, 5, 2], [9, 9, 9, 0]], np.int32)
    assert relabel(lab).tolist() == [[0, 2, 2, 1], [3, 3, 3, 0]]  # 1..n by increasing id
    assert remove_small(lab.copy(), 3).tolist() == [[0, 0, 0, 0], [9, 9, 9, 0]]


def test_h_maxima_matches_skimage():
    rng = np.random.default_rng(1)
    image = smooth(rng.random((64, 64)).astype(np.float32) * 10, 3)
    for h in (0.05, 0.2):
        assert np.array_equal(h_maxima(image, h), sk_h_maxima(image, h).astype(bool))


# --------------------------------------------------------------------------- segment_nuclei
def test_separate_nuclei_are_found_and_specks_dropped():
    blue = _disk(40, 40, 16, 0.8) + _disk(110, 110, 20, 0.6) + _disk(140, 20, 2, 0.9)  # the last: a speck
    labels = segment_nuclei(blue, scale=0.25)
    assert labels.dtype == np.int32 and labels.max() == 2
    assert labels[40, 40] > 0 and labels[110, 110] > 0 and labels[40, 40] != labels[110, 110]
    assert labels[140, 20] == 0
    # extent covers the disk: about its area
    assert abs((labels == labels[40, 40]).sum() - np.pi * 16**2) < 0.25 * np.pi * 16**2


def test_touching_nuclei_are_split_and_a_dark_image_stays_empty():
    blue = np.maximum(_disk(80, 58, 22, 0.7), _disk(80, 102, 22, 0.7))  # two discs touching side by side
    labels = segment_nuclei(blue, scale=0.25)
    assert labels.max() == 2 and labels[80, 50] != labels[80, 110]
    assert not segment_nuclei(np.full((64, 64), 0.01, np.float32)).any()  # below threshold_floor


def test_dim_nucleus_beside_bright_ones_is_kept():
    # bright cores set the threshold; the dim one is only above the extent level: a nucleus of its own
    blue = _disk(40, 40, 18, 0.9) + _disk(40, 120, 18, 0.9) + _disk(120, 80, 18, 0.35)
    labels = segment_nuclei(blue, scale=0.25)
    assert labels.max() == 3 and labels[120, 80] > 0


# --------------------------------------------------------------------------- cells.py
def test_cytoplasm_signal_weighs_channels_by_their_own_bright_level():
    red, yellow = _disk(50, 50, 30, 0.5), _disk(50, 50, 30, 0.05)  # yellow 10x dimmer: same weight
    blue = np.zeros_like(red)
    s = cytoplasm_signal(red, yellow, blue, blue_weight=0.5)
    assert s.dtype == np.float32 and s[50, 50] == pytest.approx(2 / 2.5)
    noise = np.full_like(red, 0.001)  # an empty channel is not stretched into noise (min_level)
    assert cytoplasm_signal(red, noise, blue)[0, 0] == pytest.approx(0.001 / 0.02 / 2.5, rel=1e-4)


def test_cells_grow_from_their_nuclei_and_split_along_the_valley():
    nuclei = np.zeros((160, 160), np.int32)
    nuclei[_disk(80, 45, 10) > 0] = 7
    nuclei[_disk(80, 115, 10) > 0] = 3
    # two touching cell bodies with a dimmer seam between them
    signal = np.maximum(_disk(80, 45, 38, 1.0), _disk(80, 115, 38, 1.0))
    signal[:, 78:82] *= 0.5
    cells, nuc = segment_cells(signal, nuclei, scale=0.25)
    assert cells.dtype == np.int32 and cells.max() == 2  # relabelled 1..n
    left, right = cells[80, 45], cells[80, 115]
    assert left != right and left > 0 and right > 0
    assert cells[80, 20] == left and cells[80, 140] == right  # cytoplasm reached
    assert cells[5, 5] == 0  # background
    assert set(np.unique(nuc[nuclei == 7])) == {left} and set(np.unique(nuc[nuclei == 3])) == {right}
    assert not nuc[nuclei == 0].any()  # nuclei keep their own extent, with their cell's id


def test_small_cells_are_dropped_with_their_nucleus_and_no_nuclei_no_cells():
    nuclei = np.zeros((160, 160), np.int32)
    nuclei[_disk(40, 40, 6) > 0] = 1
    nuclei[_disk(110, 110, 10) > 0] = 2
    signal = _disk(40, 40, 8, 1.0) + _disk(110, 110, 40, 1.0)
    # min_area in HPA px²: 2000 working px at scale 0.25 (the small cell has ~200, the big one ~5000)
    cells, nuc = segment_cells(signal, nuclei, scale=0.25, min_area=2000 / 0.25**2)
    assert cells.max() == 1 and cells[40, 40] == 0 and nuc[40, 40] == 0 and cells[110, 110] == 1
    empty_cells, empty_nuc = segment_cells(signal, np.zeros_like(nuclei))
    assert not empty_cells.any() and not empty_nuc.any()
