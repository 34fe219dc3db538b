import numpy as np
import pytest

from hpacell.cellcrops.features import (
    FEATURE_NAMES,
    background_level,
    cell_features,
    estimate_nuclei,
    otsu_thresholds,
)

F = 64
YY, XX = np.mgrid[:F, :F]
CELL = (YY - 32) ** 2 + (XX - 32) ** 2 < 28**2
NUC = (YY - 32) ** 2 + (XX - 32) ** 2 < 10**2


def _crop(red=0, green=0, blue=0, yellow=0) -> np.ndarray:
    """One (1, F, F, 4) crop from per-channel planes (scalars broadcast), zero outside the cell."""
    planes = [np.broadcast_to(np.asarray(p, dtype=np.uint8), (F, F)) for p in (red, green, blue, yellow)]
    return (np.stack(planes, axis=-1) * CELL[..., None]).astype(np.uint8)[None]


def _feats(crop, nucleus=NUC, scale=1.0, background=0.0):
    return {
        k: float(v[0]) for k, v in cell_features(crop, CELL[None], nucleus[None], scale, background).items()
    }


def test_green_only_in_nucleus_has_share_one():
    f = _feats(_crop(red=40, green=np.where(NUC, 200, 0), blue=np.where(NUC, 150, 0), yellow=60))
    assert f["green_nucleus_share"] == pytest.approx(1.0)
    assert f["green_nucleus_distance"] == pytest.approx(0.0)
    assert f["green_segments"] == 1
    assert f["green_segment_nucleus_ratio"] == pytest.approx(1.0)
    cyto = _feats(_crop(green=np.where(NUC, 0, 200), blue=np.where(NUC, 150, 0)))
    assert cyto["green_nucleus_share"] == pytest.approx(0.0)


def test_ssim_of_identical_channels_is_one():
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 256, (F, F)).astype(np.uint8)
    f = _feats(_crop(red=tex, green=tex, blue=255 - tex, yellow=rng.integers(0, 256, (F, F))))
    assert f["ssim_green_red"] == pytest.approx(1.0, abs=1e-5)
    assert f["ssim_green_blue"] < 0  # anti-correlated
    assert abs(f["ssim_green_yellow"]) < 0.2  # independent


def test_ratio_area_and_shapes():
    disk = (YY - 32) ** 2 + (XX - 20) ** 2 < 6**2
    f = _feats(_crop(green=np.where(disk, 200, 10), yellow=50), scale=2.0, background=20)
    assert f["green_yellow_ratio"] == pytest.approx(
        (200 * disk.sum() + 10 * (CELL.sum() - disk.sum())) / CELL.sum() / 50, rel=1e-5
    )
    assert f["green_area"] == pytest.approx(disk.sum() * 4)
    assert f["green_compactness"] == pytest.approx(1.0, abs=0.2)
    assert f["green_eccentricity"] < 0.2
    # Distance from the disk centre (x = 20) to the nucleus edge (radius 10 around x = 32), in image px.
    assert f["green_nucleus_distance"] == pytest.approx(2 * (12 - 10), abs=2.5)
    bar = (np.abs(YY - 32) < 2) & (np.abs(XX - 32) < 20)
    g = _feats(_crop(green=np.where(bar, 200, 0)), background=20)
    assert g["green_eccentricity"] > 0.95 and g["green_compactness"] > 2


def test_empty_cases_are_finite():
    f = _feats(_crop(red=30), nucleus=np.zeros_like(NUC))
    assert all(np.isfinite(v) for v in f.values())
    assert f["green_segments"] == 0 and f["green_area"] == 0 and f["green_nucleus_share"] == 0
    empty = cell_features(
        np.zeros((0, F, F, 4), np.uint8), np.zeros((0, F, F), bool), np.zeros((0, F, F), bool)
    )
    assert set(empty) == set(FEATURE_NAMES) and all(v.shape == (0,) for v in empty.values())


def test_nucleus_estimate_and_thresholds():
    blue = _crop(blue=np.where(NUC, 180, 30))[..., 2]
    est = estimate_nuclei(blue, CELL[None])
    assert (est[0] == NUC).all()
    assert 30 <= otsu_thresholds(blue, CELL[None])[0] < 180
    ch = np.full((64, 64), 12, np.uint8)
    assert background_level(ch, np.zeros((64, 64), np.uint8)) == 15.0
    assert background_level(ch, np.ones((64, 64), np.uint8)) == 0.0
