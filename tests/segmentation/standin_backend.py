"""Small segmentation backends for the batch-job tests (registered under test-only names)."""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage as ndi

from hpacell.utils.intensity import to_float


class ThresholdBackend:
    """Cells = connected bright red regions; nuclei = bright blue inside them.

    Raises on an image whose green channel is saturated everywhere (a way for a
    test to make one image fail inside the backend).
    """

    name = "standin"

    def __init__(self, threshold: float = 0.2, sleep: float = 0.0, wrong_shape: bool = False) -> None:
        self.threshold = threshold
        self.sleep = sleep
        self.wrong_shape = wrong_shape

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        time.sleep(self.sleep)
        f = to_float(image)
        if f[1].min() >= 1.0:
            raise RuntimeError("stand-in backend refuses a saturated green channel")
        cells, _ = ndi.label(f[0] > self.threshold, output=np.int32)
        nuclei = np.where(f[2] > self.threshold, cells, 0)
        if self.wrong_shape:
            return cells[:-1], nuclei[:-1]
        return cells.astype(np.uint16), nuclei.astype(np.uint16)

    def segment_batch(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.segment(im) for im in images]


class BatchingBackend(ThresholdBackend):
    """Pretends to run on a GPU: the batch job must call segment_batch in this process."""

    uses_gpu = True
    batch_size = 2
    batches: list[int] = []  # sizes of the segment_batch calls (class level: the job builds the instance)

    def segment_batch(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        BatchingBackend.batches.append(len(images))
        return [self.segment(im) for im in images]
