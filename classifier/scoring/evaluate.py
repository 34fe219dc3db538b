"""Score a 2021 submission against per-cell ground truth: mAP at IoU 0.6, image-level F1.

The rules are those of the organisers' evaluator (the Open Images challenge
evaluator, IoU threshold 0.6), re-implemented here:

* Truth is one entry per (cell, label); an image's labels are the union of its
  cells' labels. Submitted images without truth are ignored; a truth image
  without detections misses all its cells.
* A detection whose mask is empty is dropped (its box is invalid), in both modes.
* **IoU** (``match``): ``"mask"`` compares the masks (Kaggle described its
  leaderboard metric as the Open Images *instance-segmentation* evaluation);
  ``"box"`` compares each mask's enclosing box ``[ymin, xmin, ymax + 1, xmax + 1]``
  divided by the image height/width (the organisers' published re-scoring runs
  the evaluator with instance masks off). Truth boxes come from the truth masks
  the same way.
* Per image and class ``c``: the detections of ``c`` by decreasing confidence;
  each takes the true cell of ``c`` with the highest IoU among **all** true
  cells of ``c`` (ties: the first listed). IoU >= 0.6 and that cell not taken
  yet: true positive; already taken: false positive (no fallback to the
  next-best cell); IoU < 0.6: false positive.
* A detection of a class that is not among the image's labels is dropped before
  matching (``mAP``); ``mAP_strict`` counts it as a false positive instead.
* Per class over all images: detections by confidence, precision and recall
  (over the number of true cells of ``c``), precision made non-increasing from
  the right, AP = sum over recall steps of ``delta recall x precision`` (VOC
  style). mAP = mean AP over classes with at least one true cell.
* **Ties** in confidence keep the submission's file order (rows, then triples),
  within an image and over all images. The organisers' code orders ties however
  numpy's (unstable) sort leaves them, which differs between numpy versions.

Every row is checked before scoring (sizes, classes, confidences, masks: see
:func:`~hpacell.classifier.scoring.submission.check_prediction`); each distinct
mask string is decoded once and mask IoUs are computed only for pairs whose
boxes overlap.

Ground truth comes from a folder ``TRUTH/masks/<ID>_cellmask.png`` +
``TRUTH/cells.csv`` (``ID,cell,Label``, labels ``|``-separated) or from a CSV of
encoded masks ``ID,ImageWidth,ImageHeight,cell,Label,mask`` (``mask`` as in the
submission; see :func:`write_truth_csv`).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools import mask as coco_mask
from tqdm.auto import tqdm

from hpacell.cellcrops.labels import HPA2021, Taxonomy, format_labels, parse_label_string
from hpacell.classifier.metrics import f1_report
from hpacell.classifier.scoring.rle import MaskInfo, encode_mask_cells, mask_info
from hpacell.classifier.scoring.submission import (
    ImagePrediction,
    SubmissionError,
    check_prediction,
    read_submission,
)
from hpacell.segmentation.io import CELLMASK_SUFFIX, read_mask
from hpacell.utils.errors import HpacellError, InputError
from hpacell.utils.files import atomic_write_bytes

log = logging.getLogger(__name__)

IOU_THRESHOLD = 0.6
TRUTH_CSV_HEADER = ("ID", "ImageWidth", "ImageHeight", "cell", "Label", "mask")


class TruthError(HpacellError, ValueError):
    """Malformed ground truth; the message names the file and the problem."""


@dataclass
class TruthImage:
    """True cells of one image: cell ids, label sets and encoded masks."""

    image_id: str
    width: int
    height: int
    cells: list[int] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    checked: list[MaskInfo] | None = None  # each mask checked and decoded (see truth_infos)

    @property
    def image_labels(self) -> set[int]:
        return {k for lab in self.labels for k in lab}


# --------------------------------------------------------------------------- ground truth
def _parse_cell_labels(text: str, where: str, taxonomy: Taxonomy) -> list[int]:
    if not str(text).strip():
        return []
    try:
        return parse_label_string(str(text), taxonomy)
    except ValueError as e:
        raise TruthError(f"{where}: {e}") from None


def read_truth_folder(folder: str | os.PathLike, taxonomy: Taxonomy = HPA2021) -> list[TruthImage]:
    """Ground truth from ``folder/cells.csv`` (``ID,cell,Label``) and ``folder/masks/``.

    Cells of a mask without a row in ``cells.csv`` carry no label (they are no
    true cell of any class); a row whose cell is absent from the mask is an error.
    """
    folder = Path(folder)
    table_path = folder / "cells.csv"
    if not table_path.is_file():
        raise TruthError(f"{table_path}: truth table not found (expected ID,cell,Label)")
    from hpacell.cellcrops.labels import read_cells_csv

    table = read_cells_csv(table_path, taxonomy)
    out = []
    for image_id, rows in tqdm(sorted(table.items()), desc="truth", disable=None):
        mask_path = folder / "masks" / f"{image_id}{CELLMASK_SUFFIX}"
        mask = read_mask(mask_path)
        wanted = list(rows)
        try:
            encoded = encode_mask_cells(mask, wanted)
        except KeyError as e:
            raise TruthError(f"{mask_path}: {e.args[0]} (listed in {table_path})") from None
        img = TruthImage(str(image_id), mask.shape[1], mask.shape[0])
        for cell, label in rows.items():
            img.cells.append(cell)
            img.labels.append(label)
            img.masks.append(encoded[cell])
        out.append(img)
    return out


def read_truth_csv(path: str | os.PathLike, taxonomy: Taxonomy = HPA2021) -> list[TruthImage]:
    """Ground truth from a CSV ``ID,ImageWidth,ImageHeight,cell,Label,mask``.

    Every row is checked (size, unique ``ID``+``cell``, labels, mask valid and
    covering ``ImageWidth x ImageHeight`` pixels); errors name the row.
    """
    path = Path(path)
    if not path.is_file():
        raise TruthError(f"{path}: truth file not found")
    table = pd.read_csv(
        path, dtype={"ID": str, "Label": str, "mask": str}, keep_default_na=False, encoding="utf-8-sig"
    )
    missing = set(TRUTH_CSV_HEADER) - set(table.columns)
    if missing:
        raise TruthError(
            f"{path}: missing column(s) {sorted(missing)}; expected {','.join(TRUTH_CSV_HEADER)}"
        )
    try:
        sizes = table[["ImageWidth", "ImageHeight", "cell"]].astype(np.int64)
    except (ValueError, TypeError):
        raise TruthError(f"{path}: ImageWidth, ImageHeight and cell must be integers") from None
    table[["ImageWidth", "ImageHeight", "cell"]] = sizes
    dup = table.duplicated(["ID", "cell"])
    if dup.any():
        r = int(np.flatnonzero(dup)[0])
        image_id, cell = table["ID"].iloc[r], table["cell"].iloc[r]
        raise TruthError(f"{path}: row {r + 1}: image {image_id} cell {cell} appears twice")
    table["row"] = np.arange(1, len(table) + 1)
    out = []
    for image_id, rows in table.groupby("ID", sort=True):
        dims = rows[["ImageWidth", "ImageHeight"]].drop_duplicates()
        if len(dims) != 1:
            raise TruthError(f"{path}: image {image_id} has several sizes")
        width, height = int(dims.iloc[0, 0]), int(dims.iloc[0, 1])
        if width <= 0 or height <= 0:
            raise TruthError(f"{path}: image {image_id}: bad size {width} x {height}")
        img = TruthImage(str(image_id), width, height, checked=[])
        for row, cell, label, m in zip(rows["row"], rows["cell"], rows["Label"], rows["mask"], strict=True):
            where = f"{path}: row {row} (image {image_id} cell {cell})"
            try:
                img.checked.append(mask_info(m, height, width))
            except ValueError as e:
                raise TruthError(f"{where}: {e}") from None
            img.cells.append(int(cell))
            img.labels.append(_parse_cell_labels(label, where, taxonomy))
            img.masks.append(m)
        out.append(img)
    return out


def read_truth(path: str | os.PathLike, taxonomy: Taxonomy = HPA2021) -> list[TruthImage]:
    """Ground truth from a folder (masks + cells.csv) or a truth CSV, by what ``path`` is."""
    path = Path(path)
    if path.is_dir():
        return read_truth_folder(path, taxonomy)
    return read_truth_csv(path, taxonomy)


def write_truth_csv(truth: list[TruthImage], path: str | os.PathLike, taxonomy: Taxonomy = HPA2021) -> Path:
    """Write ground truth as ``ID,ImageWidth,ImageHeight,cell,Label,mask`` (atomically)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TRUTH_CSV_HEADER)
    for img in truth:
        for cell, lab, m in zip(img.cells, img.labels, img.masks, strict=True):
            w.writerow((img.image_id, img.width, img.height, cell, format_labels(lab, taxonomy), m))
    return atomic_write_bytes(path, buf.getvalue().encode())


# --------------------------------------------------------------------------- AP
def average_precision(
    scores: np.ndarray, tp: np.ndarray, n_true: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """Open Images AP of detections ``scores`` with true-positive flags ``tp``.

    Returns ``(ap, precision, recall)`` (curves in ranked order). ``nan`` when
    ``n_true`` is 0.

    Examples
    --------
    A false positive ranked first, then two hits of two true cells:

    >>> ap, p, r = average_precision(np.array([0.9, 0.8, 0.7]), np.array([0, 1, 1]), 2)
    >>> round(ap, 4)
    0.6667
    """
    if n_true <= 0:
        return float("nan"), np.zeros(0), np.zeros(0)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.asarray(tp, dtype=bool)[order]
    ctp = np.cumsum(hits)
    cfp = np.cumsum(~hits)
    precision = ctp / np.maximum(ctp + cfp, 1)
    recall = ctp / n_true
    if not hits.size:
        return 0.0, precision, recall
    r = np.concatenate(([0.0], recall, [1.0]))
    p = np.concatenate(([0.0], precision, [0.0]))
    p = np.maximum.accumulate(p[::-1])[::-1]
    step = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[step] - r[step - 1]) * p[step])), precision, recall


# --------------------------------------------------------------------------- IoU
def normalized_boxes(infos: list[MaskInfo], height: int, width: int) -> np.ndarray:
    """``(N, 4)`` float64 boxes ``[ymin, xmin, ymax + 1, xmax + 1] / (H, W, H, W)``; zeros for empty masks."""
    out = np.zeros((len(infos), 4))
    for k, info in enumerate(infos):
        if info.box is not None:
            out[k] = info.box
    return out / np.array([height, width, height, width], np.float64)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), boxes ``[ymin, xmin, ymax, xmax]``.

    Examples
    --------
    >>> box_iou(np.array([[0.0, 0, 1, 1]]), np.array([[0.0, 0.5, 1, 1.5], [2, 2, 3, 3]])).round(4).tolist()
    [[0.3333, 0.0]]
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    h = np.maximum(0.0, np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]))
    w = np.maximum(0.0, np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]))
    inter = h * w
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def iou_matrix(det: list[MaskInfo], true: list[MaskInfo], height: int, width: int, match: str) -> np.ndarray:
    """IoU of each detected mask with each true mask: of masks (``mask``) or enclosing boxes (``box``).

    Mask IoUs (pycocotools on the compressed RLEs) are computed only for pairs
    whose boxes overlap; other pairs are 0. Empty masks have IoU 0 with everything.
    """
    out = np.zeros((len(det), len(true)))
    if not det or not true:
        return out
    bd, bt = normalized_boxes(det, height, width), normalized_boxes(true, height, width)
    if match == "box":
        return box_iou(bd, bt)
    overlap = (
        (bd[:, None, 0] < bt[None, :, 2])
        & (bt[None, :, 0] < bd[:, None, 2])
        & (bd[:, None, 1] < bt[None, :, 3])
        & (bt[None, :, 1] < bd[:, None, 3])
    )
    rows, cols = np.flatnonzero(overlap.any(1)), np.flatnonzero(overlap.any(0))
    if rows.size:
        size = [height, width]
        iou = coco_mask.iou(
            [{"size": size, "counts": det[k].counts} for k in rows],
            [{"size": size, "counts": true[k].counts} for k in cols],
            [0] * cols.size,
        )
        out[np.ix_(rows, cols)] = np.asarray(iou, np.float64).reshape(rows.size, cols.size)
        out[~overlap] = 0.0
    return out


def truth_infos(t: TruthImage) -> list[MaskInfo]:
    """Each true cell's checked mask (computed once and kept on ``t``).

    Raises
    ------
    TruthError
        If a mask is invalid or covers a different number of pixels than the image.
    """
    if t.checked is None or len(t.checked) != len(t.masks):
        checked = []
        for cell, m in zip(t.cells, t.masks, strict=True):
            try:
                checked.append(mask_info(m, t.height, t.width))
            except ValueError as e:
                raise TruthError(f"truth image {t.image_id} cell {cell}: {e}") from None
        t.checked = checked
    return t.checked


# --------------------------------------------------------------------------- evaluation
MATCH_MODES = ("mask", "box")
MATCH_SOURCES = {
    "mask": "mask IoU: Kaggle's stated leaderboard metric (Open Images instance-segmentation evaluation)",
    "box": (
        "IoU of each mask's enclosing box: the organisers' published re-scoring "
        "(HPA_SingleCellClassification_Analysis, Open Images evaluator with instance masks off)"
    ),
}
"""Which body uses each ``match`` mode."""


@dataclass
class Evaluation:
    """All figures of one evaluation (see :meth:`summary` for the JSON form)."""

    classes: list[str]
    map: float
    map_strict: float
    ap: np.ndarray
    ap_strict: np.ndarray
    n_true: np.ndarray
    n_det: np.ndarray
    macro_f1: float
    sample_f1: float
    per_class_f1: list[float]
    confusion: (
        np.ndarray
    )  # (C, C+1): true class x top predicted class of the matched detection, last = missed
    curves: dict[int, tuple[np.ndarray, np.ndarray]]  # default mode precision/recall per class
    n_images: int
    threshold: float
    match: str = "mask"
    n_empty: int = 0  # detections dropped for an empty mask
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-ready dict of every figure (curves left out)."""

        def f(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return {
            "mAP": f(self.map),
            "mAP_strict": f(self.map_strict),
            "match": self.match,
            "match_used_by": MATCH_SOURCES[self.match],
            "iou_threshold": IOU_THRESHOLD,
            "n_images": self.n_images,
            "n_empty_masks_dropped": self.n_empty,
            "image_label_threshold": self.threshold,
            "macro_f1": self.macro_f1,
            "sample_f1": self.sample_f1,
            "per_class": [
                {
                    "class": c,
                    "name": name,
                    "n_true": int(self.n_true[c]),
                    "n_det": int(self.n_det[c]),
                    "ap": f(self.ap[c]),
                    "ap_strict": f(self.ap_strict[c]),
                    "f1": float(self.per_class_f1[c]),
                }
                for c, name in enumerate(self.classes)
            ],
            "confusion": self.confusion.tolist(),
            "notes": self.notes,
        }

    def table(self) -> str:
        """Per-class table and confusion as text."""
        lines = [f"{'class':>5} {'name':<40} {'n_true':>6} {'n_det':>6} {'AP':>7} {'AP_strict':>9} {'F1':>6}"]
        for c, name in enumerate(self.classes):
            ap = "-" if np.isnan(self.ap[c]) else f"{self.ap[c]:.4f}"
            aps = "-" if np.isnan(self.ap_strict[c]) else f"{self.ap_strict[c]:.4f}"
            lines.append(
                f"{c:>5} {name[:40]:<40} {int(self.n_true[c]):>6} {int(self.n_det[c]):>6} {ap:>7} {aps:>9} "
                f"{self.per_class_f1[c]:>6.3f}"
            )
        lines.append("")
        lines.append("confusion per label (true class: top predicted class of its matched cell -> count)")
        C = len(self.classes)
        for c in range(C):
            row = self.confusion[c]
            if not row.sum():
                continue
            parts = [f"{k}:{int(row[k])}" for k in np.argsort(-row[:C], kind="stable") if row[k]]
            if row[C]:
                parts.append(f"missed:{int(row[C])}")
            lines.append(f"  {c:>2} {self.classes[c][:30]:<30} " + " ".join(parts))
        lines.append("")
        lines.append(
            f"images={self.n_images} macro_F1={self.macro_f1:.4f} sample_F1={self.sample_f1:.4f} "
            f"(image labels at confidence >= {self.threshold})"
        )
        lines.append(f"match={self.match} ({MATCH_SOURCES[self.match]})")
        lines.append(f"mAP_strict={self.map_strict:.6f}")
        return "\n".join(lines)


def _match_image(
    cls: np.ndarray,
    conf: np.ndarray,
    det_mask: np.ndarray,
    iou: np.ndarray,
    cells_of: dict[int, np.ndarray],
    iou_threshold: float,
) -> np.ndarray:
    """True-positive flag of each kept detection of one image (see the module docstring)."""
    tp = np.zeros(cls.size, bool)
    for c, cells in cells_of.items():
        sel = np.flatnonzero(cls == c)
        if not sel.size:
            continue
        sel = sel[np.argsort(-conf[sel], kind="stable")]  # ties: file order
        sub = iou[det_mask[sel]][:, cells]
        best = np.argmax(sub, axis=1)  # among all true cells of c (ties: the first listed)
        ok = np.flatnonzero(sub[np.arange(sel.size), best] >= iou_threshold)
        # a cell is taken by the first (highest ranked) detection that hits it; later ones are false positives
        _, first = np.unique(best[ok], return_index=True)
        tp[sel[ok[first]]] = True
    return tp


def evaluate(
    submission: list[ImagePrediction],
    truth: list[TruthImage],
    classes: list[str] | tuple[str, ...] = HPA2021.classes,
    threshold: float = 0.5,
    iou_threshold: float = IOU_THRESHOLD,
    match: str = "mask",
) -> Evaluation:
    """Score ``submission`` against ``truth`` (see the module docstring for the rules).

    Images of the submission not in the truth are ignored (noted); truth images
    missing from the submission count as all cells missed.

    Raises
    ------
    SubmissionError
        If a submitted image's size differs from its truth's, a class is out of
        range, a confidence is not in [0, 1] or a mask string is invalid.
    """
    if match not in MATCH_MODES:
        raise InputError(f"match must be one of {', '.join(MATCH_MODES)}, got {match!r}")
    C = len(classes)
    pos = {s.image_id: k for k, s in enumerate(submission)}
    notes: list[str] = []
    extra = sorted(set(pos) - {t.image_id for t in truth})
    if extra:
        notes.append(f"{len(extra)} submitted image(s) without ground truth ignored")
    absent = [t.image_id for t in truth if t.image_id not in pos]
    if absent:
        notes.append(f"{len(absent)} truth image(s) missing from the submission (all their cells missed)")
    # Check every scored row before any scoring.
    for t in truth:
        s = submission[pos[t.image_id]] if t.image_id in pos else None
        if s is None:
            continue
        if (s.width, s.height) != (t.width, t.height):
            where = f"{s.where}: image {t.image_id!r}" if s.where else f"image {t.image_id!r}"
            raise SubmissionError(
                f"{where}: submitted size {s.width}x{s.height} != truth {t.width}x{t.height}"
            )
        check_prediction(s, C)
        truth_infos(t)

    n_true = np.zeros(C, np.int64)
    n_det = np.zeros(C, np.int64)
    n_empty = 0
    confusion = np.zeros((C, C + 1), np.int64)
    y_true = np.zeros((len(truth), C), np.uint8)
    y_pred = np.zeros((len(truth), C), np.uint8)
    scored: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # pos, cls, conf, tp, out

    for i, t in enumerate(tqdm(truth, desc=f"evaluate ({match})", disable=None)):
        labels = [np.asarray(lab, np.int64) for lab in t.labels]
        for lab in labels:
            n_true[lab] += 1
        image_labels = t.image_labels
        y_true[i, sorted(image_labels)] = 1
        s = submission[pos[t.image_id]] if t.image_id in pos else None
        if s is None or not len(s):
            for lab in labels:
                confusion[lab, C] += 1
            continue
        cls = np.asarray(s.classes, np.int64)
        conf = np.asarray(s.confidences, np.float64)
        y_pred[i, np.unique(cls[conf >= threshold])] = 1
        uniq: dict[str, int] = {}
        det_mask = np.array([uniq.setdefault(m, len(uniq)) for m in s.masks], np.int64)
        infos = [s.checked[m] for m in uniq]
        keep = np.array([info.area > 0 for info in infos])[det_mask]  # empty masks: dropped
        n_empty += int((~keep).sum())
        cls, conf, det_mask = cls[keep], conf[keep], det_mask[keep]
        np.add.at(n_det, cls, 1)
        iou = iou_matrix(infos, truth_infos(t), t.height, t.width, match)
        cells_of = {c: np.flatnonzero([c in lab for lab in t.labels]) for c in sorted(image_labels)}
        tp = _match_image(cls, conf, det_mask, iou, cells_of, iou_threshold)
        outside = ~np.isin(cls, sorted(image_labels))
        scored.append((pos[t.image_id], cls, conf, tp, outside))
        # Confusion: each true cell's best-overlapping detected mask and that mask's top class.
        top_class = np.full(len(uniq), -1, np.int64)
        top_conf = np.full(len(uniq), -np.inf)
        for d in np.argsort(-conf, kind="stable"):
            if conf[d] > top_conf[det_mask[d]]:
                top_conf[det_mask[d]], top_class[det_mask[d]] = conf[d], cls[d]
        for g, lab in enumerate(labels):
            if not lab.size:
                continue
            col = np.where(top_class >= 0, iou[:, g], -1.0)
            best = int(np.argmax(col)) if col.size else -1
            target = top_class[best] if best >= 0 and col[best] >= iou_threshold else C
            confusion[lab, target] += 1

    # Over all images: detections in submission file order (rows, then triples), so that the
    # stable sort in average_precision breaks confidence ties by file order.
    scored.sort(key=lambda r: r[0])
    cat = [np.concatenate([r[k] for r in scored]) if scored else np.zeros(0) for k in range(1, 5)]
    all_cls, all_conf = cat[0].astype(np.int64), cat[1].astype(np.float64)
    all_tp, all_out = cat[2].astype(bool), cat[3].astype(bool)
    ap = np.full(C, np.nan)
    ap_strict = np.full(C, np.nan)
    curves: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for c in range(C):
        sel = all_cls == c
        sc, h, o = all_conf[sel], all_tp[sel], all_out[sel]
        ap_strict[c], _, _ = average_precision(sc, h, int(n_true[c]))
        ap[c], p, r = average_precision(sc[~o], h[~o], int(n_true[c]))
        if n_true[c]:
            curves[c] = (p, r)
    with np.errstate(all="ignore"):
        m = float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
        ms = float(np.nanmean(ap_strict)) if np.isfinite(ap_strict).any() else float("nan")
    if n_empty:
        notes.append(f"{n_empty} detection(s) with an empty mask dropped")
    f1 = f1_report(y_true, y_pred)
    return Evaluation(
        classes=list(classes),
        map=m,
        map_strict=ms,
        ap=ap,
        ap_strict=ap_strict,
        n_true=n_true,
        n_det=n_det,
        macro_f1=f1["macro_f1"],
        sample_f1=f1["sample_f1"],
        per_class_f1=f1["per_class_f1"],
        confusion=confusion,
        curves=curves,
        n_images=len(truth),
        threshold=threshold,
        match=match,
        n_empty=n_empty,
        notes=notes,
    )


def evaluate_files(
    submission_path: str | os.PathLike,
    truth_path: str | os.PathLike,
    taxonomy: Taxonomy = HPA2021,
    threshold: float = 0.5,
    match: str = "mask",
) -> Evaluation:
    """:func:`evaluate` of a submission file against a truth folder or CSV."""
    sub = read_submission(submission_path, n_classes=len(taxonomy.classes))
    return evaluate(sub, read_truth(truth_path, taxonomy), taxonomy.classes, threshold, match=match)
