"""HPA Cell Segmentation's labelling of its probability maps, reproduced step by step.

:func:`label_cells` turns the two full-resolution uint8 maps of the HPA models
(``H x W x 3``: channel 1 = touching borders, channel 2 = foreground, as the
reference's ``pred_nuclei`` / ``pred_cells`` return them) into the cell and
nucleus masks the reference's ``label_cell`` gives, its quirks included:

- nuclei seeds: nuclei foreground > 0.15 where ``1 - (N1 + C1) / 255 > 0.05``,
  with the two border planes added **in uint8** (the sum wraps past 255), seed
  pieces under 500 px dropped; the nucleus region (foreground > 0.4, holes under
  1,000 px filled, pieces under 8 px dropped) is split by a watershed with
  watershed lines on the flat region; nuclei under 2,500 px dropped;
- cells: region = cell foreground > ``max(0.22, 0.5 * Otsu)``. The reference
  meant to cut the cell border out of it but multiplies by a bit-wise ``~`` of a
  0/1 array (-1/-2, never 0), so the border does **not** cut the region; its
  elevation ``-clip(C2, 255 t, C2)`` is ``-C2`` (an upper bound below the lower
  one makes ``np.clip`` return the map itself), used by both watersheds;
- cells under 5,500 px dropped, ids cast to **uint8** (ids above 255 wrap: 256
  becomes background, 257 shares id 1, ...), grey closing with a disk of 6;
- "fill holes": the pixels of every label boundary (both sides, 4-neighbours)
  are zeroed, holes of the union filled, pieces relabelled 4-connected: touching
  cells end up ~2 px apart, outer edges lose 1 px, and a piece cut off from its
  nucleus becomes a cell of its own;
- a second watershed grows these labels into (cell) or (cell border > 0.05),
  "fill holes" again, 8-connected pieces under 5,500 px dropped, relabelled
  1..N in raster order (uint16);
- nuclei: nucleus pixels inside cells, 8-connected pieces under 2,500 px
  dropped, each carrying the id of its cell.

All thresholds compare ``value / 255`` strictly, as the reference does. The three
watersheds are scikit-image's, run by :func:`hpacell.segmentation.backends.flood.flood`
(the same heap order, compiled with numba when it is installed).
``boundary_gaps=False`` (not the reference) keeps touching cells touching: the
"fill holes" steps fill holes without removing label boundaries, so cells keep
their nuclei's ids and no 2 px gaps or fragments appear. ``exact_ties=False`` (not
the reference) makes the second watershed ~10x cheaper at the price of a few pixels
where equal-valued edges of different cells tie.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import measure
from skimage.filters import threshold_otsu
from skimage.morphology import disk

from hpacell.segmentation.backends.flood import flood

__all__ = ["label_cells", "cell_threshold"]

_LEVELS = np.arange(256, dtype=np.float64) / 255.0
_CROSS = ndi.generate_binary_structure(2, 1)
_SQUARE = ndi.generate_binary_structure(2, 2)


def _above(plane: np.ndarray, threshold: float) -> np.ndarray:
    """``plane / 255 > threshold`` for a uint8 plane, computed exactly as in float64."""
    return (_LEVELS > threshold)[plane]


def _drop_small(labels: np.ndarray, min_size: int, dtype: type | None = None) -> np.ndarray:
    """Labels with fewer than ``min_size`` pixels (counted over the whole image) set to 0, cast to
    ``dtype`` (numpy's wrap-around) by the same table look-up."""
    if min_size <= 0 and dtype is None:
        return labels
    ids = _without_small(np.bincount(labels.ravel()), min_size)
    return ids.astype(dtype or labels.dtype, copy=False)[labels]


def _without_small(areas: np.ndarray, min_size: int) -> np.ndarray:
    """Look-up table id -> id (int32), 0 for the background and for ids of fewer than ``min_size`` px."""
    ids = np.arange(areas.size, dtype=np.int32)
    ids[areas < min_size] = 0
    ids[0] = 0
    return ids


def _pieces(
    mask: np.ndarray, connectivity: int = 4, areas: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(labels, areas)`` of the connected pieces of a bool mask (ids in no particular order;
    ``areas[0]`` is the background; None with ``areas=False``)."""
    mask = np.ascontiguousarray(mask).view(np.uint8)
    if not areas:
        return cv2.connectedComponents(mask, connectivity=connectivity)[1], None
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=connectivity)
    return labels, stats[:, cv2.CC_STAT_AREA]


def _keep_pieces(mask: np.ndarray, min_size: int, connectivity: int = 4) -> np.ndarray:
    """The pieces of ``mask`` of at least ``min_size`` pixels
    (``skimage.morphology.remove_small_objects`` with the old exclusive ``min_size``)."""
    labels, areas = _pieces(mask, connectivity)
    keep = areas >= min_size
    keep[0] = False
    return keep[labels]


def _kept_labels(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Distinct ids of the 4-connected pieces of ``mask`` of at least ``min_size`` pixels, 0 elsewhere."""
    labels, areas = _pieces(mask)
    return _without_small(areas, min_size)[labels]


def _fill_small_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """``mask`` with background pieces (4-connected, edge ones included) under ``max_area`` px set."""
    return ~_keep_pieces(~mask, max_area)


def _fill_all_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes``: background not 4-connected to the image edge is set."""
    labels, _ = _pieces(~mask, areas=False)
    edge = np.zeros(labels.max() + 1, bool)
    for side in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        edge[side] = True
    edge[0] = True  # id 0 = the foreground itself
    return mask | ~edge[labels]


def _label_components(labels: np.ndarray) -> np.ndarray:
    """8-connected pieces of equal non-zero value, numbered 1..N in raster order."""
    return measure.label(labels, connectivity=2)


def _fill_holes(labels: np.ndarray, boundary_gaps: bool = True, ids: bool = True) -> np.ndarray:
    """The reference's "fill holes": boundaries removed, holes of the union filled, 4-connected
    pieces as the new ids (their order does not matter to any later step); with ``ids=False``
    and ``boundary_gaps`` only the filled mask (bool)."""
    if boundary_gaps:
        filled = _fill_all_holes((labels > 0) & ~_boundaries(labels))
        return _pieces(filled, areas=False)[0] if ids else filled
    holes = _fill_all_holes(labels > 0) & (labels == 0)
    if not holes.any():
        return labels
    _, (iy, ix) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    out = labels.copy()
    out[holes] = labels[iy[holes], ix[holes]]
    return out


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another value (``find_boundaries`` mode "thick", both sides)."""
    out = np.zeros(labels.shape, bool)
    d = labels[:, 1:] != labels[:, :-1]
    out[:, 1:] |= d
    out[:, :-1] |= d
    d = labels[1:] != labels[:-1]
    out[1:] |= d
    out[:-1] |= d
    return out


def _flood(
    elevation: np.ndarray,
    markers: np.ndarray,
    mask: np.ndarray,
    line: bool = False,
    edges_only: bool = False,
) -> np.ndarray:
    """``skimage.segmentation.watershed(elevation, markers, mask=mask, watershed_line=line)``
    (4-connected), int32.

    ``edges_only`` leaves out the marker pixels that have no unlabelled neighbour in
    ``mask`` (they flood nothing) and puts their ids back afterwards: far less work
    when the markers cover most of the mask, the same result except where seeds of
    different ids with equal values tie (their order depends on the whole heap).
    """
    if edges_only:
        seeded = mask & (markers > 0)
        interior = seeded & ~ndi.binary_dilation(mask & ~seeded, _CROSS)
        out = _flood(elevation, markers, mask & ~interior, line)
        out[interior] = markers[interior]
        return out
    return flood(elevation, markers, mask, line)


def cell_threshold(cell_foreground: np.ndarray) -> float:
    """``max(0.22, 0.5 * threshold_otsu(C2 / 255))``, the cell region threshold of the reference.

    The 256-bin histogram Otsu computes on the float image is built from the uint8
    counts (the same values fall into the same bins), which saves the float copy.

    Examples
    --------
    >>> cell_threshold(np.array([[0, 0, 200, 255]], np.uint8))
    0.22
    """
    counts = np.bincount(cell_foreground.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    if present.size == 1:  # threshold_otsu returns the single value
        otsu = float(_LEVELS[present[0]])
    else:
        values = _LEVELS[present]
        hist, edges = np.histogram(values, bins=256, range=(values[0], values[-1]), weights=counts[present])
        otsu = float(threshold_otsu(hist=(hist.astype(np.float32), (edges[:-1] + edges[1:]) / 2.0)))
    return max(0.22, otsu * 0.5)


def _nuclei(nuclei_map: np.ndarray, cell_map: np.ndarray, min_nucleus_size: int) -> np.ndarray:
    n_border, n_fg = nuclei_map[..., 1], nuclei_map[..., 2]
    border_sum = n_border + cell_map[..., 1]  # uint8: wraps past 255, as in the reference
    allowed = ((1.0 - _LEVELS) > 0.05)[border_sum]
    seeds = allowed & _above(n_fg, 0.15)
    markers = _kept_labels(seeds, 500)  # marker ids need only be distinct
    region = _above(n_fg, 0.4)
    region = _fill_small_holes(region, 1000)
    region = _keep_pieces(region, 8)
    nuclei = _flood(region, markers, region, line=True)
    nuclei = _drop_small(nuclei, min_nucleus_size)
    return _label_components(nuclei)


def label_cells(
    cell_map: np.ndarray,
    nuclei_map: np.ndarray,
    *,
    boundary_gaps: bool = True,
    exact_ties: bool = True,
    min_nucleus_size: int = 2500,
    min_cell_size: int = 5500,
    closing_radius: int = 6,
) -> tuple[np.ndarray, np.ndarray]:
    """``(cells, nuclei)`` uint16 label images from the reference's two uint8 ``H x W x 3`` maps.

    Parameters
    ----------
    cell_map, nuclei_map : numpy.ndarray
        uint8 ``(H, W, 3)``: channel 1 = border, channel 2 = foreground (0..255).
    boundary_gaps : bool
        True (the reference): label boundaries are removed in the "fill holes"
        steps (2 px gaps between touching cells, fragments become cells).
    exact_ties : bool
        True: every watershed floods from all its seed pixels, as the reference,
        so ties between equal-valued seeds go the same way. False: the second
        watershed floods from the cells' edge pixels only (its cost drops ~10x;
        0-14 pixels per 2048 px golden image differ from the reference).
    min_nucleus_size, min_cell_size, closing_radius : int
        The reference's 2,500 px, 5,500 px and disk radius 6 (HPA pixels).

    Returns
    -------
    tuple of numpy.ndarray
        ``(cells, nuclei)``, uint16; ids 1..N in raster order, each nucleus
        pixel carries its cell's id.
    """
    for name, m in (("cell_map", cell_map), ("nuclei_map", nuclei_map)):
        if m.dtype != np.uint8 or m.ndim != 3 or m.shape[2] < 3:
            raise ValueError(f"{name}: expected a uint8 (H, W, 3) map, got {m.dtype} {m.shape}")
    if cell_map.shape[:2] != nuclei_map.shape[:2]:
        raise ValueError(f"maps differ in size: {cell_map.shape[:2]} vs {nuclei_map.shape[:2]}")
    c_border, c_fg = cell_map[..., 1], cell_map[..., 2]
    nuclei = _nuclei(nuclei_map, cell_map, min_nucleus_size)

    t = cell_threshold(c_fg)
    region = _above(c_fg, t)
    elevation = 255 - c_fg  # -C2 shifted by 255 (the same order): uint8 levels for the compiled flood
    cells = _flood(elevation, nuclei, region)
    cells = _drop_small(cells, min_cell_size, np.uint8)  # ids wrap past 255, as in the reference
    if closing_radius > 0:
        kernel = disk(closing_radius).astype(np.uint8)  # cv2's closing ignores the outside, as
        cells = cv2.morphologyEx(cells, cv2.MORPH_CLOSE, kernel)  # skimage's "reflect" does here
    cells = _fill_holes(cells, boundary_gaps)
    grow = (cells > 0) | _above(c_border, 0.05)
    cells = _flood(elevation, cells, grow, edges_only=not exact_ties)
    cells = _fill_holes(cells, boundary_gaps, ids=False)
    if boundary_gaps:  # 8-connected pieces of the foreground, small ones dropped, 1..N in raster order
        cells, n = ndi.label(cells, _SQUARE)
        keep = np.bincount(cells.ravel(), minlength=n + 1) >= min_cell_size
        keep[0] = False
        ids = np.zeros(n + 1, np.int32)
        ids[keep] = np.arange(1, np.count_nonzero(keep) + 1)
        cells = ids[cells]
    else:
        cells = _label_components(_drop_small(_label_components(cells), min_cell_size))
    cells = cells.astype(np.uint16)

    inside = _keep_pieces((cells > 0) & (nuclei > 0), min_nucleus_size, connectivity=8)
    return cells, np.where(inside, cells, 0)
