"""Full-image COCO run-length encoding of single cells, fast, from each cell's bounding box.

The Kaggle 2021 submission stores every cell as ``base64(zlib(counts))`` where
``counts`` is the compressed COCO RLE string of the *full-image* binary mask
(pycocotools' ``mask.encode`` of a Fortran-ordered ``(H, W)`` uint8 array).

Encoding a full 2048 x 2048 mask per cell costs ~10 ms. Here the runs are
derived from the cell's bounding box only: in column-major (Fortran) order
pixel ``(r, c)`` sits at ``c * H + r``; columns outside the box are background,
so every run boundary lies inside the box. :func:`cell_runs` finds the
boundaries in the crop with NumPy, offsets them to full-image positions, merges
a run that wraps from the bottom of one column to the top of the next (only
possible for a box spanning the full height) and takes differences. The runs
are turned into COCO's compressed text by pycocotools (``frPyObjects`` on the
uncompressed counts list), so the bytes equal ``mask.encode`` on the full mask.

The zlib level is 9 (``Z_BEST_COMPRESSION``), the level of the competition's
sample submission (its streams start with ``78 DA``).
"""

from __future__ import annotations

import base64
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as coco_mask
from scipy import ndimage

ZLIB_LEVEL = 9
"""zlib level of the encoded masks (the sample submission's: ``Z_BEST_COMPRESSION``)."""


def cell_runs(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> np.ndarray:
    """Uncompressed COCO counts of a full-image mask given the cell's crop.

    Parameters
    ----------
    crop : (h, w) bool array
        The cell's pixels inside its bounding box ``[y0:y0+h, x0:x0+w]``.
    x0, y0 : int
        Top-left corner of the box in the full image.
    height, width : int
        Full image size.

    Returns
    -------
    np.ndarray
        Run lengths (int64) starting with a background run (possibly 0), in
        column-major order, exactly as pycocotools' ``rleEncode``.

    Examples
    --------
    >>> cell_runs(np.array([[True]]), x0=1, y0=0, height=2, width=2).tolist()
    [2, 1, 1]
    """
    crop = np.asarray(crop, dtype=bool)
    h, w = crop.shape
    if y0 < 0 or x0 < 0 or y0 + h > height or x0 + w > width:
        raise ValueError(f"box {x0},{y0},{x0 + w},{y0 + h} outside a {width}x{height} image")
    total = height * width
    padded = np.zeros((h + 2, w), bool)
    padded[1:-1] = crop
    # (h+1, w): True where pixel (i, j) differs from (i-1, j): a run starts or ends (exclusive) at row i.
    # flatnonzero + divmod: several times faster than 2-D np.nonzero.
    rows, cols = np.divmod(np.flatnonzero(padded[1:] != padded[:-1]), w)
    bounds = np.sort((cols.astype(np.int64) + x0) * height + (rows + y0))
    if bounds.size > 2:
        # A run ending at the bottom of a column and one starting at the top of the next are one run:
        # the two boundaries coincide; drop both.
        dup = np.flatnonzero(bounds[1:] == bounds[:-1])
        if dup.size:
            bounds = np.delete(bounds, np.concatenate((dup, dup + 1)))
    edges = np.concatenate(([0], bounds, [total]))
    counts = np.diff(edges)
    if bounds.size and bounds[-1] == total:
        counts = counts[:-1]  # the mask ends with foreground: no trailing background run
    return counts


def runs_to_string(counts: np.ndarray, height: int, width: int) -> bytes:
    """COCO's compressed RLE text of uncompressed ``counts`` (via pycocotools)."""
    rle = coco_mask.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]}, height, width)
    return rle["counts"]


def encode_counts(counts: bytes, level: int = ZLIB_LEVEL) -> str:
    """``base64(zlib(counts))`` as text, the submission's mask field."""
    return base64.b64encode(zlib.compress(counts, level)).decode("ascii")


def decode_counts(text: str) -> bytes:
    """Inverse of :func:`encode_counts`: the COCO compressed counts bytes.

    Raises
    ------
    ValueError
        If ``text`` is not valid base64 of a zlib stream.
    """
    try:
        return zlib.decompress(base64.b64decode(text, validate=True))
    except (ValueError, zlib.error) as e:
        raise ValueError(f"not a base64/zlib mask string ({e}): {text[:40]!r}") from None


def encode_cell(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> str:
    """Submission mask string of one cell from its bbox crop.

    Examples
    --------
    >>> s = encode_cell(np.ones((2, 2), bool), 0, 0, 4, 4)
    >>> int(decode_mask(s, 4, 4).sum())
    4
    """
    return encode_counts(runs_to_string(cell_runs(crop, x0, y0, height, width), height, width))


def encode_mask_cells(mask: np.ndarray, cells: list[int] | None = None) -> dict[int, str]:
    """Submission mask strings of every cell (or of ``cells``) of an instance mask.

    Each cell is encoded once from its bounding box (``scipy.ndimage.find_objects``).
    Cells listed in ``cells`` but absent from the mask raise ``KeyError``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    height, width = mask.shape
    if mask.dtype.kind not in "iu":
        raise ValueError(f"mask must be an integer label image, got {mask.dtype}")
    if mask.dtype.itemsize > 4:
        mask = mask.astype(np.int32)  # find_objects wants a native int type; labels fit 32 bits
    slices = ndimage.find_objects(mask) if mask.size else []
    wanted = range(1, len(slices) + 1) if cells is None else cells
    out: dict[int, str] = {}
    for cell in wanted:
        sl = slices[cell - 1] if 0 < cell <= len(slices) else None
        if sl is None:
            if cells is None:
                continue
            raise KeyError(f"cell {cell} not found in the mask")
        crop = mask[sl] == cell
        out[int(cell)] = encode_cell(crop, sl[1].start, sl[0].start, height, width)
    return out


def decode_mask(text: str, height: int, width: int) -> np.ndarray:
    """Full ``(height, width)`` uint8 mask of a submission mask string (pycocotools decode)."""
    with warnings.catch_warnings():  # pycocotools' NumPy-2 copy-keyword deprecation, harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode({"size": [height, width], "counts": decode_counts(text)})


def to_coco_rle(text: str, height: int, width: int) -> dict:
    """The pycocotools RLE dict (compressed counts) of a submission mask string."""
    return {"size": [height, width], "counts": decode_counts(text)}


# --------------------------------------------------------------------------- checking and boxes
@dataclass(frozen=True)
class MaskInfo:
    """A checked mask string: COCO compressed counts, pixel area and enclosing box.

    ``box`` is ``(ymin, xmin, ymax + 1, xmax + 1)`` in pixels (last row/column
    index + 1, as the organisers' evaluator builds boxes), ``None`` for an empty mask.
    """

    counts: bytes
    area: int
    box: tuple[int, int, int, int] | None


_MAX_CHARS = 7  # 35 bits per number: far above any run of a real image, no int64 overflow


def parse_counts(counts: bytes) -> np.ndarray:
    """Run lengths (int64) of COCO compressed RLE text, as pycocotools' ``rleFrString`` reads it.

    Each number is 6-bit characters (offset 48): 5 value bits, bit 0x20 = "more
    follows", bit 0x10 of the last one the sign; from the fourth number on each
    is a difference to the number two places before.

    Raises
    ------
    ValueError
        For a character outside ``0``..``o``, an unterminated or over-long number,
        or a negative run.

    Examples
    --------
    >>> parse_counts(b"12").tolist()
    [1, 2]
    """
    c = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if not c.size:
        raise ValueError("empty RLE counts")
    if c.min() < 0 or c.max() > 63:
        raise ValueError("RLE counts hold a character outside '0'..'o'")
    more = (c & 0x20) != 0
    if more[-1]:
        raise ValueError("RLE counts end inside a number")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    nchar = ends - starts + 1
    if nchar.max() > _MAX_CHARS:
        raise ValueError("RLE counts hold a number too large for any image")
    pos = np.arange(c.size) - np.repeat(starts, nchar)
    x = np.add.reduceat((c & 0x1F) << (5 * pos), starts)
    neg = (c[ends] & 0x10) != 0
    x[neg] -= np.left_shift(1, 5 * nchar[neg])
    runs = x.copy()
    runs[1::2] = np.cumsum(x[1::2])  # differences to the run two before, from the fourth on
    runs[2::2] = np.cumsum(x[2::2])
    if runs.min() < 0:
        raise ValueError("RLE counts hold a negative run")
    return runs


def mask_info(text: str, height: int, width: int) -> MaskInfo:
    """Check a submission mask string for a ``height x width`` image; its counts, area and box.

    Cheap (no full-image decode): the runs must add up to ``height * width``,
    which also keeps pycocotools from reading past a mask made for another size.

    Raises
    ------
    ValueError
        If the text is not base64/zlib, the RLE is malformed or it covers a
        different number of pixels.

    Examples
    --------
    >>> m = np.zeros((4, 5), bool); m[1:3, 2] = True
    >>> mask_info(encode_mask_cells(m.astype(np.uint8))[1], 4, 5).box
    (1, 2, 3, 3)
    """
    counts = decode_counts(text)
    runs = parse_counts(counts)
    total = int(runs.sum())
    if total != height * width:
        raise ValueError(
            f"mask covers {total} pixels, not ImageWidth x ImageHeight = {width} x {height} "
            f"= {height * width}"
        )
    ends = np.cumsum(runs)
    fg = runs[1::2]
    keep = fg > 0
    if not keep.any():
        return MaskInfo(counts, 0, None)
    first = (ends[0::2][: fg.size])[keep]  # first pixel of each foreground run (column-major)
    last = ends[1::2][keep] - 1
    col0, row0 = np.divmod(first, height)
    col1, row1 = np.divmod(last, height)
    if (col1 > col0).any():  # a run wraps from the bottom of a column to the top of the next
        ymin, ymax = 0, height - 1
    else:
        ymin, ymax = int(row0.min()), int(row1.max())
    return MaskInfo(counts, int(fg.sum()), (ymin, int(col0.min()), ymax + 1, int(col1.max()) + 1))
