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
