"""The compiled flood gives scikit-image's watershed pixel for pixel, ties included."""

import numpy as np
import pytest
from skimage.segmentation import watershed

from hpacell.segmentation.backends import flood as flood_module
from hpacell.segmentation.backends.flood import flood, have_numba

needs_numba = pytest.mark.skipif(not have_numba(), reason="numba not installed (pip install numba)")


def _cases(n, seed=0):
    """Small maps with few grey levels (many equal-valued seeds of different labels: the ties)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = rng.integers(3, 40, 2)
        level = rng.integers(0, rng.integers(1, 6), (h, w)).astype(np.uint8)
        mask = rng.random((h, w)) < rng.uniform(0.5, 1.0)
        seeds = np.zeros((h, w), np.int32)
        for _ in range(rng.integers(1, 8)):
            seeds[rng.integers(0, h), rng.integers(0, w)] = rng.integers(1, 5)
        if rng.random() < 0.5:  # seeds covering much of the mask, as the cells of the second flood
            big = rng.random((h, w)) < 0.4
            seeds = np.where(big, rng.integers(1, 5, (h, w)), seeds).astype(np.int32)
        yield level, seeds, mask


@needs_numba
@pytest.mark.parametrize("line", [False, True])
def test_compiled_flood_equals_skimage_watershed_with_ties(line):
    differing = 0
    for level, seeds, mask in _cases(400):
        want = watershed(level.astype(np.float64), seeds, mask=mask, watershed_line=line)
        got = flood(level, seeds, mask, line, compiled=True)
        assert got.dtype == np.int32
        differing += not np.array_equal(got, want)
    assert differing == 0


@needs_numba
def test_compiled_flood_takes_wide_and_negative_integer_levels():
    rng = np.random.default_rng(3)
    level = rng.integers(-300, 300, (50, 60)).astype(np.int16)
    seeds = np.zeros(level.shape, np.int32)
    seeds[5, 5], seeds[40, 50], seeds[25, 30] = 1, 2, 3
    mask = np.ones(level.shape, bool)
    for line in (False, True):
        want = watershed(level.astype(np.float64), seeds, mask=mask, watershed_line=line)
        assert np.array_equal(flood(level, seeds, mask, line, compiled=True), want)


def test_scikit_image_path_and_float_levels():
    for level, seeds, mask in _cases(60, seed=1):
        for line in (False, True):
            want = watershed(level.astype(np.float64), seeds, mask=mask, watershed_line=line)
            assert np.array_equal(flood(level, seeds, mask, line, compiled=False), want)
            assert np.array_equal(flood(level.astype(np.float64) / 7, seeds, mask, line), want)


@needs_numba
def test_compiled_heap_grows_when_lines_push_a_pixel_many_times():
    # a chequerboard of two labels around a free square: free pixels are pushed by several neighbours
    level = np.zeros((40, 40), np.uint8)
    seeds = np.zeros((40, 40), np.int32)
    seeds[::2, ::2] = 1
    seeds[1::2, 1::2] = 2
    seeds[10:30, 10:30] = 0
    mask = np.ones(level.shape, bool)
    want = watershed(level.astype(np.float64), seeds, mask=mask, watershed_line=True)
    kernels = flood_module._kernels()
    got = flood_module._flood_compiled(kernels, level, seeds, mask, True, heap_size=16)
    assert np.array_equal(got, want)


def test_compiled_true_without_numba_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(flood_module._KERNELS, "packed", None)
    with pytest.raises(RuntimeError, match="numba"):
        flood(np.zeros((3, 3), np.uint8), np.ones((3, 3), np.int32), np.ones((3, 3), bool), compiled=True)
    # without numba the default path is scikit-image's, with the same result
    seeds = np.zeros((3, 5), np.int32)
    seeds[0, 0], seeds[2, 4] = 1, 2
    level = np.array([[0, 1, 2, 1, 0]] * 3, np.uint8)
    want = watershed(level.astype(float), seeds)
    assert np.array_equal(flood(level, seeds, np.ones((3, 5), bool)), want)
