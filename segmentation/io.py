"""Read HPA image sets and write/read instance masks.

An HPA *image set* is four grayscale files ``<ID>_{red,green,blue,yellow}.<ext>``
(microtubules, protein of interest, nucleus, endoplasmic reticulum). The ID is
everything before the last ``_``. Every stage of hpacell reads images through
:func:`read_image_set` and masks through :func:`read_mask`, so the file
contracts live here once.

Intensities are normalised by :mod:`hpacell.utils.intensity`, the one rule
every stage shares.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np

from hpacell.utils.errors import HpacellError
from hpacell.utils.files import atomic_write_bytes

log = logging.getLogger(__name__)

CHANNELS: tuple[str, ...] = ("red", "green", "blue", "yellow")
"""Channel order of every ``(4, H, W)`` array in hpacell."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
CELLMASK_SUFFIX = "_cellmask.png"
NUCLEIMASK_SUFFIX = "_nucleimask.png"

_FILE_RE = re.compile(
    r"^(?P<id>.+)_(?P<channel>red|green|blue|yellow)(?P<ext>\.(?:png|tif|tiff|jpg|jpeg))$", re.IGNORECASE
)


class ImageSetError(HpacellError, ValueError):
    """A problem with one input file or image set; the message names the file."""


# --------------------------------------------------------------------------- discovery
def find_image_sets(folder: str | os.PathLike, complete_only: bool = False) -> dict[str, dict[str, Path]]:
    """Find the image sets in a folder.

    Parameters
    ----------
    folder : path
        Folder holding ``<ID>_<channel>.<ext>`` files (not searched recursively).
    complete_only : bool
        Drop sets that lack one of the four channels (they are kept by default so
        that reading them raises a clear error naming the missing file).

    Returns
    -------
    dict
        ``{ID: {channel: path}}`` sorted by ID.

    Examples
    --------
    >>> sets = find_image_sets("images")  # doctest: +SKIP
    >>> sorted(sets["abc"])  # doctest: +SKIP
    ['blue', 'green', 'red', 'yellow']
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder does not exist")
    sets: dict[str, dict[str, Path]] = {}
    for entry in os.scandir(folder):
        m = match_channel_file(entry.name)
        if not m or not entry.is_file():
            continue
        image_id, channel = m
        files = sets.setdefault(image_id, {})
        if channel in files:
            # Keep one file per channel (by extension preference) so one odd image never aborts a batch.
            keep = min(
                files[channel], Path(entry.path), key=lambda p: IMAGE_EXTENSIONS.index(p.suffix.lower())
            )
            log.warning(
                "image %r has two %s files (%s, %s): using %s",
                image_id,
                channel,
                files[channel].name,
                entry.name,
                keep.name,
            )
            files[channel] = keep
            continue
        files[channel] = Path(entry.path)
    if complete_only:
        sets = {k: v for k, v in sets.items() if len(v) == len(CHANNELS)}
    return dict(sorted(sets.items()))


def match_channel_file(name: str) -> tuple[str, str] | None:
    """``(ID, channel)`` of a channel file name, or ``None``: the one matcher every stage uses.

    The channel and the extension are matched case-insensitively; the ID keeps its case.

    Examples
    --------
    >>> match_channel_file("UPPER_RED.PNG")
    ('UPPER', 'red')
    >>> match_channel_file("abc_cellmask.png") is None
    True
    """
    m = _FILE_RE.match(name)
    return (m["id"], m["channel"].lower()) if m else None


def channel_paths(folder: str | os.PathLike, image_id: str) -> dict[str, Path]:
    """Paths of the four channel files of ``image_id`` in ``folder``.

    The same files :func:`find_image_sets` finds (any case of channel and
    extension); the common lower-case names are tried first, without listing
    the folder.

    Raises
    ------
    ImageSetError
        If a channel file is missing (the message names the expected file).
    """
    folder = Path(folder)
    paths: dict[str, Path] = {}
    for ch in CHANNELS:
        found = [folder / f"{image_id}_{ch}{ext}" for ext in IMAGE_EXTENSIONS]
        found = [p for p in found if p.is_file()]
        if found:
            paths[ch] = found[0]
    if len(paths) < len(CHANNELS) and folder.is_dir():
        for entry in os.scandir(folder):
            m = match_channel_file(entry.name)
            if m and m[0] == image_id and m[1] not in paths and entry.is_file():
                paths[m[1]] = Path(entry.path)
    for ch in CHANNELS:
        if ch not in paths:
            raise ImageSetError(f"{folder / (image_id + '_' + ch + '.png')}: missing {ch} channel file")
    return {ch: paths[ch] for ch in CHANNELS}


# --------------------------------------------------------------------------- reading
def read_channel(path: str | os.PathLike) -> np.ndarray:
    """Read one grayscale channel file as a 2-D uint8 or uint16 array.

    Raises
    ------
    ImageSetError
        If the file is missing, unreadable/corrupt, not 2-D, or of another dtype.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageSetError(f"{path}: file not found")
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ImageSetError(f"{path}: corrupt or unreadable image file")
    if img.ndim == 3 and img.shape[2] in (3, 4):
        # A colour-typed file whose channels are all equal is still grayscale.
        first = img[..., 0]
        if all(np.array_equal(first, img[..., i]) for i in range(1, 3)):
            img = np.ascontiguousarray(first)
    if img.ndim != 2:
        raise ImageSetError(f"{path}: expected a 2-D grayscale image, got shape {img.shape}")
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageSetError(f"{path}: unsupported dtype {img.dtype} (expected uint8 or uint16)")
    return img


def read_image_set(source: str | os.PathLike | dict[str, Path], image_id: str | None = None) -> np.ndarray:
    """Read one image set as a ``(4, H, W)`` array, channels red, green, blue, yellow.

    Parameters
    ----------
    source : path or dict
        A folder (then ``image_id`` is required) or a ``{channel: path}`` dict as
        returned by :func:`find_image_sets`.
    image_id : str, optional
        The image ID when ``source`` is a folder.

    Returns
    -------
    numpy.ndarray
        ``(4, H, W)``, dtype of the files (uint8 or uint16). Mixed dtypes are
        promoted to uint16 (8-bit channels are scaled by 257).

    Raises
    ------
    ImageSetError
        For a missing channel, a corrupt file, a non-2-D file, or channels of
        different shapes; the message names the offending file.
    """
    if isinstance(source, dict):
        missing = [ch for ch in CHANNELS if ch not in source]
        if missing:
            some = next(iter(source.values()))
            stem = some.name.rsplit("_", 1)[0]
            raise ImageSetError(
                f"{some.parent / (stem + '_' + missing[0] + '.png')}: missing {missing[0]} channel file"
            )
        paths = {ch: Path(source[ch]) for ch in CHANNELS}
    else:
        if image_id is None:
            raise TypeError("image_id is required when source is a folder")
        paths = channel_paths(source, image_id)
    planes = [read_channel(paths[ch]) for ch in CHANNELS]
    shape = planes[0].shape
    for ch, plane in zip(CHANNELS, planes, strict=True):
        if plane.shape != shape:
            raise ImageSetError(
                f"{paths[ch]}: {ch} channel has shape {plane.shape}, but {paths['red'].name} has {shape}"
            )
    dtypes = {p.dtype for p in planes}
    if len(dtypes) > 1:
        planes = [p.astype(np.uint16) * 257 if p.dtype == np.uint8 else p for p in planes]
    return np.stack(planes)


# --------------------------------------------------------------------------- masks
def mask_paths(masks_dir: str | os.PathLike, image_id: str) -> tuple[Path, Path]:
    """``(cellmask, nucleimask)`` paths of an image in a masks folder."""
    d = Path(masks_dir)
    return d / f"{image_id}{CELLMASK_SUFFIX}", d / f"{image_id}{NUCLEIMASK_SUFFIX}"


def _png_bit_depth(path: Path) -> int | None:
    """The bit depth in a PNG file's header (``None`` for a file that is not a PNG)."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        return None
    return head[24]


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read an instance mask PNG (0 = background, 1..N = cells) as a 2-D unsigned integer array.

    8- and 16-bit PNGs are accepted (the HPA reference masks are 8-bit);
    the dtype of the file is kept.

    Raises
    ------
    ImageSetError
        The file is missing or unreadable, not 2-D, a 1/2/4-bit PNG (a binary
        picture, not labelled cells), or holds non-integer or negative values;
        the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageSetError(f"{path}: mask file not found")
    depth = _png_bit_depth(path)
    if depth is not None and depth < 8:
        raise ImageSetError(
            f"{path}: a {depth}-bit PNG is a binary picture, not an instance mask "
            "(expected an 8- or 16-bit PNG with 0 = background, 1..N = cells)"
        )
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageSetError(f"{path}: corrupt or unreadable mask file")
    if img.ndim == 3:
        if img.shape[2] >= 3 and np.array_equal(img[..., 0], img[..., 1]):
            img = np.ascontiguousarray(img[..., 0])
        else:
            raise ImageSetError(f"{path}: expected a 2-D label mask, got shape {img.shape}")
    if not np.issubdtype(img.dtype, np.integer):
        raise ImageSetError(f"{path}: mask must hold integer cell ids, got {img.dtype} values")
    if img.dtype.kind == "i":
        if img.size and img.min() < 0:
            raise ImageSetError(f"{path}: mask ids must be >= 0, found {int(img.min())}")
        img = img.astype(np.uint16 if not img.size or img.max() < 65536 else np.uint32)
    return img


def write_mask(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write an instance mask as a uint16 PNG, atomically (temp name + rename).

    Raises
    ------
    ValueError
        If a label exceeds 65535 or the array is not 2-D.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {labels.shape}")
    if labels.size and (labels.max() > 65535 or labels.min() < 0):
        raise ValueError(f"{path}: mask labels must lie in 0..65535")
    ok, buf = cv2.imencode(".png", labels.astype(np.uint16), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    return atomic_write_bytes(path, buf.tobytes())


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a 2-D (gray) or ``(H, W, 3)`` RGB uint8/uint16 image as PNG, atomically."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., ::-1]  # RGB -> BGR for OpenCV
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    return atomic_write_bytes(path, buf.tobytes())
