"""Cells grown from their nuclei over the cytoplasm signal, classically, at working scale.

Units as in :mod:`hpacell.segmentation.nuclei`: lengths and areas in HPA pixels,
converted with ``scale`` (working pixels per HPA pixel).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from hpacell.segmentation.nuclei import disk, otsu, relabel, remove_small, smooth

log = logging.getLogger(__name__)


def cytoplasm_signal(
    red: np.ndarray,
    yellow: np.ndarray,
    blue: np.ndarray,
    blue_weight: float = 0.5,
    percentile: float = 99.0,
    min_level: float = 0.02,
) -> np.ndarray:
    """Cell-body signal: microtubules + ER (+ some nucleus), each by its own bright level.

    Each plane (float, ``[0, 1]``) is divided by its ``percentile`` (at least
    ``min_level``, so that an empty channel is not blown up into noise), so a dim
    channel weighs as much as a bright one. Returns float32 (unsmoothed).

    Examples
    --------
    >>> r = np.full((4, 4), 0.5, np.float32); y = r / 5; b = np.zeros_like(r)
    >>> cytoplasm_signal(r, y, b)[0, 0].round(3)
    np.float32(0.8)
    """
    out = np.zeros(red.shape, np.float32)
    for plane, w in ((red, 1.0), (yellow, 1.0), (blue, blue_weight)):
        if w == 0:
            continue
        hi = max(float(np.percentile(plane, percentile)), min_level)
        out += np.float32(w / hi) * plane
    out /= np.float32(2.0 + blue_weight)
    return out


def segment_cells(
    signal: np.ndarray,
    nuclei: np.ndarray,
    scale: float = 0.25,
    sigma: float = 12.0,
    boundary_sigma: float = 8.0,
    threshold_floor: float = 0.05,
    threshold_factor: float = 0.3,
    close_radius: float = 24.0,
    min_area: float = 5500.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Grow one cell from each nucleus over the foreground of ``signal``.

    As hpacellseg does on its probability map: the cell foreground is the
    smoothed signal above ``max(threshold_floor, threshold_factor * otsu)`` (a low
    level, so outlines reach into dim cytoplasm) plus the nuclei; a watershed
    seeded by the nuclei divides it along the dark valleys between cells;
    cells below ``min_area`` are dropped with their nucleus.

    Parameters
    ----------
    signal : numpy.ndarray
        Output of :func:`cytoplasm_signal` (working scale).
    nuclei : numpy.ndarray
        Nucleus labels from :func:`hpacell.segmentation.nuclei.segment_nuclei`.
    scale : float
        Working pixels per HPA pixel.
    sigma, boundary_sigma : float
        Gaussian smoothing (HPA pixels) of the signal for the foreground and
        for the watershed between touching cells.
    threshold_floor, threshold_factor : float
        Foreground threshold, relative to the signal (whose bright level is ~1).
    close_radius : float
        Closing radius (HPA pixels) that smooths the foreground outline.
    min_area : float
        Cells smaller than this (HPA pixels²) are dropped with their nucleus.

    Returns
    -------
    cells, nuclei : numpy.ndarray
        int32 labels at working scale, ids ``1..n``; every nucleus carries its cell's id.
    """
    if nuclei.max() == 0:
        return np.zeros(signal.shape, np.int32), np.zeros(signal.shape, np.int32)
    smoothed = smooth(signal, sigma * scale)
    t = max(threshold_floor, threshold_factor * otsu(smoothed))
    fg = ((smoothed > t) | (nuclei > 0)).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, disk(close_radius * scale))
    fg = ndi.binary_fill_holes(fg)
    valleys = -smooth(signal, boundary_sigma * scale)
    cells = watershed(valleys, nuclei, mask=fg).astype(np.int32)
    cells = remove_small(cells, min_area * scale**2)
    cells = relabel(cells)
    return cells, np.where(nuclei > 0, cells, 0).astype(np.int32)
