"""The Kaggle 2021 submission CSV: build, write and parse.

Format (as ``sample_submission.csv`` of the competition)::

    ID,ImageWidth,ImageHeight,PredictionString
    <id>,2048,2048,<class> <confidence> <mask> <class> <confidence> <mask> ...

``mask`` is ``base64(zlib(COCO compressed RLE counts))`` of the full-image
binary mask of one cell (:mod:`hpacell.classifier.scoring.rle`). A cell appears once per class
it is scored for, with the same mask string. An image without cells has an
empty ``PredictionString``; every image of the ID list has a row.

:func:`read_submission` checks every row before anything is scored: sizes,
classes, confidences (finite, in [0, 1]) and every distinct mask string (valid
base64/zlib/RLE covering exactly ``ImageWidth x ImageHeight`` pixels, see
:func:`~hpacell.classifier.scoring.rle.mask_info`), each decoded once. Rows may
be of any length (no CSV field limit); a UTF-8 BOM and blank lines are accepted.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpacell.classifier.scoring.rle import MaskInfo, mask_info
from hpacell.utils.errors import HpacellError, InputError
from hpacell.utils.files import atomic_write_bytes
from hpacell.utils.tables import read_id_table

HEADER = ("ID", "ImageWidth", "ImageHeight", "PredictionString")


class SubmissionError(HpacellError, ValueError):
    """A malformed submission file; the message names the file and the row."""


@dataclass
class ImagePrediction:
    """Predictions of one image: parallel arrays of class, confidence and mask string."""

    image_id: str
    width: int
    height: int
    classes: list[int] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    where: str = ""
    """Where the row came from (``path:line``) for error messages; empty for one built in memory."""
    checked: dict[str, MaskInfo] | None = None
    """Each distinct mask string, checked and decoded (filled by :func:`check_prediction`)."""

    def __len__(self) -> int:
        return len(self.classes)


def format_confidence(value: float) -> str:
    """Confidence as short text that keeps the ranking (6 significant digits).

    Examples
    --------
    >>> format_confidence(0.123456789), format_confidence(1.0)
    ('0.123457', '1')
    """
    return format(float(value), ".6g")


def prediction_string(
    masks: Sequence[str], scores: np.ndarray, classes: Sequence[int] | None = None, min_score: float = 0.0
) -> str:
    """``PredictionString`` of one image.

    Parameters
    ----------
    masks : sequence of str
        One encoded mask per cell (each encoded once).
    scores : (n_cells, C) array
        Confidence of each cell for each class.
    classes : sequence of int, optional
        Class ids to write per cell (default: all ``C``).
    min_score : float
        Triples with a confidence below this are left out (0 keeps all).

    Examples
    --------
    >>> prediction_string(["m1", "m2"], np.array([[0.9, 0.1], [0.2, 0.8]]), classes=[1])
    '1 0.1 m1 1 0.8 m2'
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(masks):
        raise ValueError(f"scores must be (n_cells={len(masks)}, C), got {scores.shape}")
    cls = range(scores.shape[1]) if classes is None else classes
    parts: list[str] = []
    for i, m in enumerate(masks):
        for c in cls:
            s = scores[i, c]
            if s >= min_score:
                parts.append(f"{c} {format_confidence(s)} {m}")
    return " ".join(parts)


def write_submission(
    rows: Iterable[tuple[str, int, int, str]],
    path: str | os.PathLike,
    ids: Sequence[str] | None = None,
    sizes: Mapping[str, tuple[int, int]] | None = None,
) -> Path:
    """Write the submission CSV atomically.

    Parameters
    ----------
    rows : iterable of (ID, width, height, PredictionString)
    path : path
    ids : sequence of str, optional
        The required ID list and order (e.g. a sample submission's). IDs without
        a row get an empty ``PredictionString`` at the size from ``sizes``;
        rows whose ID is not listed are dropped.
    sizes : mapping ID -> (width, height), optional
        Image sizes of IDs without a row (e.g. from the sample submission).

    Raises
    ------
    ValueError
        If an ID of ``ids`` has neither a row nor a size.
    """
    by_id: dict[str, tuple[str, int, int, str]] = {}
    for r in rows:
        if r[0] in by_id:
            raise ValueError(f"image {r[0]!r} has two submission rows")
        by_id[r[0]] = r
    order = list(by_id) if ids is None else list(ids)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for image_id in order:
        if image_id in by_id:
            _, width, height, text = by_id[image_id]
        elif sizes is not None and image_id in sizes:
            (width, height), text = sizes[image_id], ""
        else:
            raise InputError(f"image {image_id!r} of the ID list has no prediction and no known size")
        w.writerow((image_id, int(width), int(height), text))
    return atomic_write_bytes(path, buf.getvalue().encode())


def read_ids(path: str | os.PathLike) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """IDs (in file order) and ``{ID: (width, height)}`` of a sample submission.

    Read by :func:`hpacell.utils.tables.read_id_table`, so any ID list works: sizes come from the
    ``ImageWidth``/``ImageHeight`` columns when the file has them (a sample submission), else the
    mapping is empty (the cell masks give the sizes).

    Raises
    ------
    SubmissionError
        For a repeated ID or a bad size (the message names the file and the ID).
    """
    try:
        table = read_id_table(path, repeats="error")
    except InputError as e:
        raise SubmissionError(str(e)) from None
    ids = table["ID"].tolist()
    if not {"ImageWidth", "ImageHeight"} <= set(table.columns):
        return ids, {}
    sizes: dict[str, tuple[int, int]] = {}
    for image_id, w, h in zip(ids, table["ImageWidth"], table["ImageHeight"], strict=True):
        try:
            width, height = int(w), int(h)
        except ValueError:
            raise SubmissionError(f"{path}: image {image_id!r}: bad image size {w!r} x {h!r}") from None
        if width <= 0 or height <= 0:
            raise SubmissionError(f"{path}: image {image_id!r}: bad image size {width} x {height}")
        sizes[image_id] = (width, height)
    return ids, sizes


def parse_prediction_string(text: str) -> tuple[list[int], list[float], list[str]]:
    """Split a ``PredictionString`` into classes, confidences and mask strings.

    Equal mask strings come back as one shared object (a cell repeats its mask for every class).

    Raises
    ------
    ValueError
        If the number of tokens is not a multiple of 3 or a class/confidence is not a number.

    Examples
    --------
    >>> parse_prediction_string("0 1 eNoLCAgIMAEABJkBdQ==")
    ([0], [1.0], ['eNoLCAgIMAEABJkBdQ=='])
    """
    tokens = text.split()
    if len(tokens) % 3:
        raise ValueError(f"{len(tokens)} tokens, not a run of 'class confidence mask' triples")
    classes, confs, masks = [], [], []
    shared: dict[str, str] = {}
    for i in range(0, len(tokens), 3):
        try:
            classes.append(int(tokens[i]))
            confs.append(float(tokens[i + 1]))
        except ValueError:
            raise ValueError(f"triple {i // 3}: bad class or confidence {tokens[i : i + 2]}") from None
        m = tokens[i + 2]
        masks.append(shared.setdefault(m, m))
    return classes, confs, masks


def check_prediction(pred: ImagePrediction, n_classes: int | None = None) -> dict[str, MaskInfo]:
    """Check one image's triples; returns (and stores in ``pred.checked``) each distinct mask's info.

    Raises
    ------
    SubmissionError
        Naming the row (``pred.where``), the image and the triple: a class that
        is not an integer in ``0..n_classes-1``, a confidence that is not a
        finite number in [0, 1], or a mask string that is not valid or does
        not cover ``width x height`` pixels.
    """
    where = f"{pred.where}: image {pred.image_id!r}" if pred.where else f"image {pred.image_id!r}"
    if not (len(pred.classes) == len(pred.confidences) == len(pred.masks)):
        raise SubmissionError(f"{where}: classes, confidences and masks differ in length")
    for k, (c, p) in enumerate(zip(pred.classes, pred.confidences, strict=True)):
        if not (0 <= c and (n_classes is None or c < n_classes)) or c != int(c):
            top = "" if n_classes is None else f"..{n_classes - 1}"
            raise SubmissionError(f"{where}: triple {k}: class {c} out of range 0{top}")
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise SubmissionError(f"{where}: triple {k}: confidence {p} is not a finite number in [0, 1]")
    if pred.checked is None:
        checked: dict[str, MaskInfo] = {}
        for k, m in enumerate(pred.masks):
            if m in checked:
                continue
            try:
                checked[m] = mask_info(m, pred.height, pred.width)
            except ValueError as e:
                raise SubmissionError(f"{where}: triple {k}: {e}") from None
        pred.checked = checked
    return pred.checked


@contextmanager
def _no_field_limit() -> Iterator[None]:
    """Let :mod:`csv` read rows of any length (a 2048 px image's row is hundreds of KB)."""
    old = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # the largest value every platform's C long takes
    try:
        yield
    finally:
        csv.field_size_limit(old)


def read_submission(
    path: str | os.PathLike, parse_predictions: bool = True, n_classes: int | None = None
) -> list[ImagePrediction]:
    """Parse and check a submission CSV: one :class:`ImagePrediction` per row (file order).

    Parameters
    ----------
    path : path
    parse_predictions : bool
        False reads only IDs and sizes (e.g. a sample submission).
    n_classes : int, optional
        Classes must be ``< n_classes`` (default: only checked to be >= 0).

    Raises
    ------
    SubmissionError
        For a wrong header, a repeated ID, a bad size or a bad triple (see
        :func:`check_prediction`); the message names ``path:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: submission file not found")
    out: list[ImagePrediction] = []
    seen: set[str] = set()
    with open(path, newline="", encoding="utf-8-sig") as f, _no_field_limit():
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != HEADER:
                raise SubmissionError(f"{path}: header must be {','.join(HEADER)}, got {header}")
            for row in reader:
                lineno = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                out.append(_parse_row(row, f"{path}:{lineno}", seen, parse_predictions, n_classes))
        except (csv.Error, UnicodeDecodeError) as e:
            raise SubmissionError(f"{path}:{reader.line_num}: not a readable CSV row ({e})") from None
    return out


def _parse_row(
    row: list[str], where: str, seen: set[str], parse_predictions: bool, n_classes: int | None
) -> ImagePrediction:
    if len(row) != 4:
        raise SubmissionError(f"{where}: expected 4 fields, got {len(row)}")
    image_id, w, h, text = row
    if image_id in seen:
        raise SubmissionError(f"{where}: image {image_id!r} appears twice")
    seen.add(image_id)
    try:
        width, height = int(w), int(h)
    except ValueError:
        raise SubmissionError(f"{where}: bad image size {w!r} x {h!r}") from None
    if width <= 0 or height <= 0:
        raise SubmissionError(f"{where}: bad image size {width} x {height}")
    pred = ImagePrediction(image_id, width, height, where=where)
    if parse_predictions:
        try:
            pred.classes, pred.confidences, pred.masks = parse_prediction_string(text)
        except ValueError as e:
            raise SubmissionError(f"{where}: image {image_id!r}: {e}") from None
        check_prediction(pred, n_classes)
    return pred
