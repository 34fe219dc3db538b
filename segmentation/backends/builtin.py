"""The ``builtin`` segmenter: classical nuclei + seeded watershed, no weights to download.

It mimics what hpacellseg (the HPA's own U-Net segmenter, whose masks the 2021
competition was built around) does with its probability maps, on the image
intensities instead:

1. every channel is shrunk to a quarter of its size (``work_scale``) with area
   averaging and normalised with :func:`hpacell.utils.intensity.to_float`;
2. nuclei (:func:`hpacell.segmentation.nuclei.segment_nuclei`): bright cores of the
   smoothed nucleus channel, split where their shape has separate lobes deeper
   than ``split_depth``, grown into the dimmer nucleus extent; nuclei under
   2,500 HPA pixels dropped;
3. cells (:func:`hpacell.segmentation.cells.segment_cells`): microtubules + ER (+ half
   of the nucleus channel), each by its own bright level, smoothed and
   thresholded low (``0.3 x Otsu``) so outlines reach into dim cytoplasm;
   a watershed seeded by the nuclei splits touching cells along dark
   valleys; cells under 5,500 HPA pixels dropped; a cell has exactly one
   nucleus and every cell has one;
4. both label images are blown up to the input size (nearest neighbour).

Units: lengths and areas are in *HPA pixels* (the pixels of a full-resolution
HPA image, about 0.08 µm), like hpacellseg's own thresholds, which it applies
unchanged to HPA images of every size (1728, 2048 and 3072 px). For images of
another magnification set ``pixel_scale`` (image pixels per HPA pixel; e.g.
0.5 for an HPA image stored at half size).

Examples
--------
>>> backend = BuiltinBackend()
>>> cells, nuclei = backend.segment(np.zeros((4, 64, 96), np.uint8))
>>> cells.shape, int(cells.max())
((64, 96), 0)
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from hpacell.segmentation.cells import cytoplasm_signal, segment_cells
from hpacell.segmentation.nuclei import segment_nuclei
from hpacell.utils.errors import InputError
from hpacell.utils.intensity import effective_bits, to_float

log = logging.getLogger(__name__)


class BuiltinBackend:
    """Classical HPA cell segmentation (see the module docs).

    Parameters
    ----------
    work_scale : float
        Fraction of the image size the work is done at (hpacellseg uses 0.25).
    pixel_scale : float
        Image pixels per HPA pixel (1.0 for HPA images of any size).
    nuclei : dict, optional
        Keyword overrides for :func:`hpacell.segmentation.nuclei.segment_nuclei`.
    cells : dict, optional
        Keyword overrides for :func:`hpacell.segmentation.cells.segment_cells`.
    signal : dict, optional
        Keyword overrides for :func:`hpacell.segmentation.cells.cytoplasm_signal`.
    """

    name = "builtin"

    def __init__(
        self,
        work_scale: float = 0.25,
        pixel_scale: float = 1.0,
        nuclei: dict | None = None,
        cells: dict | None = None,
        signal: dict | None = None,
    ) -> None:
        if not 0 < work_scale <= 1:
            raise InputError(f"work_scale must lie in (0, 1], got {work_scale}")
        if pixel_scale <= 0:
            raise InputError(f"pixel_scale must be positive, got {pixel_scale}")
        self.work_scale = float(work_scale)
        self.pixel_scale = float(pixel_scale)
        self.nuclei_options = dict(nuclei or {})
        self.cells_options = dict(cells or {})
        self.signal_options = dict(signal or {})

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(cell_labels, nuclei_labels)`` of one ``(4, H, W)`` uint8/uint16 image set.

        Labels are uint16 (uint32 beyond 65,535 cells) at the input size,
        0 = background, cells numbered ``1..n``, each nucleus with its cell's id.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[0] != 4:
            raise ValueError(f"expected a (4, H, W) image set, got shape {image.shape}")
        if image.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected uint8 or uint16 image data, got {image.dtype}")
        height, width = image.shape[1:]
        h = max(round(height * self.work_scale), 1)
        w = max(round(width * self.work_scale), 1)
        bits = effective_bits(image)
        # Area averaging in the file's own dtype, then the shared normalisation.
        red, _, blue, yellow = (
            to_float(cv2.resize(plane, (w, h), interpolation=cv2.INTER_AREA), bits) for plane in image
        )
        scale = (h / height) * self.pixel_scale  # working pixels per HPA pixel
        nuclei = segment_nuclei(blue, scale=scale, **self.nuclei_options)
        signal = cytoplasm_signal(red, yellow, blue, **self.signal_options)
        cells, nuclei = segment_cells(signal, nuclei, scale=scale, **self.cells_options)
        dtype = np.uint16 if cells.max(initial=0) <= 65535 else np.uint32
        return _upscale(cells, width, height, dtype), _upscale(nuclei, width, height, dtype)

    def segment_batch(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Segment several image sets one after the other."""
        return [self.segment(image) for image in images]


def _upscale(labels: np.ndarray, width: int, height: int, dtype: type) -> np.ndarray:
    """Nearest-neighbour resize of a label image to ``(height, width)``."""
    if labels.shape == (height, width):
        return labels.astype(dtype)
    if dtype == np.uint16:
        # OpenCV resizes uint16 but not uint32/int32 labels without loss.
        return cv2.resize(labels.astype(np.uint16), (width, height), interpolation=cv2.INTER_NEAREST)
    rows = np.minimum((np.arange(height) + 0.5) * labels.shape[0] / height, labels.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * labels.shape[1] / width, labels.shape[1] - 1).astype(int)
    return labels[np.ix_(rows, cols)].astype(dtype)
