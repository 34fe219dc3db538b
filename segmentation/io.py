"""Read HPA image sets and write/read instance masks.

An HPA *image set* is four grayscale files ``<ID>_{red,green,blue,yellow}.<ext>``
(microtubules, protein of interest, nucleus, endoplasmic reticulum). The ID is
everything before the last ``_``. Every stage of hpacell reads images through
:func:`read_image_set` and masks through :func:`read_mask`, so the file
contracts live here once.

Intensity normalisation (shared by every stage)
------------------------------------------------
HPA images come as 8-bit, or as 16-bit files of which often only the low
12 bits are used. :func:`effective_bits` decides the bit depth of an image set
(8 for uint8; for uint16 the smallest of 12 or 16 bits that holds the maximum
value), :func:`to_float` maps it to ``[0, 1]`` by dividing by ``2**bits - 1``
and :func:`to_uint8` rounds ``to_float * 255``. The decision is made once per
image set (all four channels together), so relative intensities between the
channels are preserved.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

CHANNELS: tuple[str, ...] = ("red", "green", "blue", "yellow")
"""Channel order of every ``(4, H, W)`` array in hpacell."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
CELLMASK_SUFFIX = "_cellmask.png"
NUCLEIMASK_SUFFIX = "_nucleimask.png"

_FILE_RE = re.compile(
    r"^(?P<id>.+)_(?P<channel>red|green|blue|yellow)(?P<ext>\.(?:png|tif|tiff|jpg|jpeg))$", re.IGNORECASE
)


_UMASK = os.umask(0)
os.umask(_UMASK)


class ImageSetError(ValueError):
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
        m = _FILE_RE.match(entry.name)
        if not m or not entry.is_file():
            continue
        channel = m["channel"].lower()
        files = sets.setdefault(m["id"], {})
        if channel in files:
            # Keep one file per channel (by extension preference) so one odd image never aborts a batch.
            keep = min(
                files[channel], Path(entry.path), key=lambda p: IMAGE_EXTENSIONS.index(p.suffix.lower())
            )
            log.warning(
                "image %r has two %s files (%s, %s): using %s",
                m["id"],
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


def channel_paths(folder: str | os.PathLike, image_id: str) -> dict[str, Path]:
    """Paths of the four channel files of ``image_id`` in ``folder``.

    Raises
    ------
    ImageSetError
        If a channel file is missing (the message names the expected file).
    """
    folder = Path(folder)
    paths = {}
    for ch in CHANNELS:
        found = [folder / f"{image_id}_{ch}{ext}" for ext in IMAGE_EXTENSIONS]
        found = [p for p in found if p.is_file()]
        if not found:
            raise ImageSetError(f"{folder / (image_id + '_' + ch + '.png')}: missing {ch} channel file")
        paths[ch] = found[0]
    return paths


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


# --------------------------------------------------------------------------- normalisation
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


# --------------------------------------------------------------------------- masks
def mask_paths(masks_dir: str | os.PathLike, image_id: str) -> tuple[Path, Path]:
    """``(cellmask, nucleimask)`` paths of an image in a masks folder."""
    d = Path(masks_dir)
    return d / f"{image_id}{CELLMASK_SUFFIX}", d / f"{image_id}{NUCLEIMASK_SUFFIX}"


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read an instance mask PNG (0 = background) as a 2-D integer array.

    8- and 16-bit PNGs are accepted (the HPA reference masks are 8-bit);
    the dtype of the file is kept.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageSetError(f"{path}: mask file not found")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageSetError(f"{path}: corrupt or unreadable mask file")
    if img.ndim == 3:
        if img.shape[2] >= 3 and np.array_equal(img[..., 0], img[..., 1]):
            img = np.ascontiguousarray(img[..., 0])
        else:
            raise ImageSetError(f"{path}: expected a 2-D label mask, got shape {img.shape}")
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


# --------------------------------------------------------------------------- atomic files
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename.

    A process killed mid-write leaves at most a ``.tmp`` file, never a half
    ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_path(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(tmp, final)`` paths for a writer that needs a file name (e.g. Parquet).

    Write to ``tmp`` then call ``os.replace(tmp, final)``. The temp name keeps
    the extension so libraries that dispatch on it still work.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp{final.suffix}")
    return tmp, final


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager: a temp path beside ``path``, renamed to ``path`` when the block succeeds.

    On an exception the temp file is removed and ``path`` is untouched. The
    temp name keeps the extension, for writers that dispatch on it.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "table.csv"
    >>> with atomic_file(target) as tmp:
    ...     _ = tmp.write_text("a,b\\n")
    >>> target.read_text()
    'a,b\\n'
    """
    tmp, final = atomic_path(path)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def clean_stale_temps(folder: str | os.PathLike, patterns: Iterable[str] = (".*.tmp", ".*.tmp.*")) -> int:
    """Remove temp files left by killed runs in ``folder``; returns how many."""
    n = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for pat in patterns:
        for p in folder.glob(pat):
            p.unlink(missing_ok=True)
            n += 1
    return n
