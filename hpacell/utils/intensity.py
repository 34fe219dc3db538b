"""The one intensity normalisation shared by every stage.

HPA images come as 8-bit, or as 16-bit files of which often only the low
12 bits are used. :func:`effective_bits` decides the bit depth of an image set
(8 for uint8; for uint16 the smallest of 12 or 16 bits that holds the maximum
value), :func:`to_float` maps it to ``[0, 1]`` by dividing by ``2**bits - 1``
and :func:`to_uint8` rounds ``to_float * 255``. The decision is made once per
image set (all four channels together), so relative intensities between the
channels are preserved.
"""

from __future__ import annotations

import numpy as np

__all__ = ["effective_bits", "to_float", "to_uint8"]


def effective_bits(image: np.ndarray) -> int:
    """Bit depth used by an image: 8 for uint8; 12 or 16 for uint16 (by its maximum).

    Examples
    --------
    >>> effective_bits(np.array([[0, 4095]], dtype=np.uint16))
    12
    >>> effective_bits(np.array([[0, 4096]], dtype=np.uint16))
    16
    """
    if image.dtype == np.uint8:
        return 8
    if image.dtype == np.uint16:
        return 12 if int(image.max(initial=0)) < 4096 else 16
    raise TypeError(f"unsupported dtype {image.dtype}")


def to_float(image: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Scale an 8/16-bit image to float32 in ``[0, 1]`` (see module docs).

    Examples
    --------
    >>> to_float(np.array([[0, 4095]], dtype=np.uint16)).tolist()
    [[0.0, 1.0]]
    """
    if image.dtype in (np.float32, np.float64):
        return image.astype(np.float32, copy=False)
    bits = effective_bits(image) if bits is None else bits
    out = image.astype(np.float32) * np.float32(1.0 / (2**bits - 1))
    np.clip(out, 0.0, 1.0, out=out)
    return out


def to_uint8(image: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Map an 8/16-bit image to uint8 with the shared normalisation.

    uint8 input is returned unchanged (no copy).

    Examples
    --------
    >>> to_uint8(np.array([[0, 4095]], dtype=np.uint16)).tolist()
    [[0, 255]]
    """
    if image.dtype == np.uint8:
        return image
    bits = effective_bits(image) if bits is None else bits
    if bits == 16:
        # (x + 128) // 257 is round(x * 255 / 65535) without a float temporary.
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.rint(to_float(image, bits) * 255.0).astype(np.uint8)
