"""The ``hpacellseg`` backend: the published HPA DPN-UNet models, driven by our own code.

The HPA Cell Segmentation models (Zenodo record 4665863) are whole pickled torch
modules. Their own package breaks on current torch / scikit-image and pushes
images through one at a time, so this adapter only *loads* the two modules from
paths the user gives and does the rest itself:

1. preprocessing as the models expect: channels to ``[0, 1]`` (the shared
   :func:`hpacell.utils.intensity.to_float` rule), resized by ``scale_factor`` (0.25),
   reflect-padded to a multiple of 32, normalised per channel; the nuclei model
   sees the blue plane copied into three channels, the cell model the stack
   (red, yellow, blue);
2. a batched forward pass on the device (``torch.inference_mode``, optional
   autocast on CUDA); softmax over the 3 output channels, channel 1 = touching
   borders, channel 2 = foreground;
3. the maps are cropped, resized back to full resolution with OpenCV's
   ``(width, height)`` order (right for non-square images) and labelled by
   :func:`label_cells` (seeded watershed of cells from nuclei; scikit-image).

Nothing is downloaded: a missing model file is an error that says where to get it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.segmentation import relabel_sequential, watershed

from hpacell.utils.errors import HpacellError, InputError
from hpacell.utils.intensity import to_float

log = logging.getLogger(__name__)

NUCLEI_ENV = "HPACELLSEG_NUCLEI_MODEL"
CELL_ENV = "HPACELLSEG_CELL_MODEL"
ZENODO = "https://zenodo.org/record/4665863"
NUCLEI_FILE = "dpn_unet_nuclei_v1.pth"
CELL_FILE = "dpn_unet_cell_3ch_v1.pth"

# Per-channel normalisation the models were trained with (see the module docs).
MEAN = np.array([124.0, 117.0, 104.0], np.float32) / 255.0
STD = np.float32(1.0 / (0.0167 * 255.0))

# Thresholds of the labelling, on probabilities in [0, 1] (full-resolution pixels).
NUCLEUS_FOREGROUND = 0.4
NUCLEUS_SEED = 0.15
BORDER = 0.05
CELL_MIN_THRESHOLD = 0.22


class ModelFileError(HpacellError, FileNotFoundError):
    """A model file is missing or is not a pickled torch module."""


# --------------------------------------------------------------------------- model loading
def _missing_message(kind: str, option: str, env: str, filename: str, path: Any) -> str:
    where = f"{path}: file not found. " if path else f"no {kind} model given. "
    return (
        f"{where}The hpacellseg backend needs the HPA {kind} model file {filename!r}: download it yourself "
        f"from Zenodo record 4665863 ({ZENODO}) and pass its path with {option} (or set ${env}). "
        "hpacell never downloads weights. Unpickling the model also needs the `pytorch_zoo` package "
        "importable (a dependency of the HPA-Cell-Segmentation project)."
    )


def resolve_model_path(path: str | os.PathLike | None, kind: str) -> Path:
    """The model file for ``kind`` ("nuclei" or "cell"): ``path`` or its environment variable.

    Raises
    ------
    ModelFileError
        When no path is given or the file does not exist (the message says where to get it).
    """
    env, option, filename = (
        (NUCLEI_ENV, "--nuclei-model", NUCLEI_FILE)
        if kind == "nuclei"
        else (CELL_ENV, "--cell-model", CELL_FILE)
    )
    path = path or os.environ.get(env) or None
    if path is None or not Path(path).is_file():
        raise ModelFileError(_missing_message(kind, option, env, filename, path))
    return Path(path)


def load_model(path: str | os.PathLike, device: Any) -> Any:
    """Unpickle a whole torch module from a user-given file, unwrap ``DataParallel``, eval mode.

    Uses ``torch.load(weights_only=False)``: this executes code from the pickle,
    which is why only paths the user passed are ever loaded (and it is logged).
    """
    import torch

    path = Path(path)
    log.info("unpickling a full torch module from %s (weights_only=False; only load files you trust)", path)
    try:
        obj = torch.load(path, map_location=device, weights_only=False)
    except ModuleNotFoundError as e:
        raise ModelFileError(
            f"{path}: unpickling needs the module {e.name!r} importable ({e}); the HPA models need the "
            "`pytorch_zoo` package of the HPA-Cell-Segmentation project"
        ) from None
    except Exception as e:  # noqa: BLE001 - any unpickling error means a bad file
        raise ModelFileError(
            f"{path}: cannot load a torch module from this file ({type(e).__name__}: {e})"
        ) from e
    if isinstance(obj, torch.nn.DataParallel):
        obj = obj.module
    if not isinstance(obj, torch.nn.Module):
        raise ModelFileError(
            f"{path}: expected a whole pickled torch module (as published on Zenodo record 4665863), "
            f"got {type(obj).__name__}"
        )
    return obj.to(device).eval()


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when available else ``"cpu"``; other values pass through."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return device


# --------------------------------------------------------------------------- preprocessing
def model_inputs(image: np.ndarray, scale_factor: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """``(nuclei_input, cell_input)``: two ``(3, h, w)`` float32 arrays at ``scale_factor``, normalised.

    ``image`` is a ``(4, H, W)`` set (red, green, blue, yellow). No padding here.

    Examples
    --------
    >>> nuc, cell = model_inputs(np.zeros((4, 96, 128), np.uint8))
    >>> nuc.shape, cell.shape
    ((3, 24, 32), (3, 24, 32))
    """
    f = to_float(image)
    h, w = f.shape[1:]
    size = (max(1, round(w * scale_factor)), max(1, round(h * scale_factor)))  # OpenCV: (width, height)
    red, _, blue, yellow = (cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in f)
    nuclei = np.stack([blue, blue, blue])
    cell = np.stack([red, yellow, blue])
    norm = (MEAN[:, None, None], STD)
    return (nuclei - norm[0]) / norm[1], (cell - norm[0]) / norm[1]


def pad_batch(arrays: list[np.ndarray], multiple: int = 32) -> np.ndarray:
    """Reflect-pad ``(C, h, w)`` arrays (bottom/right) to one common size, a multiple of ``multiple``.

    Examples
    --------
    >>> pad_batch([np.zeros((3, 24, 32)), np.zeros((3, 40, 20))]).shape
    (2, 3, 64, 32)
    """
    h = max(a.shape[1] for a in arrays)
    w = max(a.shape[2] for a in arrays)
    h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    out = []
    for a in arrays:
        pads = ((0, 0), (0, h - a.shape[1]), (0, w - a.shape[2]))
        mode = "reflect" if min(a.shape[1:]) > 1 else "edge"
        out.append(np.pad(a, pads, mode=mode))
    return np.stack(out).astype(np.float32, copy=False)


def full_resolution(prob: np.ndarray, scaled: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Crop a ``(C, h_pad, w_pad)`` probability map to ``scaled`` (h, w) and resize to ``shape`` (H, W).

    Examples
    --------
    >>> full_resolution(np.zeros((2, 32, 32), np.float32), (24, 32), (96, 128)).shape
    (2, 96, 128)
    """
    h, w = scaled
    H, W = shape
    return np.stack(
        [cv2.resize(np.ascontiguousarray(p[:h, :w]), (W, H), interpolation=cv2.INTER_LINEAR) for p in prob]
    )


# --------------------------------------------------------------------------- labelling
def _fill_label_holes(labels: np.ndarray) -> np.ndarray:
    """Fill holes in the foreground; each hole pixel takes the label of its nearest labelled pixel."""
    holes = ndi.binary_fill_holes(labels > 0) & (labels == 0)
    if not holes.any():
        return labels
    _, (iy, ix) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    out = labels.copy()
    out[holes] = labels[iy[holes], ix[holes]]
    return out


def _levels(prob: np.ndarray) -> np.ndarray:
    """Probabilities quantised to 256 levels (as the published uint8 maps): flat plateaus stay flat,
    so watershed splits them by distance from the seeds, not by float noise."""
    return np.rint(prob * 255).astype(np.int16)


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Zero the labelled regions of fewer than ``min_size`` pixels."""
    if min_size <= 0 or not labels.any():
        return labels
    areas = np.bincount(labels.ravel())
    small = areas < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)


def _fill_small_holes(mask: np.ndarray, max_hole: int) -> np.ndarray:
    """``mask`` with its holes of at most ``max_hole`` pixels filled."""
    holes, n = ndi.label(ndi.binary_fill_holes(mask) & ~mask)
    if n == 0:
        return mask
    small = np.bincount(holes.ravel()) <= max_hole
    small[0] = False
    return mask | small[holes]


def label_cells(
    nuclei_fg: np.ndarray,
    nuclei_border: np.ndarray,
    cell_fg: np.ndarray,
    cell_border: np.ndarray,
    min_nucleus_size: int = 2500,
    min_cell_size: int = 5500,
    closing_radius: int = 6,
) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels ``(cells, nuclei)`` from the models' full-resolution probability maps.

    Nuclei: foreground > 0.4, split by seeds where foreground > 0.15 away from
    borders (> 0.05 in either model's border map), nuclei under
    ``min_nucleus_size`` px dropped. Cells: foreground above
    ``max(0.22, 0.5 * Otsu)`` outside the border zone, grown from the nuclei by
    watershed, cells under ``min_cell_size`` px dropped, closed with a disk of
    ``closing_radius`` and hole-filled, then a second watershed grows them into
    the border zone. Each nucleus carries its cell's id; ids are 1..N.

    Returns
    -------
    tuple of numpy.ndarray
        ``(cells, nuclei)``, uint32, the shape of the inputs.
    """
    border_any = (nuclei_border + cell_border) > BORDER
    # --- nuclei: seeded watershed inside the foreground
    nuc_mask = _fill_small_holes(nuclei_fg > NUCLEUS_FOREGROUND, 1000)
    seeds = (nuclei_fg > NUCLEUS_SEED) & ~border_any & nuc_mask
    markers, _ = ndi.label(seeds, output=np.int32)
    nuclei = watershed(-_levels(nuclei_fg), markers, mask=nuc_mask)
    nuclei = _drop_small(nuclei, min_nucleus_size)
    if not nuclei.any():
        empty = np.zeros(nuclei_fg.shape, np.uint32)
        return empty, empty.copy()

    # --- cells: grow from nuclei in the foreground, away from borders
    otsu = threshold_otsu(cell_fg) if np.ptp(cell_fg) > 0 else 1.0
    threshold = max(CELL_MIN_THRESHOLD, 0.5 * float(otsu))
    region = (cell_fg > threshold) & (cell_border <= BORDER)
    elevation = -_levels(np.maximum(cell_fg, threshold))
    cells = watershed(elevation, nuclei, mask=region | (nuclei > 0))
    cells = _drop_small(cells, min_cell_size)
    if closing_radius > 0 and cells.any():
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * closing_radius + 1,) * 2)
        closed = cv2.morphologyEx((cells > 0).astype(np.uint8), cv2.MORPH_CLOSE, kernel) > 0
        cells = watershed(elevation, cells, mask=closed)  # closed pixels join their neighbouring cell
    cells = _fill_label_holes(cells)
    # --- second watershed: grow into the border zone between touching cells
    cells = watershed(elevation, cells, mask=(cells > 0) | (cell_border > BORDER))
    cells = _fill_label_holes(cells)
    cells = _drop_small(cells, min_cell_size)
    cells, _, _ = relabel_sequential(cells.astype(np.uint32))

    # --- nuclei keep their cell's id
    nuc = _drop_small(ndi.label((nuclei > 0) & (cells > 0))[0], min_nucleus_size) > 0
    nuclei_out = np.where(nuc, cells, 0).astype(np.uint32)
    return cells.astype(np.uint32), nuclei_out


def maps_to_labels(
    maps: np.ndarray, shape: tuple[int, int], **label_options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """``(cells, nuclei)`` from model-scale maps ``(4, h, w)`` (nuclei border, nuclei foreground,
    cell border, cell foreground): resized to ``shape`` (H, W), then :func:`label_cells`."""
    nb, nf, cb, cf = full_resolution(maps, maps.shape[1:], shape)
    return label_cells(nf, nb, cf, cb, **label_options)


# --------------------------------------------------------------------------- the backend
class HpaCellSegBackend:
    """The HPA DPN-UNet nuclei + 3-channel cell models (see the module docs).

    Parameters
    ----------
    nuclei_model, cell_model : path, optional
        The ``.pth`` files; default ``$HPACELLSEG_NUCLEI_MODEL`` / ``$HPACELLSEG_CELL_MODEL``.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    batch_size : int
        Images per forward pass.
    scale_factor : float
        Resize factor before the models (0.25 as published).
    amp : bool
        Autocast to float16 on CUDA.
    min_nucleus_size, min_cell_size, closing_radius : int
        Labelling sizes in full-resolution pixels (published values for HPA images).
    """

    name = "hpacellseg"

    def __init__(
        self,
        nuclei_model: str | os.PathLike | None = None,
        cell_model: str | os.PathLike | None = None,
        device: str = "auto",
        batch_size: int = 4,
        scale_factor: float = 0.25,
        amp: bool = False,
        min_nucleus_size: int = 2500,
        min_cell_size: int = 5500,
        closing_radius: int = 6,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 < scale_factor <= 1:
            raise InputError(f"scale_factor must lie in (0, 1], got {scale_factor}")
        nuclei_path = resolve_model_path(nuclei_model, "nuclei")
        cell_path = resolve_model_path(cell_model, "cell")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.scale_factor = scale_factor
        self.amp = amp and self.device.startswith("cuda")
        self.label_options = dict(
            min_nucleus_size=min_nucleus_size, min_cell_size=min_cell_size, closing_radius=closing_radius
        )
        self.nuclei_model = load_model(nuclei_path, self.device)
        self.cell_model = load_model(cell_path, self.device)

    @property
    def uses_gpu(self) -> bool:
        """True when the models run on CUDA (the batch job then batches in one process)."""
        return self.device.startswith("cuda")

    def _forward(self, model: Any, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(B, 3, h, w)`` float32 of a model on a padded batch."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            if self.amp:
                with torch.autocast("cuda", dtype=torch.float16):
                    logits = model(x)
            else:
                logits = model(x)
            if logits.ndim != 4 or logits.shape[1] < 3 or logits.shape[2:] != x.shape[2:]:
                raise InputError(
                    f"model output has shape {tuple(logits.shape)}; "
                    f"expected (B, 3, {x.shape[2]}, {x.shape[3]})"
                )
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def infer_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """The device part: per image, the models' maps at model scale, cropped to the image.

        Each is ``(4, h, w)`` float32 = nuclei border, nuclei foreground, cell
        border, cell foreground; :func:`maps_to_labels` finishes them (on the CPU,
        possibly in another process; see :meth:`postprocess`).
        """
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            for im in chunk:
                if im.ndim != 3 or im.shape[0] != 4:
                    raise ValueError(f"expected a (4, H, W) image set, got shape {im.shape}")
            inputs = [model_inputs(im, self.scale_factor) for im in chunk]
            nuc = self._forward(self.nuclei_model, pad_batch([a for a, _ in inputs]))
            cell = self._forward(self.cell_model, pad_batch([b for _, b in inputs]))
            for i in range(len(chunk)):
                h, w = inputs[i][0].shape[1:]
                out.append(np.ascontiguousarray(np.concatenate([nuc[i, 1:3, :h, :w], cell[i, 1:3, :h, :w]])))
        return out

    def postprocess(self) -> tuple[Any, dict[str, Any]]:
        """``(function, options)`` turning one :meth:`infer_batch` result into labels:
        ``function(maps, (H, W), **options) -> (cells, nuclei)``; picklable, for worker processes."""
        return maps_to_labels, dict(self.label_options)

    def predict_maps(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Full-resolution ``(4, H, W)`` probability maps per image (see :meth:`infer_batch`)."""
        return [
            full_resolution(m, m.shape[1:], im.shape[1:])
            for m, im in zip(self.infer_batch(images), images, strict=True)
        ]

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(cells, nuclei)`` uint32 label images of one ``(4, H, W)`` image set."""
        return self.segment_batch([image])[0]

    def segment_batch(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Segment several image sets, ``batch_size`` at a time on the device."""
        maps = self.infer_batch(images)
        return [
            maps_to_labels(m, im.shape[1:], **self.label_options) for m, im in zip(maps, images, strict=True)
        ]
