"""The ``hpacellseg`` backend: the published HPA DPN-UNet models, driven by our own code.

The HPA Cell Segmentation models (Zenodo record 4665863) are whole pickled torch
modules. Their own package breaks on current torch / scikit-image and pushes
images through one at a time, so this adapter only *loads* the two modules from
paths the user gives and reproduces the reference program around them
(CellProfiling/HPA-Cell-Segmentation @ 7b6dbc6; tested against its outputs in
``../shared/data/hpacellseg-reference``):

1. each of red, yellow and blue is downscaled by ``scale_factor`` (0.25) with
   ``skimage.transform.rescale`` (anti-aliased; uint8 / 255, uint16 / 65535);
   sizes that are not a multiple of 32 at model scale get the reference's
   ``padding=True`` border (32 px reflected top/left, up to the next multiple of
   32 bottom/right), multiples of 32 none (its default); normalised per channel
   in float32; the nuclei model sees blue x 3, the cell model (red, yellow, blue);
2. a batched forward pass on the device (images of one padded size together;
   batching does not change a value), softmax over the 3 channels
   (1 = touching borders, 2 = foreground);
3. back to full resolution as the reference does: nuclei maps rounded to uint8
   then enlarged with ``cv2.INTER_AREA``, cell maps enlarged as float then
   rounded; labelled by :func:`~hpacell.segmentation.backends.hpacellseg_labels.label_cells`.

Departures (README): non-square images keep their shape (the reference returns
W x H maps, stretched); 12-bit data in 16-bit files is divided by 4095
(``rescale_12bit=False``: by 65535 as the reference, which then finds no cells).

Nothing is downloaded: a missing model file is an error that says where to get it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from skimage.transform import rescale
from skimage.util import img_as_ubyte

from hpacell.segmentation.backends.hpacellseg_labels import label_cells
from hpacell.utils.device import resolve_device
from hpacell.utils.errors import HpacellError, InputError
from hpacell.utils.intensity import effective_bits

log = logging.getLogger(__name__)

NUCLEI_ENV = "HPACELLSEG_NUCLEI_MODEL"
CELL_ENV = "HPACELLSEG_CELL_MODEL"
ZENODO = "https://zenodo.org/record/4665863"
NUCLEI_FILE = "dpn_unet_nuclei_v1.pth"
CELL_FILE = "dpn_unet_cell_3ch_v1.pth"

# Per-channel normalisation the models were trained with (float32, as the reference's torch tensors).
MEAN = np.array([124 / 255, 117 / 255, 104 / 255], np.float32)
STD = np.float32(1 / (0.0167 * 255))


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


# --------------------------------------------------------------------------- preprocessing
def padding(scaled: tuple[int, int], multiple: int = 32) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` border at model scale: none for multiples of ``multiple``,
    else the reference's ``padding=True`` (32 px top/left, ``32 - n % 32`` bottom/right).

    Examples
    --------
    >>> padding((512, 512)), padding((432, 432)), padding((512, 400))
    ((0, 0, 0, 0), (32, 16, 32, 16), (32, 32, 32, 16))
    """
    h, w = scaled
    if h % multiple == 0 and w % multiple == 0:
        return (0, 0, 0, 0)
    return (multiple, multiple - h % multiple, multiple, multiple - w % multiple)


def _scaled_planes(image: np.ndarray, scale_factor: float, rescale_12bit: bool) -> list[np.ndarray]:
    """Red, yellow, blue downscaled as the reference (float64 in [0, 1])."""
    planes = [image[0], image[3], image[2]]
    if rescale_12bit and image.dtype == np.uint16 and effective_bits(image) == 12:
        planes = [p / 4095.0 for p in planes]  # departure: the reference divides by 65535
    return [rescale(p, scale_factor) for p in planes]


def model_inputs(
    image: np.ndarray, scale_factor: float = 0.25, rescale_12bit: bool = True
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """``(nuclei_input, cell_input, scaled)``: two normalised ``(3, h', w')`` float32 arrays
    (padded as :func:`padding` says) and the unpadded model-scale size ``(h, w)``.

    ``image`` is a ``(4, H, W)`` set (red, green, blue, yellow).

    Examples
    --------
    >>> nuc, cell, scaled = model_inputs(np.zeros((4, 96, 128), np.uint8))
    >>> nuc.shape, cell.shape, scaled
    ((3, 64, 96), (3, 64, 96), (24, 32))
    """
    red, yellow, blue = _scaled_planes(image, scale_factor, rescale_12bit)
    scaled = blue.shape
    top, bottom, left, right = padding(scaled)
    if top or bottom or left or right:
        red, yellow, blue = (
            cv2.copyMakeBorder(p, top, bottom, left, right, cv2.BORDER_REFLECT) for p in (red, yellow, blue)
        )
    # float32 (x - mean) / std per channel, as the reference's torch tensors
    cell = np.stack([(p.astype(np.float32) - MEAN[i]) / STD for i, p in enumerate((red, yellow, blue))])
    nuclei = np.stack([(blue.astype(np.float32) - m) / STD for m in MEAN])
    return nuclei, cell, scaled


def crop_padding(prob: np.ndarray, scaled: tuple[int, int]) -> np.ndarray:
    """The model-scale image part of a ``(C, h', w')`` output padded by :func:`padding`."""
    top, _, left, _ = padding(scaled)
    return prob[:, top : top + scaled[0], left : left + scaled[1]]


def full_resolution_maps(maps: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(nuclei_map, cell_map)``: uint8 ``(H, W, 3)`` maps as the reference's ``pred_nuclei`` /
    ``pred_cells`` return them, from model-scale softmax maps ``(4, h, w)`` float32 (nuclei
    border, nuclei foreground, cell border, cell foreground).

    Nuclei: rounded to uint8, then enlarged (``INTER_AREA``); cells: enlarged as
    float, then rounded (the reference's two orders). Channel 0 is 0.
    """
    H, W = shape
    size = (W, H)  # OpenCV: (width, height); the reference passes (H, W) and stretches non-square maps
    nuclei = np.zeros((H, W, 3), np.uint8)
    cells = np.zeros((H, W, 3), np.uint8)
    for ch in (1, 2):
        nuclei[..., ch] = cv2.resize(img_as_ubyte(maps[ch - 1]), size, interpolation=cv2.INTER_AREA)
        up = cv2.resize(np.ascontiguousarray(maps[ch + 1]), size, interpolation=cv2.INTER_AREA)
        cells[..., ch] = img_as_ubyte(up)
    return nuclei, cells


def maps_to_labels(
    maps: np.ndarray, shape: tuple[int, int], **label_options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """``(cells, nuclei)`` from model-scale maps (see :func:`full_resolution_maps`) at ``shape``."""
    nuclei_map, cell_map = full_resolution_maps(maps, shape)
    return label_cells(cell_map, nuclei_map, **label_options)


# --------------------------------------------------------------------------- the backend
def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise InputError(f"option {name} expects true or false, got {value!r}")


class HpaCellSegBackend:
    """The HPA DPN-UNet nuclei + 3-channel cell models (see the module docs).

    Parameters
    ----------
    nuclei_model, cell_model : path, optional
        The ``.pth`` files; default ``$HPACELLSEG_NUCLEI_MODEL`` / ``$HPACELLSEG_CELL_MODEL``.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    batch_size : int
        Images per forward pass (images of one size go together).
    scale_factor : float
        Resize factor before the models (0.25 as published).
    amp : bool
        Autocast to float16 on CUDA (faster; maps no longer the reference's).
    rescale_12bit : bool
        True: 16-bit files holding 12-bit data are divided by 4095 (the reference
        divides by 65535 and then finds nothing); False: as the reference.
    boundary_gaps : bool
        True (the reference): touching cells are split by ~2 px gaps and pieces
        cut off from their nucleus become cells; False: touching cells touch.
    exact_ties : bool
        True (the reference): ties in the watersheds go as in the reference;
        False: a faster second watershed (a few pixels per image may differ).
    min_nucleus_size, min_cell_size, closing_radius : int
        Labelling sizes in full-resolution pixels (the reference's values for HPA images).
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
        rescale_12bit: bool = True,
        boundary_gaps: bool = True,
        exact_ties: bool = True,
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
        self.device = str(resolve_device(device))  # the one device rule of every stage (hpacell.utils.device)
        self.batch_size = batch_size
        self.scale_factor = scale_factor
        self.amp = _as_bool("amp", amp) and self.device.startswith("cuda")
        self.rescale_12bit = _as_bool("rescale_12bit", rescale_12bit)
        self.label_options = dict(
            boundary_gaps=_as_bool("boundary_gaps", boundary_gaps),
            exact_ties=_as_bool("exact_ties", exact_ties),
            min_nucleus_size=min_nucleus_size,
            min_cell_size=min_cell_size,
            closing_radius=closing_radius,
        )
        self.nuclei_model = load_model(nuclei_path, self.device)
        self.cell_model = load_model(cell_path, self.device)

    @property
    def uses_gpu(self) -> bool:
        """True when the models run on CUDA (the batch job then batches in one process)."""
        return self.device.startswith("cuda")

    def _forward(self, model: Any, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(B, 3, h, w)`` float32 of a model on a batch of inputs."""
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
            return torch.softmax(logits[:, :3].float(), dim=1).cpu().numpy()

    def infer_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """The device part: per image, the models' softmax maps at model scale, padding cut off.

        Each is ``(4, h, w)`` float32 = nuclei border, nuclei foreground, cell
        border, cell foreground; :func:`maps_to_labels` finishes them (on the CPU,
        possibly in another process; see :meth:`postprocess`). Images of the same
        padded size share forward passes of up to ``batch_size``.
        """
        for im in images:
            if im.ndim != 3 or im.shape[0] != 4:
                raise ValueError(f"expected a (4, H, W) image set, got shape {im.shape}")
        inputs = [model_inputs(im, self.scale_factor, self.rescale_12bit) for im in images]
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (nuc, _, _) in enumerate(inputs):
            groups.setdefault(nuc.shape, []).append(i)
        for members in groups.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                nuc = self._forward(self.nuclei_model, np.stack([inputs[i][0] for i in chunk]))
                cell = self._forward(self.cell_model, np.stack([inputs[i][1] for i in chunk]))
                for j, i in enumerate(chunk):
                    both = np.concatenate([nuc[j, 1:3], cell[j, 1:3]])
                    out[i] = np.ascontiguousarray(crop_padding(both, inputs[i][2]))
        return out  # type: ignore[return-value]

    def postprocess(self) -> tuple[Any, dict[str, Any]]:
        """``(function, options)`` turning one :meth:`infer_batch` result into labels:
        ``function(maps, (H, W), **options) -> (cells, nuclei)``; picklable, for worker processes."""
        return maps_to_labels, dict(self.label_options)

    def predict_maps(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image ``(nuclei_map, cell_map)``, the uint8 ``(H, W, 3)`` maps the labelling gets."""
        return [
            full_resolution_maps(m, im.shape[1:])
            for m, im in zip(self.infer_batch(images), images, strict=True)
        ]

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(cells, nuclei)`` uint16 label images of one ``(4, H, W)`` image set."""
        return self.segment_batch([image])[0]

    def segment_batch(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Segment several image sets, ``batch_size`` at a time on the device."""
        maps = self.infer_batch(images)
        return [
            maps_to_labels(m, im.shape[1:], **self.label_options) for m, im in zip(maps, images, strict=True)
        ]
