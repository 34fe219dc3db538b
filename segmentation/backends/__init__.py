"""Segmentation backends, chosen by name.

A backend turns one image set into instance masks::

    cells, nuclei = backend.segment(image)   # image: (4, H, W) uint8/uint16, channels r, g, b, y

``cells`` and ``nuclei`` are ``(H, W)`` integer label images at full resolution
(uint16 or uint32, 0 = background, a nucleus carries its cell's id).
``segment_batch`` takes a list of images (backends on a GPU batch them; the
default loops). Backends are imported lazily, so optional dependencies of one
(e.g. the hpacellseg models) never affect the others.

Examples
--------
>>> sorted(BACKENDS)
['builtin', 'hpacellseg']
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hpacell.utils.errors import InputError


@runtime_checkable
class Backend(Protocol):
    """What every segmentation backend provides."""

    name: str

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(cell_labels, nuclei_labels)`` of one ``(4, H, W)`` image set."""
        ...

    def segment_batch(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Segment several image sets (same contract as :meth:`segment`)."""
        ...


BACKENDS: dict[str, str] = {
    "builtin": "hpacell.segmentation.backends.builtin:BuiltinBackend",
    "hpacellseg": "hpacell.segmentation.backends.hpacellseg:HpaCellSegBackend",
}


def get_backend(name: str, **options: Any) -> Backend:
    """Instantiate the backend called ``name`` with its options.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).
    """
    try:
        target = BACKENDS[name]
    except KeyError:
        raise InputError(f"unknown segmentation backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(**options)
