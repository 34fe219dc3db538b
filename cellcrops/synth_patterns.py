"""Drawing primitives and the 19 green-channel protein patterns of :mod:`hpacell.cellcrops.synth`.

Everything works on one cell's bounding box (a :class:`CellGeometry`), in
float32 arrays of roughly ``[0, 1]``, vectorised with NumPy/OpenCV. Lengths are
in pixels at ``scale`` 1.0 (the drawing scale of :mod:`hpacell.cellcrops.synth`) and are
multiplied by ``geom.scale``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel bits for cv2.polylines
_ONE = 1 << _SHIFT


@dataclass
class CellGeometry:
    """One cell in its bounding box; every array has the bbox's shape.

    ``cell``/``nucleus`` are boolean masks (the ground truth), ``soft`` a
    smooth cell mask (signal fades near the rim), ``dnuc`` the distance from the
    nucleus (0 inside), ``dedge`` the distance to the cell edge (0 outside),
    ``radial`` 0 at the nucleus rim .. 1 at the cell rim. Points are ``(x, y)`` in
    bbox coordinates; ``mtoc`` is the microtubule organising centre beside the
    nucleus, ``axis`` the angle of the cell's long axis.
    """

    y0: int
    x0: int
    cell: np.ndarray
    nucleus: np.ndarray
    soft: np.ndarray
    nuc_soft: np.ndarray
    dnuc: np.ndarray
    dedge: np.ndarray
    radial: np.ndarray
    nuc_center: np.ndarray
    nuc_radius: float
    mtoc: np.ndarray
    axis: float
    scale: float
    nucleoli: np.ndarray  # (k, 3): x, y, radius
    mitotic: bool = False
    poles: np.ndarray | None = None  # (2, 2) spindle poles of a mitotic cell

    @property
    def shape(self) -> tuple[int, int]:
        return self.cell.shape

    @property
    def cyto(self) -> np.ndarray:
        return self.cell & ~self.nucleus

    @property
    def slices(self) -> tuple[slice, slice]:
        h, w = self.cell.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)


# --------------------------------------------------------------------------- primitives
def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance smooth random field with features of about ``sigma`` px.

    White noise on a grid ``sigma`` times coarser, upsampled bicubically (cheap at
    any size).

    Examples
    --------
    >>> n = smooth_noise(np.random.default_rng(0), (64, 48), 4.0)
    >>> n.shape, abs(float(n.mean())) < 1e-3
    ((64, 48), True)
    """
    h, w = shape
    step = max(float(sigma), 1.0)
    gh, gw = max(int(np.ceil(h / step)) + 3, 2), max(int(np.ceil(w / step)) + 3, 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(coarse, (int(gw * step), int(gh * step)), interpolation=cv2.INTER_CUBIC)
    oy, ox = int(step), int(step)
    out = big[oy : oy + h, ox : ox + w]
    if out.shape != (h, w):  # tiny shapes: pad by edge values
        out = cv2.resize(big, (w, h), interpolation=cv2.INTER_LINEAR)
    out = out - out.mean()
    sd = float(out.std())
    return (out / sd if sd > 0 else out).astype(np.float32)


def splat(shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray, amps, sigma: float) -> np.ndarray:
    """Gaussian dots of peak ``amps`` and width ``sigma`` at points ``(xs, ys)``.

    Examples
    --------
    >>> d = splat((21, 21), np.array([10]), np.array([10]), 1.0, 2.0)
    >>> round(float(d.max()), 1), int(d.argmax()) == 10 * 21 + 10
    (1.0, True)
    """
    out = np.zeros(shape, np.float32)
    xs = np.rint(np.asarray(xs)).astype(int)
    ys = np.rint(np.asarray(ys)).astype(int)
    amps = np.broadcast_to(np.asarray(amps, np.float32), xs.shape)
    keep = (xs >= 0) & (ys >= 0) & (xs < shape[1]) & (ys < shape[0])
    np.add.at(out, (ys[keep], xs[keep]), amps[keep])
    if sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), sigma) * np.float32(2 * np.pi * sigma * sigma)
    return out


def walks(
    rng: np.random.Generator,
    starts: np.ndarray,
    headings: np.ndarray,
    n_steps: int,
    step: float,
    turn_sd: float,
    drift: np.ndarray | None = None,
) -> np.ndarray:
    """Random-walk curves: ``(K, n_steps + 1, 2)`` points ``(x, y)`` from ``starts`` (K, 2).

    Each step turns by ``N(0, turn_sd)`` radians (persistent curvature); an
    optional ``drift`` (K,) adds a constant turn per step (arcs).
    """
    k = len(starts)
    turns = rng.normal(0.0, turn_sd, (k, n_steps)).astype(np.float32)
    if drift is not None:
        turns += np.asarray(drift, np.float32)[:, None]
    theta = np.asarray(headings, np.float32)[:, None] + np.cumsum(turns, axis=1)
    d = np.stack([np.cos(theta), np.sin(theta)], axis=-1) * np.float32(step)
    pts = np.concatenate([np.zeros((k, 1, 2), np.float32), np.cumsum(d, axis=1)], axis=1)
    return pts + np.asarray(starts, np.float32)[:, None, :]


def draw_curves(
    shape: tuple[int, int], curves: np.ndarray, thickness: int = 1, value: int = 255
) -> np.ndarray:
    """Anti-aliased polylines (``(K, n, 2)`` points) rendered into a float32 image in ``[0, 1]``."""
    canvas = np.zeros(shape, np.uint8)
    if len(curves):
        pts = np.rint(np.asarray(curves) * _ONE).astype(np.int32)
        cv2.polylines(canvas, list(pts), False, int(value), int(thickness), cv2.LINE_AA, _SHIFT)
    return canvas.astype(np.float32) * np.float32(1 / 255)


def sample_in(rng: np.random.Generator, weight: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random pixel positions ``(xs, ys)`` drawn with probability ``∝ weight``."""
    flat = np.asarray(weight, np.float64).ravel()
    total = flat.sum()
    if n <= 0 or total <= 0:
        return np.zeros(0), np.zeros(0)
    idx = rng.choice(flat.size, size=n, p=flat / total)
    ys, xs = np.divmod(idx, weight.shape[1])
    jitter = rng.uniform(-0.5, 0.5, (2, n))
    return xs + jitter[0], ys + jitter[1]


def reticulum(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Reticular mesh in ``[0, 1]``: thin bright lines along the zero-crossings of band-passed noise."""
    a = smooth_noise(rng, shape, 7.0 * scale)
    b = smooth_noise(rng, shape, 3.5 * scale)
    mesh = np.exp(-((a / 0.22) ** 2)) + 0.6 * np.exp(-((b / 0.25) ** 2))
    return np.clip(mesh / 1.3, 0, 1).astype(np.float32)


def radial_filaments(
    rng: np.random.Generator, geom: CellGeometry, density: float = 1.0, thickness: int = 1
) -> np.ndarray:
    """Microtubule-like filaments from the MTOC and the nuclear rim, curving out to the cell edge."""
    s = geom.scale
    area = float(geom.cyto.sum())
    k = int(np.clip(density * area / (150.0 * s * s), 12, 600))
    n_steps = max(int(geom.nuc_radius * 3.2 / (4.0 * s)), 6)
    # a quarter from the MTOC, the rest from points around the nucleus
    k0 = k // 4
    rim = (geom.dnuc > 1) & (geom.dnuc < 25 * s) & geom.cell
    xs, ys = sample_in(rng, rim, k - k0)
    starts = np.concatenate([np.repeat(geom.mtoc[None], k0, 0), np.stack([xs, ys], 1)], 0)
    starts = starts + rng.normal(0, 2 * s, starts.shape)
    away = np.arctan2(starts[:, 1] - geom.nuc_center[1], starts[:, 0] - geom.nuc_center[0])
    headings = np.where(np.arange(k) < k0, rng.uniform(-np.pi, np.pi, k), away + rng.normal(0, 0.9, k))
    curves = walks(rng, starts, headings, n_steps, 4.0 * s, 0.11, rng.normal(0, 0.02, k))
    out = np.zeros(geom.shape, np.float32)
    for part, value in zip(np.array_split(curves, 3), (255, 170, 100), strict=True):
        out = np.maximum(out, draw_curves(geom.shape, part, thickness, value))
    return out


# --------------------------------------------------------------------------- green patterns
Pattern = Callable[[np.random.Generator, CellGeometry, dict], np.ndarray]


def _nucleoli_map(geom: CellGeometry, grow: float = 1.0) -> np.ndarray:
    out = np.zeros(geom.shape, np.float32)
    for x, y, r in geom.nucleoli:
        cv2.circle(
            out,
            (int(round(x * _ONE)), int(round(y * _ONE))),
            int(r * grow * _ONE),
            1.0,
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )
    return out * geom.nucleus


def p_nucleoplasm(rng, geom, shared):
    fine = smooth_noise(rng, geom.shape, max(1.5 * geom.scale, 1.0)).clip(-2, 2)
    coarse = smooth_noise(rng, geom.shape, 8.0 * geom.scale).clip(-2, 2)
    tex = np.clip(0.65 + 0.15 * fine + 0.12 * coarse, 0.2, 1.0)
    return geom.nuc_soft * tex * (1 - 0.7 * _nucleoli_map(geom))


def p_nuclear_membrane(rng, geom, shared):
    inside = cv2.distanceTransform(geom.nucleus.astype(np.uint8), cv2.DIST_L2, 3)
    signed = np.where(geom.nucleus, inside, -geom.dnuc)
    w = max(1.6 * geom.scale, 1.0)
    ring = np.exp(-((signed - 0.5 * w) ** 2) / (2 * w * w))
    return ring * (0.75 + 0.25 * np.clip(smooth_noise(rng, geom.shape, 4 * geom.scale), -2, 2) / 2)


def p_nucleoli(rng, geom, shared):
    m = cv2.GaussianBlur(_nucleoli_map(geom), (0, 0), 0.8 * geom.scale)
    return m * (0.85 + 0.15 * smooth_noise(rng, geom.shape, 1.5 * geom.scale).clip(-1, 1))


def p_fibrillar_center(rng, geom, shared):
    region = _nucleoli_map(geom, 0.9)
    n = max(4, int(len(geom.nucleoli) * rng.integers(4, 9)))
    xs, ys = sample_in(rng, region, n)
    return (
        splat(geom.shape, xs, ys, rng.uniform(0.7, 1.0, len(xs)), max(1.0 * geom.scale, 0.8)) * geom.nucleus
    )


def p_speckles(rng, geom, shared):
    s = geom.scale
    inner = geom.nucleus & (_nucleoli_map(geom) < 0.5)
    n = int(np.clip(inner.sum() / (140 * s * s), 12, 60))
    xs, ys = sample_in(rng, inner, n)
    blobs = splat(geom.shape, xs, ys, rng.uniform(0.5, 1.0, len(xs)), max(2.2 * s, 1.0))
    irregular = np.clip(blobs * (1 + 0.5 * smooth_noise(rng, geom.shape, 1.5 * s)), 0, None)
    return np.clip(irregular, 0, 1) + 0.15 * geom.nuc_soft


def p_nuclear_bodies(rng, geom, shared):
    inner = geom.nucleus & (geom.dnuc == 0)
    xs, ys = sample_in(rng, inner.astype(np.float32), int(rng.integers(2, 9)))
    return (
        splat(geom.shape, xs, ys, rng.uniform(0.7, 1.0, len(xs)), max(1.5 * geom.scale, 1.0)) * geom.nuc_soft
    )


def p_er(rng, geom, shared):
    return shared["er"] * (1.0 - 0.9 * geom.nuc_soft)


def _cap(geom: CellGeometry, width: float, half_angle: float) -> np.ndarray:
    """Perinuclear region on the MTOC side: within ``width`` of the nucleus, angle window."""
    h, w = geom.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = geom.nuc_center
    ang = np.arctan2(yy - cy, xx - cx)
    phi = np.arctan2(geom.mtoc[1] - cy, geom.mtoc[0] - cx)
    dang = np.abs(np.angle(np.exp(1j * (ang - phi))))
    window = np.clip((half_angle - dang) / 0.3 + 0.5, 0, 1)
    band = np.clip(1 - geom.dnuc / width, 0, 1) * (geom.dnuc > 0)
    return (window * band * geom.cell).astype(np.float32)


def p_golgi(rng, geom, shared):
    s = geom.scale
    cap = _cap(geom, rng.uniform(14, 24) * s, rng.uniform(0.6, 1.1))
    xs, ys = sample_in(rng, cap, 40)
    blobs = splat(geom.shape, xs, ys, rng.uniform(0.4, 0.8, len(xs)), max(2.5 * s, 1.0))
    ribbon = np.clip(smooth_noise(rng, geom.shape, 2.0 * s) + 0.3, 0, 1.5) * cap
    return np.clip(0.6 * blobs + 0.7 * ribbon, 0, 1)


def p_intermediate_filaments(rng, geom, shared):
    s = geom.scale
    area = float(geom.cyto.sum())
    k = int(np.clip(area / (500.0 * s * s), 10, 200))
    cage = (geom.dnuc > 2 * s) & (geom.dnuc < 20 * s) & geom.cell
    xs, ys = sample_in(rng, 0.5 * geom.cyto + 2.0 * cage, k)
    headings = rng.uniform(-np.pi, np.pi, k)
    drift = rng.normal(0, 0.04, k)
    n_steps = max(int(geom.nuc_radius * 3 / (3.0 * s)), 8)
    curves = walks(rng, np.stack([xs, ys], 1), headings, n_steps, 3.0 * s, 0.16, drift)
    fil = draw_curves(geom.shape, curves, thickness=2 if s >= 1.5 else 1)
    return np.clip(fil, 0, 1) * geom.soft * (1 - 0.8 * geom.nuc_soft)


def p_actin(rng, geom, shared):
    s = geom.scale
    h, w = geom.shape
    k = int(np.clip(np.sqrt(float(geom.cell.sum())) / (4.0 * np.sqrt(s)), 8, 60))
    theta = geom.axis + rng.normal(0, 0.12, k)
    length = float(np.hypot(h, w))
    cx, cy = geom.nuc_center
    off = rng.uniform(-0.5, 0.5, k) * length * 0.7
    px, py = cx - np.sin(theta) * off, cy + np.cos(theta) * off
    starts = np.stack([px - np.cos(theta) * length / 2, py - np.sin(theta) * length / 2], 1)
    curves = walks(rng, starts, theta, 16, length / 16, 0.005)
    fibres = draw_curves(geom.shape, curves, thickness=2 if s >= 1.0 else 1)
    fibres *= rng.uniform(0.4, 1.0, geom.shape).astype(np.float32) ** 0.3
    cortex = np.exp(-geom.dedge / (2.5 * s)) * geom.cell
    return np.clip(fibres * (geom.dedge > 1) + 0.6 * cortex, 0, 1) * geom.soft * (1 - 0.6 * geom.nuc_soft)


def p_microtubules(rng, geom, shared):
    return shared["mt"] * (1.0 - 0.7 * geom.nuc_soft)


def p_spindle(rng, geom, shared):
    if geom.poles is None:  # not mitotic: a midbody-like bundle between MTOC and nucleus
        raise ValueError("mitotic spindle pattern needs a mitotic cell")
    s = geom.scale
    plate = geom.nucleus
    out = np.zeros(geom.shape, np.float32)
    for pole in geom.poles:
        xs, ys = sample_in(rng, plate.astype(np.float32), 40)
        ends = np.stack([xs, ys], 1)
        t = np.linspace(0, 1, 8, dtype=np.float32)[None, :, None]
        curves = pole[None, None, :] * (1 - t) + ends[:, None, :] * t
        out = np.maximum(out, draw_curves(geom.shape, curves, 1))
    poles = splat(geom.shape, geom.poles[:, 0], geom.poles[:, 1], 1.0, 2.5 * s)
    return np.clip(cv2.GaussianBlur(out, (0, 0), 0.7) * 1.4 + poles, 0, 1)


def p_centrosome(rng, geom, shared):
    n = int(rng.integers(1, 3))
    xs = geom.mtoc[0] + rng.normal(0, 2.5 * geom.scale, n)
    ys = geom.mtoc[1] + rng.normal(0, 2.5 * geom.scale, n)
    return splat(geom.shape, xs, ys, 1.0, max(2.0 * geom.scale, 1.0))


def p_plasma_membrane(rng, geom, shared):
    s = geom.scale
    rim = np.exp(-np.maximum(geom.dedge - 1, 0) / (1.8 * s)) * geom.cell
    speck = 0.7 + 0.3 * smooth_noise(rng, geom.shape, 2 * s).clip(-1, 1)
    return np.clip(rim * speck + 0.08 * geom.cyto, 0, 1)


def p_mitochondria(rng, geom, shared):
    s = geom.scale
    weight = geom.cyto * (1.0 - 0.7 * geom.radial) ** 1.5
    k = int(np.clip(float(geom.cyto.sum()) / (70.0 * s * s), 30, 2000))
    xs, ys = sample_in(rng, weight, k)
    curves = walks(rng, np.stack([xs, ys], 1), rng.uniform(-np.pi, np.pi, k), 4, 1.8 * s, 0.4)
    fil = draw_curves(geom.shape, curves, thickness=2 if s >= 1.5 else 1)
    return fil * rng.uniform(0.5, 1.0) * geom.soft


def p_aggresome(rng, geom, shared):
    s = geom.scale
    r = rng.uniform(11, 19) * s
    phi = np.arctan2(geom.mtoc[1] - geom.nuc_center[1], geom.mtoc[0] - geom.nuc_center[0])
    cx, cy = geom.mtoc + np.array([np.cos(phi), np.sin(phi)]) * r * 0.8
    h, w = geom.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.hypot(xx - cx, yy - cy) / r + 0.15 * smooth_noise(rng, geom.shape, 0.6 * r)
    blob = np.clip((1.0 - d) * 4, 0, 1) * (0.85 + 0.15 * smooth_noise(rng, geom.shape, 2 * s).clip(-1, 1))
    return blob * geom.cell * (1 - geom.nucleus)


def p_cytosol(rng, geom, shared):
    body = (1.0 - 0.5 * geom.radial) * geom.soft * (1 - 0.9 * geom.nuc_soft)
    return body * (0.8 + 0.2 * smooth_noise(rng, geom.shape, 6 * geom.scale).clip(-1, 1))


def p_vesicles(rng, geom, shared):
    s = geom.scale
    k = int(np.clip(float(geom.cyto.sum()) / (250.0 * s * s), 20, 800))
    xs, ys = sample_in(rng, geom.cyto * (1.2 - 0.6 * geom.radial), k)
    return np.clip(splat(geom.shape, xs, ys, rng.uniform(0.4, 1.0, len(xs)), max(1.3 * s, 0.8)), 0, 1)


def p_negative(rng, geom, shared):
    return np.zeros(geom.shape, np.float32)


PATTERNS: dict[int, Pattern] = {
    0: p_nucleoplasm,
    1: p_nuclear_membrane,
    2: p_nucleoli,
    3: p_fibrillar_center,
    4: p_speckles,
    5: p_nuclear_bodies,
    6: p_er,
    7: p_golgi,
    8: p_intermediate_filaments,
    9: p_actin,
    10: p_microtubules,
    11: p_spindle,
    12: p_centrosome,
    13: p_plasma_membrane,
    14: p_mitochondria,
    15: p_aggresome,
    16: p_cytosol,
    17: p_vesicles,
    18: p_negative,
}
"""Green pattern of each HPA 2021 class id: ``fn(rng, geom, shared) -> float32 bbox array``.

``shared`` holds the cell's ``"er"`` and ``"mt"`` (yellow/red structure) maps,
which the ER and microtubule patterns follow.
"""
