"""Score a 2021 submission against per-cell ground truth: mAP at IoU 0.6, image-level F1.

The metric is the one the competition organisers used (the Open Images
instance-segmentation evaluator, IoU threshold 0.6), re-implemented here:

* Per class ``c`` and per image, the submission's detections of ``c`` are taken
  by decreasing confidence (ties keep file order) and each is matched to the
  true cell of class ``c`` with the highest IoU among those not matched yet; it
  is a true positive when that IoU is >= 0.6, else a false positive. (True
  cells do not overlap, so this equals the evaluator's "best overlapping cell,
  false positive if already taken".)
* **Default mode** (as the organisers' evaluator): detections of a class that
  is not among the image's true labels (the union of its cells' labels) are
  ignored. **Strict mode**: they count as false positives.
* Over all images, detections are sorted by confidence (stable), precision and
  recall (over the number of true cells of ``c``) are accumulated, precision is
  made non-increasing from the right and AP = sum over recall steps of
  ``delta recall x precision`` (Open Images / PASCAL VOC 2010+ AP).
* mAP = mean AP over classes that have at least one true cell.

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
from hpacell.classifier.scoring.rle import decode_counts, encode_mask_cells
from hpacell.classifier.scoring.submission import ImagePrediction, SubmissionError, read_submission
from hpacell.segmentation.io import CELLMASK_SUFFIX, read_mask
from hpacell.utils.errors import HpacellError
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
    """Ground truth from a CSV ``ID,ImageWidth,ImageHeight,cell,Label,mask``."""
    path = Path(path)
    if not path.is_file():
        raise TruthError(f"{path}: truth file not found")
    table = pd.read_csv(path, dtype={"ID": str, "Label": str, "mask": str}, keep_default_na=False)
    missing = set(TRUTH_CSV_HEADER) - set(table.columns)
    if missing:
        raise TruthError(
            f"{path}: missing column(s) {sorted(missing)}; expected {','.join(TRUTH_CSV_HEADER)}"
        )
    out = []
    for image_id, rows in table.groupby("ID", sort=True):
        sizes = rows[["ImageWidth", "ImageHeight"]].drop_duplicates()
        if len(sizes) != 1:
            raise TruthError(f"{path}: image {image_id} has several sizes")
        img = TruthImage(str(image_id), int(sizes.iloc[0, 0]), int(sizes.iloc[0, 1]))
        for cell, label, m in zip(rows["cell"], rows["Label"], rows["mask"], strict=True):
            where = f"{path}: image {image_id} cell {cell}"
            try:
                decode_counts(m)
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


# --------------------------------------------------------------------------- evaluation
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
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-ready dict of every figure (curves left out)."""

        def f(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return {
            "mAP": f(self.map),
            "mAP_strict": f(self.map_strict),
            "iou_threshold": IOU_THRESHOLD,
            "n_images": self.n_images,
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
        lines.append(f"mAP_strict={self.map_strict:.6f}")
        return "\n".join(lines)


def _rles(masks: list[str], height: int, width: int) -> list[dict]:
    return [{"size": [height, width], "counts": decode_counts(m)} for m in masks]


def evaluate(
    submission: list[ImagePrediction],
    truth: list[TruthImage],
    classes: list[str] | tuple[str, ...] = HPA2021.classes,
    threshold: float = 0.5,
    iou_threshold: float = IOU_THRESHOLD,
) -> Evaluation:
    """Score ``submission`` against ``truth`` (see the module docstring for the rules).

    Images of the submission not in the truth are ignored (noted); truth images
    missing from the submission count as all cells missed.

    Raises
    ------
    ValueError
        If a submitted image's size differs from its truth's or a class id is out of range.
    """
    C = len(classes)
    sub = {s.image_id: s for s in submission}
    notes: list[str] = []
    extra = sorted(set(sub) - {t.image_id for t in truth})
    if extra:
        notes.append(f"{len(extra)} submitted image(s) without ground truth ignored")
    absent = [t.image_id for t in truth if t.image_id not in sub]
    if absent:
        notes.append(f"{len(absent)} truth image(s) missing from the submission (all their cells missed)")

    scores: list[list[float]] = [[] for _ in range(C)]
    hits: list[list[bool]] = [[] for _ in range(C)]
    outside: list[list[bool]] = [[] for _ in range(C)]  # class not among the image's true labels
    n_true = np.zeros(C, np.int64)
    n_det = np.zeros(C, np.int64)
    confusion = np.zeros((C, C + 1), np.int64)
    y_true = np.zeros((len(truth), C), np.uint8)
    y_pred = np.zeros((len(truth), C), np.uint8)

    for i, t in enumerate(tqdm(truth, desc="evaluate", disable=None)):
        labels = [np.asarray(lab, np.int64) for lab in t.labels]
        for lab in labels:
            n_true[lab] += 1
        image_labels = t.image_labels
        y_true[i, sorted(image_labels)] = 1
        s = sub.get(t.image_id)
        if s is None or not len(s):
            for lab in labels:
                confusion[lab, C] += 1
            continue
        if (s.width, s.height) != (t.width, t.height):
            raise SubmissionError(
                f"image {t.image_id}: submitted size {s.width}x{s.height} != truth {t.width}x{t.height}"
            )
        cls = np.asarray(s.classes, np.int64)
        conf = np.asarray(s.confidences, np.float64)
        if cls.min() < 0 or cls.max() >= C:
            raise SubmissionError(f"image {t.image_id}: class id out of range 0..{C - 1}")
        uniq: dict[str, int] = {}
        det_mask = np.array([uniq.setdefault(m, len(uniq)) for m in s.masks], np.int64)
        if t.masks:
            iou = coco_mask.iou(
                _rles(list(uniq), t.height, t.width), _rles(t.masks, t.height, t.width), [0] * len(t.masks)
            )
            iou = np.asarray(iou, np.float64).reshape(len(uniq), len(t.masks))
        else:
            iou = np.zeros((len(uniq), 0))
        y_pred[i, np.unique(cls[conf >= threshold])] = 1
        for c in np.unique(cls):
            sel = np.flatnonzero(cls == c)
            sel = sel[np.argsort(-conf[sel], kind="stable")]
            true_cells = np.flatnonzero([c in set(lab.tolist()) for lab in labels])
            free = np.ones(true_cells.size, bool)
            is_out = c not in image_labels
            n_det[c] += sel.size
            for d in sel:
                ok = False
                if true_cells.size:
                    ious = np.where(free, iou[det_mask[d], true_cells], -1.0)
                    j = int(np.argmax(ious))
                    if ious[j] >= iou_threshold:
                        free[j] = False
                        ok = True
                scores[c].append(conf[d])
                hits[c].append(ok)
                outside[c].append(is_out)
        # Confusion: each true cell's best-overlapping detected mask and that mask's top class.
        top_class = np.full(len(uniq), -1, np.int64)
        top_conf = np.full(len(uniq), -np.inf)
        for d in np.argsort(-conf, kind="stable"):
            if conf[d] > top_conf[det_mask[d]]:
                top_conf[det_mask[d]], top_class[det_mask[d]] = conf[d], cls[d]
        for g, lab in enumerate(labels):
            if not lab.size:
                continue
            best = int(np.argmax(iou[:, g])) if len(uniq) else -1
            target = top_class[best] if best >= 0 and iou[best, g] >= iou_threshold else C
            confusion[lab, target] += 1

    ap = np.full(C, np.nan)
    ap_strict = np.full(C, np.nan)
    curves: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for c in range(C):
        sc, h, o = np.asarray(scores[c]), np.asarray(hits[c], bool), np.asarray(outside[c], bool)
        ap_strict[c], _, _ = average_precision(sc, h, int(n_true[c]))
        ap[c], p, r = average_precision(sc[~o], h[~o], int(n_true[c]))
        if n_true[c]:
            curves[c] = (p, r)
    with np.errstate(all="ignore"):
        m = float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
        ms = float(np.nanmean(ap_strict)) if np.isfinite(ap_strict).any() else float("nan")
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
        notes=notes,
    )


def evaluate_files(
    submission_path: str | os.PathLike,
    truth_path: str | os.PathLike,
    taxonomy: Taxonomy = HPA2021,
    threshold: float = 0.5,
) -> Evaluation:
    """:func:`evaluate` of a submission file against a truth folder or CSV."""
    return evaluate(
        read_submission(submission_path), read_truth(truth_path, taxonomy), taxonomy.classes, threshold
    )
