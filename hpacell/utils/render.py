"""Pictures for people: RGB composites of image sets and cell outlines."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

from hpacell.utils.intensity import to_float


def composite(image: np.ndarray, gamma: float = 0.8, percentile: float = 99.5) -> np.ndarray:
    """RGB uint8 composite of a ``(4, H, W)`` image set, as HPA shows them.

    Red = microtubules + half of yellow (ER), green = protein + half of yellow,
    blue = nucleus. Each channel is stretched to its ``percentile`` so dim
    channels stay visible.
    """
    f = to_float(image)
    out = np.empty((*f.shape[1:], 3), np.float32)
    stretched = []
    for plane in f:
        hi = float(np.percentile(plane[::4, ::4], percentile)) or 1.0
        stretched.append(np.clip(plane / hi, 0, 1))
    r, g, b, y = stretched
    out[..., 0] = np.clip(r + 0.5 * y, 0, 1)
    out[..., 1] = np.clip(g + 0.5 * y, 0, 1)
    out[..., 2] = b
    return (out**gamma * 255).astype(np.uint8)


def draw_outlines(
    rgb: np.ndarray, labels: np.ndarray, color=(255, 255, 255), thickness: int = 1
) -> np.ndarray:
    """Copy of ``rgb`` with the outlines of each labelled region drawn in ``color``."""
    edges = find_boundaries(labels, mode="inner")
    for _ in range(max(thickness, 1) - 1):
        edges |= find_boundaries(np.where(edges, 0, labels), mode="inner") & (labels > 0)
    out = rgb.copy()
    out[edges] = color
    return out


def side_by_side(*images: np.ndarray, pad: int = 8) -> np.ndarray:
    """Concatenate RGB images horizontally (resized to the first one's height)."""
    import cv2

    h = images[0].shape[0]
    tiles = []
    for im in images:
        if im.shape[0] != h:
            w = round(im.shape[1] * h / im.shape[0])
            im = cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)
        tiles.append(im)
        tiles.append(np.zeros((h, pad, 3), np.uint8))
    return np.concatenate(tiles[:-1], axis=1)
