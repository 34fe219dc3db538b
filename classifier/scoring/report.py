"""Pictures of a prediction for a person to look at (matplotlib figures saved as PNG, no pyplot).

* :func:`plot_pr_curves`, :func:`plot_ap_bars`: from an :class:`~.evaluate.Evaluation`.
* :func:`class_montages`: per class, the crops of the top-scoring cells (HPA
  colour composite, :func:`hpacell.utils.render.composite`).
* :func:`image_overlays`: a few images with every cell outlined and tinted by
  its top class, with a legend.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from hpacell.segmentation.io import read_image_set, read_mask, write_png
from hpacell.utils.errors import InputError
from hpacell.utils.files import atomic_path
from hpacell.utils.render import composite, draw_outlines

log = logging.getLogger(__name__)


def class_colors(n: int) -> np.ndarray:
    """``(n, 3)`` uint8 distinct colours (tab20)."""
    cmap = matplotlib.colormaps["tab20"]
    return (np.array([cmap(i % 20)[:3] for i in range(n)]) * 255).astype(np.uint8)


def _figure(w: float, h: float) -> tuple[Figure, object]:
    fig = Figure(figsize=(w, h))  # no pyplot: no global state, no GUI backend (PNG via Agg)
    return fig, fig.subplots()


def _save(fig: Figure, path: Path) -> Path:
    tmp, final = atomic_path(path)
    try:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def plot_pr_curves(evaluation, path: str | os.PathLike) -> Path:
    """Precision-recall curve of every class with true cells (default mode), AP in the legend."""
    fig, ax = _figure(9, 7)
    colors = class_colors(len(evaluation.classes)) / 255
    for c, (p, r) in sorted(evaluation.curves.items()):
        if not len(r):
            ax.plot([], [], color=colors[c], label=f"{c} {evaluation.classes[c][:22]} (no det.)")
            continue
        ax.step(
            np.r_[0, r],
            np.r_[p[0], p],
            where="post",
            color=colors[c],
            label=f"{c} {evaluation.classes[c][:22]} AP={evaluation.ap[c]:.2f}",
        )
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"Cell precision-recall at IoU 0.6 — mAP={evaluation.map:.3f}",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    return _save(fig, Path(path))


def plot_ap_bars(evaluation, path: str | os.PathLike) -> Path:
    """Per-class AP bars, default and strict mode, with the number of true cells."""
    C = len(evaluation.classes)
    fig, ax = _figure(12, 5)
    x = np.arange(C)
    ap = np.nan_to_num(evaluation.ap, nan=0.0)
    aps = np.nan_to_num(evaluation.ap_strict, nan=0.0)
    ax.bar(x - 0.2, ap, 0.4, label=f"AP (mAP={evaluation.map:.3f})")
    ax.bar(x + 0.2, aps, 0.4, label=f"AP strict (mAP={evaluation.map_strict:.3f})")
    for c in range(C):
        ax.text(c, max(ap[c], aps[c]) + 0.01, f"n={int(evaluation.n_true[c])}", ha="center", fontsize=7)
    ax.set_xticks(
        x, [f"{c} {n[:18]}" for c, n in enumerate(evaluation.classes)], rotation=60, ha="right", fontsize=8
    )
    ax.set(ylabel="AP at IoU 0.6", ylim=(0, 1.1), title="Per-class AP (classes without true cells: no bar)")
    ax.legend()
    return _save(fig, Path(path))


def _crop_rgb(crop: np.ndarray) -> np.ndarray:
    return composite(np.asarray(crop), percentile=99.8)


def class_montages(
    cell_scores: pd.DataFrame,
    crops: Sequence[np.ndarray] | np.ndarray,
    classes: Sequence[str],
    out_dir: str | os.PathLike,
    n: int = 16,
    tile: int = 96,
) -> list[Path]:
    """One PNG per class: the ``n`` cells with the highest probability of that class.

    Parameters
    ----------
    cell_scores : DataFrame
        Rows aligned with ``crops``; one column per class id (``"0"``, ...).
    crops : indexable of (4, S, S) uint8
        The cell crops (e.g. a cell dataset's shards).
    """
    import cv2

    out_dir = Path(out_dir)
    written = []
    cols = int(np.ceil(np.sqrt(n)))
    for c, name in enumerate(classes):
        if str(c) not in cell_scores.columns:
            continue
        p = cell_scores[str(c)].to_numpy()
        top = np.argsort(-p, kind="stable")[:n]
        rows = int(np.ceil(len(top) / cols)) or 1
        head = 18
        canvas = np.zeros((head + rows * (tile + 14), cols * tile, 3), np.uint8)
        cv2.putText(
            canvas,
            f"{c} {name}: top {len(top)} cells"[:60],
            (2, 13),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (255, 255, 0),
            1,
            cv2.LINE_AA,
        )
        for k, i in enumerate(top):
            rgb = cv2.resize(_crop_rgb(crops[i]), (tile, tile), interpolation=cv2.INTER_AREA)
            y, x = head + (k // cols) * (tile + 14), (k % cols) * tile
            canvas[y : y + tile, x : x + tile] = rgb
            cv2.putText(
                canvas,
                f"{p[i]:.2f}",
                (x + 2, y + tile + 11),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
        safe = "".join(ch if ch.isalnum() else "_" for ch in name)
        written.append(write_png(out_dir / f"montage_{c:02d}_{safe}.png", canvas))
    return written


def image_overlays(
    cell_scores: pd.DataFrame,
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    classes: Sequence[str],
    out_dir: str | os.PathLike,
    image_ids: Sequence[str] | None = None,
    n_images: int = 4,
    max_side: int = 1024,
) -> list[Path]:
    """Overlays of a few images: each cell outlined and tinted by its top class, a legend beside."""
    import cv2

    out_dir = Path(out_dir)
    colors = class_colors(len(classes))
    ids = list(image_ids) if image_ids is not None else sorted(cell_scores["image_id"].astype(str).unique())
    written = []
    cls_cols = [str(c) for c in range(len(classes)) if str(c) in cell_scores.columns]
    for image_id in ids[:n_images]:
        try:
            image = read_image_set(images_dir, image_id)
            mask = read_mask(Path(masks_dir) / f"{image_id}_cellmask.png")
        except (OSError, ValueError) as e:
            log.warning("overlay of %s skipped: %s", image_id, e)
            continue
        rows = cell_scores[cell_scores["image_id"].astype(str) == image_id]
        probs = rows[cls_cols].to_numpy()
        top = probs.argmax(1)
        lut = np.zeros((int(mask.max()) + 1, 3), np.uint8)
        has = np.zeros(int(mask.max()) + 1, bool)
        for cell, k in zip(rows["cell"].astype(int), top, strict=True):
            if cell < lut.shape[0]:
                lut[cell], has[cell] = colors[k], True
        rgb = composite(image)
        tint = lut[mask]
        sel = has[mask]
        rgb[sel] = (0.6 * rgb[sel] + 0.4 * tint[sel]).astype(np.uint8)
        rgb = draw_outlines(rgb, mask, color=(255, 255, 255), thickness=max(1, mask.shape[0] // 512))
        scale = min(1.0, max_side / max(rgb.shape[:2]))
        if scale < 1:
            rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        fig, ax = _figure(10, 10 * rgb.shape[0] / rgb.shape[1])
        ax.imshow(rgb)
        ax.set_axis_off()
        if {"x0", "y0", "x1", "y1"} <= set(rows.columns):  # top class id at each cell's box centre
            cx = (rows["x0"].to_numpy() + rows["x1"].to_numpy()) / 2 * scale
            cy = (rows["y0"].to_numpy() + rows["y1"].to_numpy()) / 2 * scale
            for x, y, k in zip(cx, cy, top, strict=True):
                ax.text(
                    x,
                    y,
                    str(k),
                    color="white",
                    fontsize=9,
                    ha="center",
                    va="center",
                    weight="bold",
                    bbox={"facecolor": colors[k] / 255, "alpha": 0.8, "pad": 1, "linewidth": 0},
                )
        present = sorted(set(top.tolist()))
        handles = [Rectangle((0, 0), 1, 1, color=colors[k] / 255) for k in present]
        ax.legend(
            handles,
            [f"{k} {classes[k]}" for k in present],
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
            fontsize=8,
            title="top class",
        )
        ax.set_title(f"{image_id}: {len(rows)} cells", fontsize=9)
        written.append(_save(fig, out_dir / f"overlay_{image_id}.png"))
    return written


def make_report(
    out: str | os.PathLike,
    cells_dir: str | os.PathLike,
    table: pd.DataFrame,
    classes: Sequence[str],
    images_dir: str | os.PathLike | None = None,
    masks_dir: str | os.PathLike | None = None,
    n_montage: int = 16,
    n_overlays: int = 4,
) -> list[Path]:
    """``out/report/``: per-class montages of the top cells, overlays of a few images (PNG)."""
    from hpacell.cellcrops.dataset import CellDataset

    report = Path(out) / "report"
    ds = CellDataset(cells_dir)
    pos = pd.Series(np.arange(len(ds.table)), index=ds.table["cell_uid"].astype(str))
    rows = pos.reindex(table["cell_uid"].astype(str)).to_numpy()
    if np.isnan(rows.astype(float)).any():
        raise InputError(f"{cells_dir}: cell scores name cells that are not in the dataset")

    class _Crops:
        def __getitem__(self, i: int) -> np.ndarray:
            return ds.crop(int(rows[i]))

    written = class_montages(
        table, _Crops(), list(classes)[: sum(c.isdigit() for c in table.columns)], report, n=n_montage
    )
    if images_dir is not None and masks_dir is not None:
        written += image_overlays(table, images_dir, masks_dir, classes, report, n_images=n_overlays)
    return written
