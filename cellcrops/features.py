"""Per-cell biological features, computed for all cells of an image at once.

The features follow one of our reference studies (hand-made descriptors of
where the green protein signal sits relative to the nucleus and the other
channels). They are computed on a small version of each crop (``F x F``,
``feature_size`` = 128 px by default, from the resized crop) with the pixels
outside the cell set to 0, so they cost a fraction of a millisecond per cell.
They are stored as ``feat_<name>`` float32 columns of ``cells.parquet``.

Notation, per cell: ``r, g, b, y`` = red, green, blue, yellow uint8
intensities of the ``F``-px crop; ``C`` = the cell's pixels (its mask
resized with ``INTER_AREA``, covered >= 50 %); ``N`` = nucleus pixels; ``s`` =
image pixels per feature pixel along one axis (``crop_side / F``).

Nucleus
    From the nuclei mask when one is given (a nucleus carries its cell's id).
    Otherwise an *estimate* (:func:`estimate_nuclei`): the pixels of ``C``
    whose blue value is above the Otsu threshold of blue over ``C`` (HPA
    reference masks come without nuclei masks).
Green segments
    8-connected components of ``G = C & (g > t)``, with
    ``t = max(Otsu(g over C), background)`` and ``background`` =
    :func:`background_level` of the image's green channel (median + 3 robust
    standard deviations of the green pixels outside all cells).

Features (``feat_`` prefix in the table):

``green_nucleus_share``
    ``sum(g over N) / sum(g over C)``; 0 when the cell has no green signal.
``ssim_green_red``, ``ssim_green_yellow``, ``ssim_green_blue``
    Mean of the structural-similarity map (Wang et al. 2004) of green with
    that channel over the pixels of ``C`` whose whole window lies in ``C`` (all
    of ``C`` for a cell too small for that): 7x7 uniform window,
    ``C1 = (0.01 * 255)**2``, ``C2 = (0.03 * 255)**2``, computed at half the
    feature resolution (``INTER_AREA``) when ``F >= 64``.
``green_yellow_ratio``
    ``mean(g over C) / max(mean(y over C), 1)``.
``green_area``
    ``|G| * s**2``: the area of green above background, in image pixels.
``green_segments``
    Number of green segments.
``green_compactness``
    Area-weighted mean over the segments of ``P**2 / (4 pi A)``, with ``A`` the
    segment's pixel count and ``P = pi / 4 * (pixel edges between the segment and
    the rest)`` (the crack length corrected for orientation: about 1 for a disk,
    larger for elongated or ragged segments). 0 without segments.
``green_eccentricity``
    Area-weighted mean over the segments of ``sqrt(1 - l2 / l1)``, ``l1 >= l2``
    the eigenvalues of the covariance of the segment's pixel coordinates (0 for
    a disk, towards 1 for a line). 0 without segments.
``green_segment_nucleus_ratio``
    Mean segment area / ``|N|``; 0 without segments or nucleus.
``green_nucleus_distance``
    Mean over the segments of the Euclidean distance from the segment centroid to
    the nearest nucleus pixel (0 inside the nucleus), in image pixels; 0 without
    segments or nucleus.

:func:`hpacell.cellcrops.crop.crop_cells` adds ``cell_area``, ``nucleus_area`` (image
pixels) and ``mean_red``, ``mean_green``, ``mean_blue``, ``mean_yellow`` (mean
uint8 intensity over the cell at full resolution).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

log = logging.getLogger(__name__)

FEATURE_NAMES: tuple[str, ...] = (
    "green_nucleus_share",
    "ssim_green_red",
    "ssim_green_yellow",
    "ssim_green_blue",
    "green_yellow_ratio",
    "green_area",
    "green_segments",
    "green_compactness",
    "green_eccentricity",
    "green_segment_nucleus_ratio",
    "green_nucleus_distance",
)
"""Names of the features :func:`cell_features` returns (without the ``feat_`` prefix)."""

SSIM_WINDOW = 7
_WINDOW_KERNEL = np.ones((SSIM_WINDOW, SSIM_WINDOW), np.uint8)
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


# --------------------------------------------------------------------------- thresholds
def otsu_from_histograms(hist: np.ndarray) -> np.ndarray:
    """Otsu thresholds of many histograms at once.

    Parameters
    ----------
    hist : (N, B) array
        Counts of the values ``0..B-1``.

    Returns
    -------
    (N,) int64
        Threshold ``t`` per row (foreground = value > t); 0 for an empty or
        one-valued histogram.

    Examples
    --------
    >>> h = np.zeros((1, 256)); h[0, 10] = 50; h[0, 200] = 50
    >>> t = otsu_from_histograms(h)[0]
    >>> bool(10 <= t < 200)
    True
    """
    hist = np.asarray(hist, dtype=np.float64)
    total = hist.sum(axis=1, keepdims=True)
    p = hist / np.maximum(total, 1)
    omega = np.cumsum(p, axis=1)
    mu = np.cumsum(p * np.arange(hist.shape[1]), axis=1)
    mu_t = mu[:, -1:]
    den = omega * (1.0 - omega)
    num = (mu_t * omega - mu) ** 2
    between = np.where(den > 1e-12, num / np.where(den > 1e-12, den, 1.0), -1.0)
    return between.argmax(axis=1).astype(np.int64)


def otsu_thresholds(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Otsu threshold of the uint8 ``values[i]`` inside ``where[i]``, for every ``i``.

    Examples
    --------
    >>> v = np.array([[[10, 10, 200, 200]]], np.uint8); w = np.ones_like(v, bool)
    >>> bool(10 <= otsu_thresholds(v, w)[0] < 200)
    True
    """
    hist = (
        np.stack(
            [
                cv2.calcHist([np.ascontiguousarray(v)], [0], w.astype(np.uint8), [256], [0, 256]).ravel()
                for v, w in zip(values, where, strict=True)
            ]
        )
        if len(values)
        else np.zeros((0, 256))
    )
    return otsu_from_histograms(hist)


def estimate_nuclei(blue: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Nucleus estimate: cell pixels whose blue value is above the cell's Otsu threshold.

    ``blue`` and ``cell`` are ``(N, F, F)`` (uint8, bool); returns ``(N, F, F)`` bool.
    """
    t = otsu_thresholds(blue, cell)
    return cell & (blue > t[:, None, None])


def background_level(channel: np.ndarray, cellmask: np.ndarray, stride: int = 4) -> float:
    """Background level of a uint8 channel: median + 3 robust SDs of the pixels outside all cells.

    The robust SD is ``1.4826 * MAD`` (at least 1). The pixels are sampled on a
    ``stride`` grid; with fewer than 100 background samples the level is 0.

    Examples
    --------
    >>> ch = np.full((64, 64), 5, np.uint8); m = np.zeros((64, 64), np.uint8); m[:32] = 1
    >>> background_level(ch, m)
    8.0
    """
    sample = channel[::stride, ::stride][cellmask[::stride, ::stride] == 0]
    if sample.size < 100:
        return 0.0
    hist = np.bincount(sample.ravel(), minlength=256).astype(np.float64)
    half = sample.size / 2
    med = int(np.searchsorted(np.cumsum(hist), half))
    dev = np.bincount(np.abs(np.arange(hist.size) - med), weights=hist)
    mad = int(np.searchsorted(np.cumsum(dev), half))
    return float(med + 3 * max(1.4826 * mad, 1.0))


# --------------------------------------------------------------------------- features
def _box(x: np.ndarray) -> np.ndarray:
    return cv2.boxFilter(x, -1, (SSIM_WINDOW, SSIM_WINDOW), normalize=True, borderType=cv2.BORDER_CONSTANT)


def _ssim_green(hwc: np.ndarray) -> np.ndarray:
    """SSIM maps of green with red, green, blue, yellow: ``(F, F, 4)`` float32."""
    x = hwc.astype(np.float32)
    g = x[..., 1:2]
    mu = _box(x)
    ex2 = _box(x * x)
    exg = _box(x * g)
    mu_g = mu[..., 1:2]
    var = ex2 - mu * mu
    var_g = var[..., 1:2]
    cov = exg - mu * mu_g
    return ((2 * mu * mu_g + _C1) * (2 * cov + _C2)) / ((mu * mu + mu_g * mu_g + _C1) * (var + var_g + _C2))


def _mean_ssim(hwc: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Mean SSIM of green with each channel over the cell, at half resolution when >= 64 px."""
    if hwc.shape[0] >= 64 and hwc.shape[0] % 2 == 0:
        half = (hwc.shape[1] // 2, hwc.shape[0] // 2)
        hwc = cv2.resize(hwc, half, interpolation=cv2.INTER_AREA)
        cell = (
            cv2.resize(cell.view(np.uint8), half, interpolation=cv2.INTER_AREA) >= 1
        )  # at least about half in the cell
    # Average where the whole window lies in the cell (the cell's edge is not structure).
    inner = cv2.erode(cell.view(np.uint8), _WINDOW_KERNEL, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    where = inner.view(bool) if inner.any() else cell
    return _ssim_green(hwc)[where].mean(0) if where.any() else np.zeros(4)


def cell_features(
    crops_hwc: np.ndarray,
    cell: np.ndarray,
    nucleus: np.ndarray,
    scale: np.ndarray | float = 1.0,
    green_background: float = 0.0,
) -> dict[str, np.ndarray]:
    """The features of the module docs for a batch of cells.

    Parameters
    ----------
    crops_hwc : (N, F, F, 4) uint8
        Small crops, channels red, green, blue, yellow last, 0 outside the cell.
    cell, nucleus : (N, F, F) bool
        The cell's and its nucleus' pixels.
    scale : float or (N,) array
        Image pixels per feature pixel (along one axis), for areas and distances.
    green_background : float
        The image's green background level (:func:`background_level`).

    Returns
    -------
    dict
        ``{name: (N,) float32}`` for each of :data:`FEATURE_NAMES`.
    """
    n, f = crops_hwc.shape[0], crops_hwc.shape[1]
    out = {k: np.zeros(n, np.float32) for k in FEATURE_NAMES}
    if n == 0:
        return out
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n,))
    n_c = cell.reshape(n, -1).sum(1)
    n_n = nucleus.reshape(n, -1).sum(1)
    green = crops_hwc[..., 1]
    g_c = (green * cell).reshape(n, -1).sum(1, dtype=np.int64)
    g_n = (green * (nucleus & cell)).reshape(n, -1).sum(1, dtype=np.int64)
    y_c = (crops_hwc[..., 3] * cell).reshape(n, -1).sum(1, dtype=np.int64)
    out["green_nucleus_share"] = np.where(g_c > 0, g_n / np.maximum(g_c, 1), 0.0)
    out["green_yellow_ratio"] = (g_c / np.maximum(n_c, 1)) / np.maximum(y_c / np.maximum(n_c, 1), 1.0)

    # Green segments: threshold per cell, connected components per cell, global ids.
    t = np.maximum(otsu_thresholds(green, cell), green_background)
    seg = cell & (green > t[:, None, None])
    labels = np.zeros((n, f, f), np.int32)
    n_seg = np.zeros(n, np.int64)
    ssim = np.zeros((n, 4))
    dist_maps = np.zeros((n, f, f), np.float32)
    offset = 0
    for i in range(n):
        k, lab = cv2.connectedComponents(seg[i].view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        n_seg[i] = k - 1
        if k > 1:
            labels[i] = np.where(lab > 0, lab + offset, 0)
            offset += k - 1
        if n_c[i]:
            ssim[i] = _mean_ssim(crops_hwc[i], cell[i])
        if n_n[i]:
            dist_maps[i] = cv2.distanceTransform((~nucleus[i]).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
    out["ssim_green_red"], out["ssim_green_blue"], out["ssim_green_yellow"] = (
        ssim[:, 0],
        ssim[:, 2],
        ssim[:, 3],
    )
    out["green_segments"] = n_seg.astype(np.float64)
    out["green_area"] = seg.reshape(n, -1).sum(1) * scale**2
    if offset:
        _segment_features(labels, offset, n_seg, n_n, scale, dist_maps, out)
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def _segment_features(
    labels: np.ndarray,
    k: int,
    n_seg: np.ndarray,
    n_n: np.ndarray,
    scale: np.ndarray,
    dist_maps: np.ndarray,
    out: dict[str, np.ndarray],
) -> None:
    """Shape and position statistics of the green segments (global ids 1..k), into ``out``."""
    n, f = labels.shape[:2]
    fg = labels > 0
    _, yy, xx = np.nonzero(fg)
    lab = labels[fg]
    yy, xx = yy.astype(np.float64), xx.astype(np.float64)
    ml = k + 1
    area = np.bincount(lab, minlength=ml)[1:].astype(np.float64)
    cx = np.bincount(lab, xx, ml)[1:] / area
    cy = np.bincount(lab, yy, ml)[1:] / area
    mu20 = np.bincount(lab, xx * xx, ml)[1:] / area - cx * cx
    mu02 = np.bincount(lab, yy * yy, ml)[1:] / area - cy * cy
    mu11 = np.bincount(lab, xx * yy, ml)[1:] / area - cx * cy
    half_tr = (mu20 + mu02) / 2
    root = np.sqrt(np.maximum(((mu20 - mu02) / 2) ** 2 + mu11**2, 0))
    l1, l2 = half_tr + root, np.maximum(half_tr - root, 0)
    ecc = np.where(l1 > 1e-12, np.sqrt(np.clip(1 - l2 / np.where(l1 > 1e-12, l1, 1), 0, 1)), 0.0)
    # Crack length: 4-neighbours of each segment pixel outside the segment (two 8-connected
    # segments are never 4-adjacent), the crop border counting as outside.
    fgp = np.pad(fg, ((0, 0), (1, 1), (1, 1))).view(np.uint8)
    inside = fgp[:, :-2, 1:-1] + fgp[:, 2:, 1:-1] + fgp[:, 1:-1, :-2] + fgp[:, 1:-1, 2:]
    edges = np.bincount(lab, (4 - inside[fg]).astype(np.float64), ml)
    perimeter = np.pi / 4 * edges[1:]
    compact = perimeter**2 / (4 * np.pi * area)

    owner = np.repeat(np.arange(n), n_seg)
    has = n_seg > 0
    wsum = np.bincount(owner, area, n)
    out["green_compactness"] = np.where(has, np.bincount(owner, compact * area, n) / np.maximum(wsum, 1), 0)
    out["green_eccentricity"] = np.where(has, np.bincount(owner, ecc * area, n) / np.maximum(wsum, 1), 0)
    mean_area = wsum / np.maximum(n_seg, 1)
    with_nuc = has & (n_n > 0)
    out["green_segment_nucleus_ratio"] = np.where(with_nuc, mean_area / np.maximum(n_n, 1), 0)
    iy = np.clip(np.rint(cy).astype(np.int64), 0, f - 1)
    ix = np.clip(np.rint(cx).astype(np.int64), 0, f - 1)
    d = dist_maps[owner, iy, ix] * scale[owner]
    out["green_nucleus_distance"] = np.where(with_nuc, np.bincount(owner, d, n) / np.maximum(n_seg, 1), 0)
