"""HPA label taxonomies and image-level label tables.

Two taxonomies exist: the 2021 single-cell competition (19 classes, class 18 =
Negative) and the 2018 image competition (28 classes). Their tables differ:

* 2021: ``ID,Label`` with ``|``-separated class ids (``"8|5|0"``);
* 2018: ``Id,Target`` with space-separated class ids (``"16 0"``).

:func:`read_labels` detects the format from the header and returns a
:class:`LabelTable` (IDs + multi-hot matrix).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpacell.utils.errors import HpacellError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Taxonomy:
    """A label set: its name, class names and (optionally) the Negative class id."""

    name: str
    classes: tuple[str, ...]
    negative: int | None = None
    id_column: str = "ID"
    label_column: str = "Label"
    separator: str = "|"

    @property
    def n_classes(self) -> int:
        return len(self.classes)


HPA2021 = Taxonomy(
    name="hpa2021",
    classes=(
        "Nucleoplasm",
        "Nuclear membrane",
        "Nucleoli",
        "Nucleoli fibrillar center",
        "Nuclear speckles",
        "Nuclear bodies",
        "Endoplasmic reticulum",
        "Golgi apparatus",
        "Intermediate filaments",
        "Actin filaments",
        "Microtubules",
        "Mitotic spindle",
        "Centrosome",
        "Plasma membrane",
        "Mitochondria",
        "Aggresome",
        "Cytosol",
        "Vesicles and punctate cytosolic patterns",
        "Negative",
    ),
    negative=18,
)

HPA2018 = Taxonomy(
    name="hpa2018",
    classes=(
        "Nucleoplasm",
        "Nuclear membrane",
        "Nucleoli",
        "Nucleoli fibrillar center",
        "Nuclear speckles",
        "Nuclear bodies",
        "Endoplasmic reticulum",
        "Golgi apparatus",
        "Peroxisomes",
        "Endosomes",
        "Lysosomes",
        "Intermediate filaments",
        "Actin filaments",
        "Focal adhesion sites",
        "Microtubules",
        "Microtubule ends",
        "Cytokinetic bridge",
        "Mitotic spindle",
        "Microtubule organizing center",
        "Centrosome",
        "Lipid droplets",
        "Plasma membrane",
        "Cell junctions",
        "Mitochondria",
        "Aggresome",
        "Cytosol",
        "Cytoplasmic bodies",
        "Rods & rings",
    ),
    negative=None,
    id_column="Id",
    label_column="Target",
    separator=" ",
)

TAXONOMIES: dict[str, Taxonomy] = {t.name: t for t in (HPA2021, HPA2018)}


def get_taxonomy(name: str | Taxonomy) -> Taxonomy:
    """Look a taxonomy up by name (``"hpa2021"`` or ``"hpa2018"``)."""
    if isinstance(name, Taxonomy):
        return name
    try:
        return TAXONOMIES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown taxonomy {name!r}; choose one of {sorted(TAXONOMIES)}") from None


class LabelError(HpacellError, ValueError):
    """A malformed label table; the message names the file and row."""


@dataclass
class LabelTable:
    """Image-level labels: ``ids[i]`` has the classes where ``matrix[i]`` is 1."""

    ids: list[str]
    matrix: np.ndarray  # (n_images, n_classes) uint8 multi-hot
    taxonomy: Taxonomy

    def __len__(self) -> int:
        return len(self.ids)

    def labels_of(self, image_id: str) -> list[int]:
        """Class ids of one image (raises KeyError if absent)."""
        return np.flatnonzero(self.matrix[self._index[image_id]]).tolist()

    def as_dict(self) -> dict[str, list[int]]:
        """``{ID: [class ids]}``."""
        return {i: np.flatnonzero(row).tolist() for i, row in zip(self.ids, self.matrix, strict=True)}

    def __post_init__(self) -> None:
        self._index = {k: i for i, k in enumerate(self.ids)}

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index


def detect_taxonomy(header: Sequence[str]) -> Taxonomy:
    """Taxonomy of a label table from its header row."""
    cols = [c.strip() for c in header]
    for tax in (HPA2021, HPA2018):
        if cols[:2] == [tax.id_column, tax.label_column]:
            return tax
    raise LabelError(
        f"unrecognised header {','.join(cols)!r}: expected 'ID,Label' (2021) or 'Id,Target' (2018)"
    )


def parse_label_string(text: str, taxonomy: Taxonomy) -> list[int]:
    """Class ids from one label cell (``"8|5|0"`` or ``"16 0"``); raises ValueError."""
    if not text.strip():
        raise ValueError("empty label")
    parts = text.split(taxonomy.separator) if taxonomy.separator != " " else text.split()
    out = []
    for p in parts:
        try:
            k = int(p.strip())
        except ValueError:
            raise ValueError(f"label {p!r} is not an integer class id") from None
        if not 0 <= k < taxonomy.n_classes:
            raise ValueError(f"class id {k} out of range 0..{taxonomy.n_classes - 1} ({taxonomy.name})")
        out.append(k)
    return sorted(set(out))


def format_labels(class_ids: Iterable[int], taxonomy: Taxonomy = HPA2021) -> str:
    """Inverse of :func:`parse_label_string`.

    Examples
    --------
    >>> format_labels([0, 5, 8])
    '0|5|8'
    >>> format_labels([16, 0], HPA2018)
    '0 16'
    """
    return taxonomy.separator.join(str(k) for k in sorted(set(int(k) for k in class_ids)))


def read_labels(path: str | os.PathLike, taxonomy: str | Taxonomy | None = None) -> LabelTable:
    """Read a 2021 or 2018 label table into IDs + a multi-hot matrix.

    Parameters
    ----------
    path : path
        The CSV file.
    taxonomy : str or Taxonomy, optional
        Expected taxonomy; detected from the header when omitted.

    Raises
    ------
    LabelError
        For an unknown header, an empty or malformed row, a class id out of
        range or a duplicated ID; the message gives the file and the row number
        (1 = header).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label table not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is dropped
    except UnicodeDecodeError as e:
        raise LabelError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    with io.StringIO(text, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise LabelError(f"{path}: empty file") from None
        try:
            found = detect_taxonomy(header)
        except LabelError as e:
            raise LabelError(f"{path}: row 1: {e}") from None
        tax = found if taxonomy is None else get_taxonomy(taxonomy)
        if (tax.id_column, tax.label_column) != (found.id_column, found.label_column):
            raise LabelError(f"{path}: header is {found.name} format, but taxonomy {tax.name} was asked for")
        ids: list[str] = []
        rows: list[list[int]] = []
        seen: set[str] = set()
        for rownum, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                raise LabelError(f"{path}: row {rownum}: empty row")
            if len(row) != 2:
                raise LabelError(f"{path}: row {rownum}: expected 2 columns, got {len(row)}: {row!r}")
            image_id, text = row[0].strip(), row[1].strip()
            if not image_id:
                raise LabelError(f"{path}: row {rownum}: empty ID")
            if image_id in seen:
                raise LabelError(f"{path}: row {rownum}: duplicate ID {image_id!r}")
            try:
                rows.append(parse_label_string(text, tax))
            except ValueError as e:
                raise LabelError(f"{path}: row {rownum} ({image_id}): {e}") from None
            seen.add(image_id)
            ids.append(image_id)
    matrix = np.zeros((len(ids), tax.n_classes), dtype=np.uint8)
    for i, ks in enumerate(rows):
        matrix[i, ks] = 1
    log.info("read %d image labels (%s) from %s", len(ids), tax.name, path)
    return LabelTable(ids=ids, matrix=matrix, taxonomy=tax)


def compare_ids(table_ids: Iterable[str], image_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """IDs in the table without images, and images without a table row.

    Returns
    -------
    (missing_images, unlabelled)
        Sorted lists. Both are logged as warnings when non-empty.

    Examples
    --------
    >>> compare_ids(["a", "b"], ["b", "c"])
    (['a'], ['c'])
    """
    t, i = set(table_ids), set(image_ids)
    missing, unlabelled = sorted(t - i), sorted(i - t)
    if missing:
        log.warning("%d IDs in the label table have no images (e.g. %s)", len(missing), missing[:3])
    if unlabelled:
        log.warning("%d images have no row in the label table (e.g. %s)", len(unlabelled), unlabelled[:3])
    return missing, unlabelled


def write_labels(
    path: str | os.PathLike, labels: dict[str, Iterable[int]], taxonomy: Taxonomy = HPA2021
) -> None:
    """Write ``{ID: class ids}`` as a label table of ``taxonomy``'s format (atomically)."""
    from hpacell.utils.files import atomic_write_bytes

    lines = [f"{taxonomy.id_column},{taxonomy.label_column}"]
    lines += [f"{k},{format_labels(v, taxonomy)}" for k, v in labels.items()]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


# --------------------------------------------------------------------------- per-cell labels
CELLS_CSV_COLUMNS = ("ID", "cell", "Label")
CELL_TARGET_KEYS = ("image_id", "cell")


def _parse_cell(text: str, where: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise LabelError(f"{where}: cell {text!r} is not an integer cell id") from None


def _read_cells_csv_rows(
    path: Path, taxonomy: Taxonomy
) -> tuple[list[str], list[int], list[list[int]], list[int]]:
    """IDs, cells, label lists and row numbers (1 = header) of an ``ID,cell,Label`` table."""
    ids: list[str] = []
    cells: list[int] = []
    labels: list[list[int]] = []
    rownums: list[int] = []
    seen: dict[tuple[str, int], int] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [c.strip() for c in next(reader, [])]
        unknown = [c for c in header if c not in CELLS_CSV_COLUMNS]
        missing = [c for c in CELLS_CSV_COLUMNS if c not in header]
        if unknown or missing:
            raise LabelError(
                f"{path}: row 1: header {','.join(header)!r} is not ID,cell,Label"
                + (f" (unknown column(s) {unknown})" if unknown else "")
            )
        at = {c: header.index(c) for c in CELLS_CSV_COLUMNS}
        for rownum, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{path}: row {rownum}"
            if len(row) != len(header):
                raise LabelError(f"{where}: expected {len(header)} columns, got {len(row)}: {row!r}")
            image_id = row[at["ID"]].strip()
            if not image_id:
                raise LabelError(f"{where}: empty ID")
            cell = _parse_cell(row[at["cell"]], where)
            if (image_id, cell) in seen:
                raise LabelError(
                    f"{where}: duplicate cell {cell} of image {image_id!r} "
                    f"(first in row {seen[image_id, cell]})"
                )
            seen[image_id, cell] = rownum
            text = row[at["Label"]].strip()
            try:
                ks = parse_label_string(text, taxonomy) if text else []
            except ValueError as e:
                raise LabelError(f"{where} ({image_id} cell {cell}): {e}") from None
            ids.append(image_id)
            cells.append(cell)
            labels.append(ks)
            rownums.append(rownum)
    return ids, cells, labels, rownums


def read_cells_csv(path: str | os.PathLike, taxonomy: Taxonomy = HPA2021) -> dict[str, dict[int, list[int]]]:
    """Per-cell labels of an ``ID,cell,Label`` table (``hpacell synth``'s ``cells.csv``).

    The one reader of that format. An empty ``Label`` is a cell without any
    class. Returns ``{ID: {cell: [class ids]}}`` in file order.

    Raises
    ------
    LabelError
        For another header, a malformed or duplicated row or a class id out of
        range; the message names the file and the row (1 = header).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "cells.csv"
    >>> _ = p.write_text("ID,cell,Label\\na,1,0|5\\na,2,18\\n")
    >>> read_cells_csv(p)
    {'a': {1: [0, 5], 2: [18]}}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: cell label table not found (expected ID,cell,Label)")
    out: dict[str, dict[int, list[int]]] = {}
    for image_id, cell, ks, _ in zip(*_read_cells_csv_rows(path, taxonomy), strict=True):
        out.setdefault(image_id, {})[cell] = ks
    return out


@dataclass
class CellTargets:
    """Per-cell training targets keyed by ``(image_id, cell)``; ``rows`` are the file's row numbers."""

    path: Path
    image_ids: list[str]
    cells: np.ndarray  # (N,) int64
    targets: np.ndarray  # (N, C) float32 in [0, 1]
    rows: np.ndarray  # (N,) row numbers, for messages
    soft: bool  # False for an ID,cell,Label table (0/1 targets)

    def __len__(self) -> int:
        return len(self.image_ids)

    def positions_in(self, image_ids: Sequence[str], cells: Sequence[int], where: str) -> np.ndarray:
        """Position of every file row in a cell table given by ``image_ids``/``cells``.

        Raises :class:`LabelError` naming the file and row for an image or a
        cell that ``where`` (the table's name, for the message) does not hold.
        """
        index = {(str(i), int(c)): k for k, (i, c) in enumerate(zip(image_ids, cells, strict=True))}
        images = {str(i) for i in image_ids}
        pos = np.empty(len(self), dtype=np.int64)
        for k, (image_id, cell) in enumerate(zip(self.image_ids, self.cells.tolist(), strict=True)):
            p = index.get((image_id, cell))
            if p is None:
                what = (
                    f"no cell {cell} in image {image_id!r}"
                    if image_id in images
                    else f"no image {image_id!r}"
                )
                raise LabelError(f"{self.path}: row {self.rows[k]}: {what} in {where}")
            pos[k] = p
        return pos


def _class_columns(columns: Sequence[str], classes: Sequence[str], path: Path) -> list[str]:
    """The file's column of each class (by name or by id), or a LabelError for unknown/missing ones."""
    names = {str(c): k for k, c in enumerate(classes)} | {str(k): k for k in range(len(classes))}
    extra = [c for c in columns if c not in CELL_TARGET_KEYS]
    unknown = [c for c in extra if c not in names]
    missing_keys = [c for c in CELL_TARGET_KEYS if c not in columns]
    if unknown or missing_keys:
        raise LabelError(
            f"{path}: row 1: "
            + (f"missing key column(s) {missing_keys}; " if missing_keys else "")
            + (f"unknown column(s) {unknown}; " if unknown else "")
            + f"expected image_id, cell and one column per class (names or ids 0..{len(classes) - 1}), "
            "or ID,cell,Label"
        )
    by_class: dict[int, str] = {}
    for c in extra:
        if names[c] in by_class:
            raise LabelError(f"{path}: row 1: columns {by_class[names[c]]!r} and {c!r} are the same class")
        by_class[names[c]] = c
    absent = [classes[k] for k in range(len(classes)) if k not in by_class]
    if absent:
        raise LabelError(f"{path}: row 1: no column for class(es) {absent}")
    return [by_class[k] for k in range(len(classes))]


def read_cell_targets(
    path: str | os.PathLike, classes: Sequence[str], taxonomy: Taxonomy = HPA2021
) -> CellTargets:
    """Per-cell targets from an ``ID,cell,Label`` CSV or a soft-target table.

    Parameters
    ----------
    path : path
        ``ID,cell,Label`` CSV (``hpacell synth``'s ``cells.csv``; 0/1 targets), or
        a Parquet/CSV with ``image_id``, ``cell`` and one column per class (named
        by class name or id) holding targets in [0, 1], as ``hpacell relabel`` writes.
    classes : sequence of str
        The class names of the cell dataset (column order of the targets).

    Raises
    ------
    LabelError
        Unknown or missing columns, a malformed or duplicated row, a value
        outside [0, 1]; the message names the file and the row.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: cell label file not found")
    n = len(classes)
    if path.suffix.lower() != ".parquet":
        with open(path, newline="") as f:
            header = [c.strip() for c in next(csv.reader(f), [])]
        if "ID" in header or "Label" in header:
            ids, cells, labels, rownums = _read_cells_csv_rows(path, taxonomy)
            targets = np.zeros((len(ids), n), np.float32)
            for i, ks in enumerate(labels):
                if any(k >= n for k in ks):
                    raise LabelError(f"{path}: row {rownums[i]}: class id out of range 0..{n - 1}")
                targets[i, ks] = 1.0
            return CellTargets(path, ids, np.asarray(cells, np.int64), targets, np.asarray(rownums), False)
        table = pd.read_csv(path, dtype={"image_id": str}, keep_default_na=False)
        first = 2
    else:
        table = pd.read_parquet(path)
        first = 1
    cols = _class_columns([str(c) for c in table.columns], classes, path)
    rows = np.arange(len(table)) + first
    ids = table["image_id"].astype(str).str.strip().tolist()
    cells = np.empty(len(table), np.int64)
    for i, c in enumerate(table["cell"].tolist()):
        cells[i] = _parse_cell(c, f"{path}: row {rows[i]}")
    values = table[cols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        i, k = np.argwhere(bad)[0]
        raise LabelError(
            f"{path}: row {rows[i]}: column {cols[k]!r} is {str(table[cols[k]].iloc[i])!r}, "
            "not a number in [0, 1]"
        )
    seen: dict[tuple[str, int], int] = {}
    for i, key in enumerate(zip(ids, cells.tolist(), strict=True)):
        if not key[0]:
            raise LabelError(f"{path}: row {rows[i]}: empty image_id")
        if key in seen:
            raise LabelError(
                f"{path}: row {rows[i]}: duplicate cell {key[1]} of image {key[0]!r} "
                f"(first in row {seen[key]})"
            )
        seen[key] = int(rows[i])
    return CellTargets(path, ids, cells, values.astype(np.float32), rows, True)


def write_cell_targets(
    path: str | os.PathLike,
    image_ids: Sequence[str],
    cells: Sequence[int],
    targets: np.ndarray,
    classes: Sequence[str],
) -> Path:
    """Write soft per-cell targets (``image_id, cell, <one column per class name>``) as Parquet or CSV.

    The format :func:`read_cell_targets` reads; ``.parquet`` by suffix, CSV otherwise (atomically).
    """
    import pandas as pd

    from hpacell.utils.files import atomic_write_bytes
    from hpacell.utils.tables import write_parquet

    path = Path(path)
    df = pd.DataFrame({"image_id": [str(i) for i in image_ids], "cell": np.asarray(cells, np.int64)})
    values = np.asarray(targets, np.float32)
    df = pd.concat([df, pd.DataFrame(values, columns=[str(c) for c in classes])], axis=1)
    if path.suffix.lower() == ".parquet":
        return write_parquet(df, path)
    return atomic_write_bytes(path, df.to_csv(index=False, float_format="%.6g").encode())
