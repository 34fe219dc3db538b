"""Synthetic HPA-like image sets with per-cell ground truth.

:func:`synth_image` draws one image in memory; :func:`make_synth_dataset` writes a
folder that looks like HPA 2021 training data plus the truth::

    OUT/images/<ID>_{red,green,blue,yellow}.png   8-bit, or 16-bit PNG holding 12-bit values (0..4095)
    OUT/masks/<ID>_cellmask.png                   uint16, 0 = background, 1..N = cells
    OUT/masks/<ID>_nucleimask.png                 uint16, a nucleus carries its cell's id
    OUT/train.csv                                 ID,Label (2021 format; image labels)
    OUT/cells.csv                                 ID,cell,Label (true labels of every cell in the mask)
    OUT/synth.json                                the generation parameters

Drawing scale (``cell_scale`` 1.0): nuclei 90-150 px long, cells about
150-400 px across, so a 512-px image holds a handful (3-8) of cells, some
touching, some cut by the border. The real 2048-px HPA images are about 1.7x
larger (nuclei ~150-300 px long, cells 300-600 px equivalent diameter);
``cell_scale=1.7`` draws at that scale.

Channels: blue = nuclei (textured, darker nucleoli), red = microtubules
radiating from the MTOC beside the nucleus, yellow = a reticular ER mesh
densest around the nucleus, green = the protein pattern of the cell's classes
(:data:`hpacell.cellcrops.synth_patterns.PATTERNS`). Per-cell gains vary every channel;
the background is dark with shot and read noise.

Labels (the weak supervision). An image draws 1-3 of the 18 positive classes
(or, with ``negative_share``, is all Negative). Mitotic spindle (11) goes to
one rounded mitotic cell only. Other cells carry the image's classes (a random
two when it has three); with probability ``weak_share`` a cell is *weakened*:
it drops one of its two classes, or becomes Negative (18) when it has one or
by a coin flip. Every class of the image is kept by at least one cell. The
image label is the union of its cells' labels with Negative left out, or
``[18]`` when every cell is Negative (:func:`image_labels`), so Negative never
co-occurs with another class in ``train.csv``; a Negative cell in a positive
image is a cell that lacks the image's labels.

Determinism: image ``i`` of seed ``s`` is drawn from
``default_rng(SeedSequence([s, i]))``, independent of the number of images, and
the written files are byte-identical on rerun.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import cv2
import numpy as np
from pydantic import Field
from scipy import ndimage as ndi

from hpacell.cellcrops.labels import HPA2021, format_labels, read_cells_csv, write_labels
from hpacell.cellcrops.synth_patterns import PATTERNS, CellGeometry, radial_filaments, reticulum, smooth_noise
from hpacell.segmentation.io import CHANNELS, mask_paths, write_mask, write_png
from hpacell.utils.errors import HpacellError, InputError
from hpacell.utils.files import atomic_write_bytes
from hpacell.utils.options import Options
from hpacell.utils.outputs import check_stamp, claim_folder

log = logging.getLogger(__name__)

NEGATIVE = 18
SPINDLE = 11
N_CLASSES = 19
_POSITIVE = [k for k in range(N_CLASSES) if k != NEGATIVE]
SYNTH_VERSION = 1


# --------------------------------------------------------------------------- labels
def image_labels(cell_classes: dict[int, Sequence[int]]) -> list[int]:
    """Image label from its cells: union without Negative, or ``[18]`` if all are Negative.

    Examples
    --------
    >>> image_labels({1: [0], 2: [18], 3: [0, 16]})
    [0, 16]
    >>> image_labels({1: [18], 2: [18]})
    [18]
    """
    union = {int(k) for ks in cell_classes.values() for k in ks if int(k) != NEGATIVE}
    return sorted(union) if union else [NEGATIVE]


def sample_image_classes(rng: np.random.Generator, negative_share: float = 0.08) -> list[int]:
    """Classes an image draws: 1-3 positive classes (50/35/15 %), or ``[18]``."""
    if rng.random() < negative_share:
        return [NEGATIVE]
    k = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    return sorted(int(c) for c in rng.choice(_POSITIVE, size=k, replace=False))


def assign_cell_classes(
    rng: np.random.Generator, n_cells: int, classes: Sequence[int], weak_share: float, mitotic: int | None
) -> list[list[int]]:
    """Per-cell classes for an image drawing ``classes`` (see the module docs for the rule)."""
    pool = [int(c) for c in classes if c not in (NEGATIVE, SPINDLE)]
    out: list[list[int]] = []
    for i in range(n_cells):
        if i == mitotic:
            out.append([SPINDLE])
            continue
        if not pool:
            out.append([NEGATIVE])
            continue
        cell = list(pool) if len(pool) <= 2 else sorted(int(c) for c in rng.choice(pool, 2, replace=False))
        if rng.random() < weak_share:
            if len(cell) >= 2 and rng.random() < 0.5:
                cell.pop(int(rng.integers(len(cell))))
            else:
                cell = [NEGATIVE]
        out.append(sorted(cell))
    others = [i for i in range(n_cells) if i != mitotic]
    for c in pool:
        if others and not any(c in out[i] for i in others):
            i = min(others, key=lambda j: (out[j] != [NEGATIVE], len(out[j]), rng.random()))
            out[i] = [c] if out[i] == [NEGATIVE] else sorted(out[i] + [c])
    return out


# --------------------------------------------------------------------------- layout
def _shape_field(xx, yy, cx, cy, a, b, theta, harm):
    """Normalised radius of an ellipse with angular harmonics (``< 1`` inside)."""
    c, s = np.cos(theta), np.sin(theta)
    u = ((xx - cx) * c + (yy - cy) * s) / a
    v = (-(xx - cx) * s + (yy - cy) * c) / b
    rho = np.sqrt(u * u + v * v)
    ang = np.arctan2(v, u)
    r = np.ones_like(rho)
    for k, amp, ph in harm:
        r += amp * np.cos(k * ang + ph)
    return rho / np.maximum(r, 0.3)


def _harmonics(rng, ks, sd):
    return [(k, float(rng.normal(0, sd)), float(rng.uniform(0, 2 * np.pi))) for k in ks]


def _place_cells(rng, h, w, scale, mitotic_wanted):
    """Nucleus/cell shape parameters of the cells of one image (rejection sampling)."""
    mean_r = 125.0 * scale
    target = max(1, int(round(rng.uniform(0.6, 1.25) * h * w / (np.pi * mean_r**2))))
    cells: list[dict] = []
    for _ in range(60 * target):
        if len(cells) >= target:
            break
        mitotic = mitotic_wanted and not any(c["mitotic"] for c in cells)
        a = rng.uniform(45, 75) * scale
        if mitotic:
            a *= 0.8
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        if any(np.hypot(cx - c["cx"], cy - c["cy"]) < 1.25 * (a + c["a"]) + 25 * scale for c in cells):
            continue
        theta = rng.uniform(-np.pi, np.pi)
        if mitotic:
            rc, e, off = a * rng.uniform(1.25, 1.5), rng.uniform(1.0, 1.12), 0.0
            cell_h = _harmonics(rng, (2, 3), 0.03)
            b = a * rng.uniform(0.85, 1.0)
        else:
            rc, e, off = a * rng.uniform(1.7, 2.6), rng.uniform(1.0, 1.8), rng.uniform(-0.3, 0.3)
            cell_h = _harmonics(rng, (2, 3), 0.12) + _harmonics(rng, (4, 5, 6, 7), 0.05)
            b = a * rng.uniform(0.6, 0.95)
        ctheta = theta + rng.normal(0, 0.35)
        cells.append(
            dict(
                cx=cx,
                cy=cy,
                a=a,
                b=b,
                theta=theta,
                nuc_h=_harmonics(rng, (2, 3, 4, 5), 0.03),
                ccx=cx + np.cos(ctheta) * off * rc * e,
                ccy=cy + np.sin(ctheta) * off * rc * e,
                ca=rc * e,
                cb=rc / e,
                ctheta=ctheta,
                cell_h=cell_h,
                mitotic=mitotic,
            )
        )
    return cells


def _layout(rng, h, w, scale, cells):
    """Rasterise the cells: instance masks of cells and nuclei, competing for pixels."""
    edge = smooth_noise(rng, (h, w), 10 * scale) * 0.08 + smooth_noise(rng, (h, w), 3 * scale) * 0.012
    best = np.full((h, w), np.inf, np.float32)
    owner = np.zeros((h, w), np.int32)
    nuc = np.zeros((h, w), np.int32)
    for i, c in enumerate(cells, start=1):
        reach = max(c["ca"], c["cb"]) * 1.5
        y0, y1 = max(int(c["ccy"] - reach), 0), min(int(c["ccy"] + reach) + 1, h)
        x0, x1 = max(int(c["ccx"] - reach), 0), min(int(c["ccx"] + reach) + 1, w)
        ny0, ny1 = max(int(c["cy"] - 1.5 * c["a"]), 0), min(int(c["cy"] + 1.5 * c["a"]) + 1, h)
        nx0, nx1 = max(int(c["cx"] - 1.5 * c["a"]), 0), min(int(c["cx"] + 1.5 * c["a"]) + 1, w)
        y0, y1, x0, x1 = min(y0, ny0), max(y1, ny1), min(x0, nx0), max(x1, nx1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        if c["mitotic"]:  # condensed chromosomes: a thin bar (metaphase plate)
            rn = _shape_field(xx, yy, c["cx"], c["cy"], c["a"] * 0.8, c["a"] * 0.22, c["theta"], c["nuc_h"])
            rn = rn + 0.25 * edge[y0:y1, x0:x1] / 0.07
        else:
            rn = _shape_field(xx, yy, c["cx"], c["cy"], c["a"], c["b"], c["theta"], c["nuc_h"])
        rc = _shape_field(xx, yy, c["ccx"], c["ccy"], c["ca"], c["cb"], c["ctheta"], c["cell_h"])
        if c["mitotic"]:
            v = rc + 0.3 * edge[y0:y1, x0:x1]
        else:
            v = np.minimum(rc + edge[y0:y1, x0:x1], rn / 1.15)
        take = (v < 1) & (v < best[y0:y1, x0:x1])
        best[y0:y1, x0:x1][take] = v[take]
        owner[y0:y1, x0:x1][take] = i
        nmask = (rn < 1) & (nuc[y0:y1, x0:x1] == 0)
        nuc[y0:y1, x0:x1][nmask] = i
    owner = np.where(nuc > 0, nuc, owner)
    # keep each cell's part connected to its nucleus; drop tiny cells; relabel 1..N
    cell_lab = np.zeros((h, w), np.uint16)
    nuc_lab = np.zeros((h, w), np.uint16)
    kept = []
    min_area = 400 * scale * scale
    for i, sl in enumerate(ndi.find_objects(owner), start=1):
        if sl is None:
            continue
        m = owner[sl] == i
        n = (nuc[sl] == i) & m
        if not n.any():
            continue
        comp, _ = ndi.label(m)
        ids = np.unique(comp[n])
        m = np.isin(comp, ids[ids > 0])
        m = ndi.binary_fill_holes(m) & ((owner[sl] == i) | (owner[sl] == 0))
        if m.sum() < min_area or n.sum() < min_area / 8:
            continue
        kept.append(i - 1)
        new = len(kept)
        cell_lab[sl][m] = new
        nuc_lab[sl][n & m] = new
    return cell_lab, nuc_lab, [cells[k] for k in kept]


def _geometry(rng, cell_lab, nuc_lab, cid, c, scale):
    h, w = cell_lab.shape
    pad = int(8 * scale) + 2
    ys, xs = np.nonzero(cell_lab == cid)
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, h)
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, w)
    cell = cell_lab[y0:y1, x0:x1] == cid
    nucleus = nuc_lab[y0:y1, x0:x1] == cid
    dnuc = cv2.distanceTransform((~nucleus).astype(np.uint8), cv2.DIST_L2, 3)
    dedge = cv2.distanceTransform(np.pad(cell, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    cyto = cell & ~nucleus
    radial = np.where(cyto, dnuc / (dnuc + dedge + 1e-3), np.where(nucleus, 0.0, 1.0)).astype(np.float32)
    cf = cell.astype(np.float32)
    soft = np.clip(cv2.GaussianBlur(cf, (0, 0), 5 * scale) * 1.6 - 0.2, 0, 1) * cf
    nuc_soft = cv2.GaussianBlur(nucleus.astype(np.float32), (0, 0), 1.2 * scale)
    ncx, ncy = c["cx"] - x0, c["cy"] - y0
    # MTOC: just outside the nucleus, towards the visible cell body (border-cut cells included)
    nys, nxs = np.nonzero(nucleus)
    vx, vy = float(nxs.mean()), float(nys.mean())
    cys, cxs = np.nonzero(cyto)
    if len(cys) and abs(cxs.mean() - vx) + abs(cys.mean() - vy) > 1:
        phi = float(np.arctan2(cys.mean() - vy, cxs.mean() - vx))
    else:
        phi = float(rng.uniform(-np.pi, np.pi))
    phi += rng.normal(0, 0.4)
    if not c["mitotic"]:
        ncx, ncy = vx, vy
    mtoc = np.array([ncx, ncy], np.float32)
    dirv = np.array([np.cos(phi), np.sin(phi)], np.float32)
    for _ in range(int(4 * c["a"])):
        x, y = int(round(mtoc[0])), int(round(mtoc[1]))
        if not (0 <= x < x1 - x0 and 0 <= y < y1 - y0) or not nucleus[y, x]:
            break
        mtoc = mtoc + dirv
    mtoc = mtoc + dirv * 5 * scale
    # nucleoli: 1-4 round bodies well inside the nucleus
    inner = cv2.distanceTransform(nucleus.astype(np.uint8), cv2.DIST_L2, 3)
    nucleoli = np.zeros((0, 3), np.float32)
    if not c["mitotic"]:
        k = int(rng.integers(1, 5))
        cand = np.argwhere(inner > 0.35 * c["b"])
        if len(cand):
            pick = cand[rng.choice(len(cand), size=min(k, len(cand)), replace=False)]
            r = rng.uniform(5, 10, len(pick)) * scale
            nucleoli = np.column_stack([pick[:, 1], pick[:, 0], r]).astype(np.float32)
    poles = None
    if c["mitotic"]:
        perp = c["theta"] + np.pi / 2
        d = np.array([np.cos(perp), np.sin(perp)]) * c["a"] * 0.75
        poles = np.array([[ncx, ncy] + d, [ncx, ncy] - d], np.float32)
    return CellGeometry(
        y0=y0,
        x0=x0,
        cell=cell,
        nucleus=nucleus,
        soft=soft.astype(np.float32),
        nuc_soft=nuc_soft,
        dnuc=dnuc,
        dedge=dedge,
        radial=radial,
        nuc_center=np.array([ncx, ncy], np.float32),
        nuc_radius=float(np.sqrt(max(nucleus.sum(), 1) / np.pi)) if not c["mitotic"] else c["a"],
        mtoc=mtoc,
        axis=float(c["ctheta"]),
        scale=scale,
        nucleoli=nucleoli,
        mitotic=c["mitotic"],
        poles=poles,
    )


# --------------------------------------------------------------------------- channels
def _draw_cell(rng, g: CellGeometry, classes: Sequence[int], canvas: np.ndarray) -> None:
    """Add one cell's four channels into ``canvas`` (4, H, W) float32."""
    s = g.scale
    sl = g.slices
    gain = np.exp(rng.normal(0, [0.25, 0.35, 0.2, 0.25])).astype(np.float32)
    noise = smooth_noise(rng, g.shape, 1.2 * s)
    # blue: textured nucleus, darker nucleoli (bright condensed chromatin when mitotic)
    nucleoli = np.zeros(g.shape, np.float32)
    for x, y, r in g.nucleoli:
        cv2.circle(nucleoli, (int(x), int(y)), int(r), 1.0, -1, cv2.LINE_AA)
    nucleoli = cv2.GaussianBlur(nucleoli, (0, 0), 1.5 * s)
    coarse = smooth_noise(rng, g.shape, 12 * s)
    blue = g.nuc_soft * (0.62 + 0.08 * noise.clip(-2, 2) + 0.08 * coarse.clip(-2, 2)) * (1 - 0.45 * nucleoli)
    if g.mitotic:
        blue = g.nuc_soft * (1.0 + 0.15 * noise.clip(-2, 2))
    # red: microtubules radiating from the MTOC; yellow: ER mesh denser near the nucleus
    mt = radial_filaments(rng, g, density=1.0 if not g.mitotic else 0.3)
    mt = cv2.GaussianBlur(mt, (0, 0), 0.6)
    density = (1.0 - 0.65 * g.radial) * g.soft
    red = (0.7 * mt * (0.6 + 0.4 * density) + 0.18 * density) * (1 - 0.75 * g.nuc_soft)
    er = reticulum(rng, g.shape, s)
    envelope = np.exp(-(g.dnuc**2) / (2 * (3 * s) ** 2)) * (g.dnuc > 0) * g.cell
    yellow = (0.65 * er * density**1.3 + 0.15 * density + 0.35 * envelope) * (1 - 0.85 * g.nuc_soft)
    shared = {"er": np.clip(er * density**1.3 * 1.5 + 0.15 * envelope, 0, 1), "mt": mt * g.soft}
    if g.mitotic:
        spindle = PATTERNS[SPINDLE](rng, g, shared)
        red = 0.2 * g.soft * (1 - 0.5 * g.nuc_soft) * (0.6 + 0.4 * er) + 0.8 * spindle + 0.15 * mt
        yellow = 0.3 * g.soft * (0.4 + 0.6 * er) * (1 - 0.6 * g.nuc_soft)
    # green: the classes' patterns on a faint non-specific background
    green = 0.035 * g.soft * (1 + 0.3 * noise.clip(-2, 2))
    for k in classes:
        if k == NEGATIVE:
            continue
        pattern = PATTERNS[int(k)](rng, g, shared)
        green = green + np.float32(np.exp(rng.normal(np.log(0.75), 0.3))) * pattern
    cell = g.cell.astype(np.float32)
    for ch, plane in enumerate((red, green, blue, yellow)):
        canvas[ch][sl] += gain[ch] * plane.astype(np.float32) * cell


def _finish(rng, canvas: np.ndarray, bit_depth: int) -> np.ndarray:
    """Optics and camera: blur, out-of-focus glow, background, shot/read noise, quantisation."""
    levels = 255 if bit_depth == 8 else 4095
    out = np.empty(canvas.shape, np.uint8 if bit_depth == 8 else np.uint16)
    amp = np.array([0.75, 0.8, 0.85, 0.7], np.float32) * np.exp(rng.normal(0, 0.15, 4)).astype(np.float32)
    for ch in range(4):
        x = cv2.GaussianBlur(canvas[ch], (0, 0), 0.9)
        x = x + 0.05 * cv2.GaussianBlur(canvas[ch], (0, 0), 20)
        x = x * amp[ch] + np.float32(rng.uniform(0.003, 0.012))
        shot = rng.standard_normal(x.shape, dtype=np.float32)
        x = x + shot * np.sqrt(x * np.float32(0.012) + np.float32(0.004**2))
        out[ch] = np.rint(np.clip(x, 0, 1) * levels).astype(out.dtype)
    return out


def synth_image(
    rng: np.random.Generator,
    size: int = 512,
    height: int | None = None,
    *,
    cell_scale: float = 1.0,
    bit_depth: int = 8,
    classes: Sequence[int] | None = None,
    weak_share: float = 0.3,
    negative_share: float = 0.08,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, list[int]]]:
    """Draw one synthetic HPA-like image set with its ground truth.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness (same state → same output).
    size, height : int
        Width, and height (default ``size``) in pixels.
    cell_scale : float
        Drawing scale; 1.0 = nuclei ~90-150 px long (see module docs).
    bit_depth : {8, 16}
        uint8 output, or uint16 holding 12-bit values (0..4095) as HPA's 16-bit files.
    classes : sequence of int, optional
        The image's classes (drawn by :func:`sample_image_classes` when omitted).
    weak_share : float
        Probability that a cell is weakened (drops a class or becomes Negative).
    negative_share : float
        Probability that an image is all Negative (when ``classes`` is omitted).

    Returns
    -------
    image : (4, H, W) uint8 or uint16
        Channels red, green, blue, yellow.
    cell_labels, nuclei_labels : (H, W) uint16
        Cell instance mask (1..N) and nuclei mask (each nucleus carries its cell's id).
    cell_classes : dict
        ``{cell id: sorted class ids}`` for every cell in ``cell_labels``.

    Examples
    --------
    >>> img, cells, nuclei, truth = synth_image(np.random.default_rng(0), 96, cell_scale=0.25)
    >>> img.shape, img.dtype.name, sorted(truth) == sorted(set(np.unique(cells)) - {0})
    ((4, 96, 96), 'uint8', True)
    """
    if bit_depth not in (8, 16):
        raise InputError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if not 0.0 <= weak_share <= 1.0:
        raise InputError(f"weak_share must lie in [0, 1], got {weak_share}")
    if cell_scale <= 0:
        raise InputError(f"cell_scale must be positive, got {cell_scale}")
    w, h = int(size), int(height or size)
    if w < 16 or h < 16:
        raise InputError(f"image size must be at least 16 px, got {w}x{h}")
    if classes is None:
        classes = sample_image_classes(rng, negative_share)
    classes = sorted({int(k) for k in classes})
    if not classes or any(not 0 <= k < N_CLASSES for k in classes):
        raise ValueError(f"classes must be non-empty class ids 0..18, got {classes}")
    if NEGATIVE in classes and len(classes) > 1:
        raise ValueError("Negative (18) cannot be combined with other classes")
    placed = _place_cells(rng, h, w, cell_scale, SPINDLE in classes)
    cell_lab, nuc_lab, cells = _layout(rng, h, w, cell_scale, placed)
    mitotic = next((i for i, c in enumerate(cells) if c["mitotic"]), None)
    per_cell = assign_cell_classes(rng, len(cells), classes, weak_share, mitotic)
    canvas = np.zeros((4, h, w), np.float32)
    for i, (c, ks) in enumerate(zip(cells, per_cell, strict=True), start=1):
        _draw_cell(rng, _geometry(rng, cell_lab, nuc_lab, i, c, cell_scale), ks, canvas)
    image = _finish(rng, canvas, bit_depth)
    truth = {i: ks for i, ks in enumerate(per_cell, start=1)}
    return image, cell_lab, nuc_lab, truth


# --------------------------------------------------------------------------- dataset
def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``seed`` (independent of the dataset size)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def image_id(index: int) -> str:
    """``synth-0000``-style ID of image ``index``."""
    return f"synth-{index:04d}"


class SynthOptions(Options):
    """What the synthetic images depend on (``OUT/synth.json`` records them with the version)."""

    what: ClassVar[str] = "synth options"

    seed: int = Field(0, description="random seed; image i is drawn from SeedSequence([seed, i])")
    size: int = Field(512, ge=16, description="image width in pixels")
    height: int = Field(512, ge=16, description="image height in pixels")
    bit_depth: Literal[8, 16] = Field(8, description="8, or 16 (uint16 PNG holding 12-bit values)")
    weak_share: float = Field(0.3, ge=0.0, le=1.0, description="share of weakened cells")
    negative_share: float = Field(0.08, ge=0.0, le=1.0, description="share of all-Negative images")
    cell_scale: float = Field(1.0, gt=0.0, description="cell size factor (1.0: nuclei ~90-150 px)")


def _write_one(job: tuple[Path, int, SynthOptions]) -> tuple[str, dict[int, list[int]]]:
    out, index, o = job
    img, cells, nuclei, truth = synth_image(
        image_rng(o.seed, index),
        o.size,
        o.height,
        cell_scale=o.cell_scale,
        bit_depth=o.bit_depth,
        weak_share=o.weak_share,
        negative_share=o.negative_share,
    )
    iid = image_id(index)
    for ch, plane in zip(CHANNELS, img, strict=True):
        write_png(out / "images" / f"{iid}_{ch}.png", plane)
    cell_path, nuc_path = mask_paths(out / "masks", iid)
    write_mask(nuc_path, nuclei)
    write_mask(cell_path, cells)  # written last: its presence marks the image complete
    return iid, truth


def _image_files(out: Path, iid: str) -> list[Path]:
    return [out / "images" / f"{iid}_{ch}.png" for ch in CHANNELS] + list(mask_paths(out / "masks", iid))


def make_synth_dataset(
    out: str | os.PathLike,
    n_images: int,
    size: int = 512,
    seed: int = 0,
    *,
    height: int | None = None,
    bit_depth: int = 8,
    weak_share: float = 0.3,
    negative_share: float = 0.08,
    cell_scale: float = 1.0,
    overwrite: bool = False,
    workers: int = 1,
) -> dict:
    """Write a synthetic HPA 2021-like dataset with per-cell truth to ``out``.

    A rerun with the same parameters skips images whose files and truth rows
    already exist (``n_images`` may grow; images beyond a smaller ``n_images``
    are removed); other parameters over an existing folder need
    ``overwrite=True``, which regenerates everything. Outputs are written
    atomically and are byte-identical for the same parameters.

    Returns
    -------
    dict
        ``{"out", "n_images", "n_cells", "generated", "skipped", "seconds", "class_cells", "class_images"}``.
    """
    from hpacell.utils.jobs import run_jobs

    if n_images < 1:
        raise InputError(f"n_images must be >= 1, got {n_images}")
    out = Path(out)
    options = SynthOptions(
        seed=seed,
        size=size,
        height=height or size,
        bit_depth=bit_depth,
        weak_share=weak_share,
        negative_share=negative_share,
        cell_scale=cell_scale,
    )
    params = {"version": SYNTH_VERSION, **options.model_dump()}
    meta_path = out / "synth.json"
    # Only into a folder made by synth (synth.json marks those made before markers existed);
    # a user's folder with a train.csv or masks/ of its own is refused.
    claim_folder(out, "synth", legacy=["synth.json"])
    same = check_stamp(meta_path, params, overwrite=overwrite, what="synthetic images")
    old_truth: dict[str, dict[int, list[int]]] = (
        read_cells_csv(out / "cells.csv") if same and (out / "cells.csv").is_file() else {}
    )
    if not same:
        meta_path.unlink(missing_ok=True)  # written again when every image is done: a killed run redoes all
    ids = [image_id(i) for i in range(n_images)]
    # remove images of an earlier, larger run of this tool (their names are ours)
    for folder in (out / "images", out / "masks"):
        if folder.is_dir():
            for p in folder.glob("synth-*"):
                if p.name.split("_")[0] not in set(ids):
                    p.unlink()
    todo = [
        i
        for i, iid in enumerate(ids)
        if iid not in old_truth or not all(p.is_file() for p in _image_files(out, iid))
    ]
    t0 = time.perf_counter()
    truth = {iid: old_truth[iid] for iid in ids if iid in old_truth}
    failures = []
    for res in run_jobs(
        _write_one, [(out, i, options) for i in todo], workers=workers, desc="synth", total=len(todo)
    ):
        if res.error is not None:
            failures.append(res)
            continue
        iid, cells = res.value
        truth[iid] = cells
    if failures:
        raise HpacellError(f"{len(failures)} synthetic images failed, e.g. {failures[0].error}")
    rows = ["ID,cell,Label"]
    for iid in ids:
        rows += [f"{iid},{c},{format_labels(ks)}" for c, ks in sorted(truth[iid].items())]
    atomic_write_bytes(out / "cells.csv", ("\n".join(rows) + "\n").encode())
    labels = {iid: image_labels(truth[iid]) for iid in ids}
    write_labels(out / "train.csv", labels, HPA2021)
    atomic_write_bytes(meta_path, (json.dumps(params, indent=2) + "\n").encode())
    seconds = time.perf_counter() - t0
    class_cells = np.zeros(N_CLASSES, int)
    class_images = np.zeros(N_CLASSES, int)
    for iid in ids:
        for ks in truth[iid].values():
            class_cells[ks] += 1
        class_images[labels[iid]] += 1
    summary = {
        "out": str(out),
        "n_images": len(ids),
        "n_cells": int(sum(len(t) for t in truth.values())),
        "generated": len(todo),
        "skipped": len(ids) - len(todo),
        "seconds": round(seconds, 3),
        "class_cells": class_cells.tolist(),
        "class_images": class_images.tolist(),
    }
    log.info(
        "synth: %d images (%d generated) with %d cells in %.2fs -> %s",
        len(ids),
        len(todo),
        summary["n_cells"],
        seconds,
        out,
    )
    return summary
