"""Build the cell dataset folder: crop shards, the cell table, status, meta; resumable.

Layout of ``CELLS`` (see the README's file contracts)::

    shard-00000.npy        (N, 4, S, S) uint8 crops, np.load(..., mmap_mode="r")
    cells.parquet          one row per cell (geometry, labels, feat_* columns)
    crop_status.parquet    one row per image: image_id, n_cells, status, error, seconds
    meta.json              crop size, channels, taxonomy, classes, options, sources
    parts/shard-00000.parquet, parts/status-00000.parquet, parts/options.json

Images are processed in worker processes (:func:`hpacell.utils.jobs.run_jobs`);
the parent appends each image's crops to the open shard (a temp file) and,
once it holds ``shard_size`` crops or more (an image is never split), commits
it: the ``.npy`` is renamed into place, then the status part, then the table
part ``parts/shard-K.parquet``, which is the commit mark. A killed run leaves
temp files (removed on the next run) and at most a shard or status part
without its table part (an orphan, removed too), never a half file. A rerun
skips the images whose status is ``ok`` in a committed part and retries the
failed ones; ``cells.parquet``, ``crop_status.parquet`` and ``meta.json`` are
rebuilt from the parts at the end of every run.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pydantic import Field

from hpacell.cellcrops.crop import FEATURE_COLUMNS, GEOMETRY_COLUMNS, crop_cells
from hpacell.cellcrops.labels import HPA2021, LabelTable, Taxonomy, compare_ids, get_taxonomy, read_labels
from hpacell.segmentation.io import (
    CELLMASK_SUFFIX,
    CHANNELS,
    ImageSetError,
    find_image_sets,
    mask_paths,
    read_image_set,
    read_mask,
)
from hpacell.utils.errors import InputError
from hpacell.utils.files import atomic_write_bytes, clean_stale_temps
from hpacell.utils.jobs import run_jobs
from hpacell.utils.options import Options
from hpacell.utils.outputs import (
    check_stamp,
    claim_folder,
    file_digest,
    fingerprint,
    read_stamp,
    record_path,
    resolve_path,
    write_stamp,
)
from hpacell.utils.tables import write_parquet

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
TABLE_COLUMNS: tuple[str, ...] = (
    "cell_uid",
    "image_id",
    "cell",
    "shard",
    "row",
    *GEOMETRY_COLUMNS[1:],
    "labels",
    *FEATURE_COLUMNS,
)
"""Columns of ``cells.parquet``, in order."""

STATUS_COLUMNS: tuple[str, ...] = ("image_id", "n_cells", "status", "error", "seconds")


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.npy"


class CropOptions(Options):
    """What each image's crops depend on (a rerun must use the same); the keywords of
    :func:`~hpacell.cellcrops.crop.crop_cells`.

    Examples
    --------
    >>> CropOptions(size=64).size
    64
    >>> CropOptions(size=4)
    Traceback (most recent call last):
    ...
    hpacell.utils.options.OptionsError: invalid crop options: size: Input should be greater than or equal to 8
    """

    what: ClassVar[str] = "crop options"

    size: int = Field(256, ge=8, description="crop side in pixels")
    mask_background: bool = Field(True, description="zero the pixels outside the cell")
    min_area: int = Field(0, ge=0, description="drop cells with fewer pixels")
    drop_border_cells: bool = Field(False, description="drop cells touching the image border")
    margin: int = Field(0, ge=0, description="extra pixels around each cell's square box")
    feature_size: int = Field(128, ge=16, description="side of the crops features are computed on")
    exact_area: bool = Field(False, description="downscale with one INTER_AREA call (slower)")


@dataclass(frozen=True)
class CropItem:
    """One image's work: its channel files (None = no image), its masks, the options."""

    image_id: str
    channels: Mapping[str, Path] | None
    cellmask: Path
    nucleimask: Path | None
    options: CropOptions = field(default_factory=CropOptions)


# --------------------------------------------------------------------------- one image (worker)
def process_image(item: CropItem) -> tuple[np.ndarray, pd.DataFrame]:
    """Read one image + masks and crop its cells (runs in a worker process).

    An image whose mask has no cells (or whose cells are all dropped by the
    options) gives 0 crops and 0 rows: it is done, not failed.

    Raises
    ------
    ImageSetError
        Mask without image, image without mask, unreadable file, mask size !=
        image size; the message names the file.
    """
    if item.channels is None:
        raise ImageSetError(f"{item.cellmask}: mask without image (no image set {item.image_id!r})")
    if not item.cellmask.is_file():
        raise ImageSetError(f"{item.cellmask}: no cell mask for image {item.image_id!r}")
    image = read_image_set(dict(item.channels))
    cellmask = read_mask(item.cellmask)
    nucleimask = read_mask(item.nucleimask) if item.nucleimask is not None else None
    h, w = image.shape[1:]
    for path, m in ((item.cellmask, cellmask), (item.nucleimask, nucleimask)):
        if m is not None and m.shape != (h, w):
            raise ImageSetError(f"{path}: mask size {m.shape[1]}x{m.shape[0]} != image size {w}x{h}")
    return crop_cells(image, cellmask, nucleimask, **item.options.model_dump())


# --------------------------------------------------------------------------- shard writer
def _npy_header(n: int, size: int) -> bytes:
    buf = io.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False}
    np.lib.format.write_array_header_1_0(buf, {**d, "shape": (n, len(CHANNELS), size, size)})
    return buf.getvalue()


class ShardWriter:
    """Append crops to a temp ``.npy`` and commit it with its table and status parts.

    The temp file starts with a reserved ``.npy`` header that is filled in with
    the final row count on commit, so crops are written once and never held in
    memory.
    """

    def __init__(self, out: Path, crop_size: int, index: int) -> None:
        self.out = Path(out)
        self.parts = self.out / "parts"
        self.size = crop_size
        self.index = index
        self._reset()

    def _reset(self) -> None:
        self.rows: list[pd.DataFrame] = []
        self.status: list[dict] = []
        self.n = 0
        self._file = None
        self._tmp: Path | None = None

    def add(self, crops: np.ndarray, table: pd.DataFrame) -> None:
        """Append one image's crops and table rows (``shard``/``row`` are filled in)."""
        if crops.shape[1:] != (len(CHANNELS), self.size, self.size) or crops.dtype != np.uint8:
            raise ValueError(f"crops must be (N, 4, {self.size}, {self.size}) uint8, got {crops.shape}")
        if len(crops) == 0:
            return
        if self._file is None:
            self._tmp = self.out / f".{shard_name(self.index)}.{os.getpid()}.tmp"
            self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in commit()
            self._file.write(_npy_header(0, self.size))
        self._file.write(np.ascontiguousarray(crops).tobytes())
        table = table.copy()
        table["shard"] = self.index
        table["row"] = np.arange(self.n, self.n + len(crops))
        self.rows.append(table)
        self.n += len(crops)

    def add_status(self, row: dict) -> None:
        self.status.append(row)

    def commit(self) -> None:
        """Write the shard (if it has rows), the status part, then the table part (the commit mark)."""
        if not self.n and not self.status:
            return
        k = self.index
        if self._file is not None:
            header = _npy_header(self.n, self.size)
            reserved = len(_npy_header(0, self.size))
            if len(header) != reserved:  # pragma: no cover - numpy keeps room for shape growth
                raise RuntimeError("npy header size changed; cannot finalise shard in place")
            self._file.seek(0)
            self._file.write(header)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.out / shard_name(k))
        status = pd.DataFrame(self.status, columns=list(STATUS_COLUMNS))
        write_parquet(status, self.parts / f"status-{k:05d}.parquet")
        table = pd.concat(self.rows, ignore_index=True) if self.rows else _empty_table()
        write_parquet(table[list(TABLE_COLUMNS)], self.parts / f"shard-{k:05d}.parquet")
        log.info("committed %s: %d cells, %d images", shard_name(k), self.n, len(self.status))
        self.index += 1
        self._reset()

    def abort(self) -> None:
        """Drop the uncommitted shard (its temp file)."""
        if self._file is not None:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
        self._reset()


def _empty_table() -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype=np.int64) for c in TABLE_COLUMNS})
    df["cell_uid"] = df["image_id"] = pd.Series(dtype=object)
    df["touches_border"] = pd.Series(dtype=bool)
    df["labels"] = pd.Series(dtype=object)
    for c in FEATURE_COLUMNS:
        df[c] = pd.Series(dtype=np.float32)
    return df


def recorded_source(cells_dir: str | os.PathLike, key: str) -> Path | None:
    """The input folder ``meta.json["sources"][key]`` of a cell dataset (e.g. ``"masks"``), resolved.

    Paths are recorded relative to ``meta.json`` (hpacell >= issue 13) and resolved
    from it, whatever the working directory. A path recorded relative to the
    working directory by an older version is used as is when that resolves and
    the other does not. ``None`` when nothing is recorded.
    """
    meta = Path(cells_dir) / "meta.json"
    if not meta.is_file():
        return None
    sources = json.loads(meta.read_text()).get("sources") or {}
    value = sources.get(key) if isinstance(sources, dict) else None
    if not value or not isinstance(value, str):
        return None
    path = resolve_path(value, meta.parent)
    if not path.exists() and Path(value).exists():  # an older meta.json, relative to its crop's cwd
        return Path(value)
    return path


# --------------------------------------------------------------------------- resume
def _committed(out: Path) -> list[int]:
    """Indices of committed shards; orphans of a killed run are removed."""
    parts = out / "parts"
    done = sorted(int(p.name[6:11]) for p in parts.glob("shard-?????.parquet"))
    committed = set(done)
    for p in list(out.glob("shard-?????.npy")) + list(parts.glob("status-?????.parquet")):
        k = int(p.name.split("-")[1][:5])
        if k not in committed:
            log.warning("removing %s: left by an interrupted run without its table part", p)
            p.unlink()
    for k in done:
        n = pq.read_metadata(parts / f"shard-{k:05d}.parquet").num_rows
        if n:
            path = out / shard_name(k)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing, but its table part lists {n} cells; rebuild CELLS")
            rows = np.load(path, mmap_mode="r").shape[0]
            if rows != n:
                raise InputError(f"{path}: has {rows} crops, its table part lists {n}; rebuild CELLS")
    return done


def _read_parts(out: Path, kind: str, done: list[int]) -> pd.DataFrame:
    frames = [pd.read_parquet(out / "parts" / f"{kind}-{k:05d}.parquet") for k in done]
    frames = [f for f in frames if len(f)]
    if kind == "shard":
        return pd.concat(frames, ignore_index=True) if frames else _empty_table()
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(STATUS_COLUMNS))


STAMP = "parts/options.json"
"""Where a crop folder records the inputs and options its crops were made with."""

_OUTPUTS = ("cells.parquet", "crop_status.parquet", "meta.json")


def _labels_digest(labels: LabelTable | None, source: str | None) -> str | None:
    if labels is None:
        return None
    if source is not None:
        return file_digest(source)
    return fingerprint(sorted((k, list(v)) for k, v in labels.as_dict().items()))


def _reuse_or_reset(out: Path, stamp: dict, overwrite: bool) -> list[int]:
    """The committed shards that may be reused; the others' files are removed.

    Images done before (status ``ok`` in a committed part, 0 cells included) are
    reused only when the stamp beside them equals ``stamp``; otherwise the run
    is refused, naming what changed, or with ``overwrite`` starts again. Parts
    holding only failed images have nothing to reuse and are dropped (those
    images are retried), so a first run that failed never blocks the corrected
    rerun, whatever its options.
    """
    done = _committed(out)
    status = _read_parts(out, "status", done)
    if done and (status["status"] == "ok").any():
        path = out / STAMP
        if read_stamp(path) is None and not overwrite:
            raise InputError(
                f"{out}: holds crops without a record of the inputs and options that made them; "
                "use --overwrite to recompute, or another output folder"
            )
        if check_stamp(path, stamp, overwrite=overwrite, what="crops", folder=out):
            return done
        log.warning("%s: removing the crops made with other inputs or options (--overwrite)", out)
    if done:
        for p in [*out.glob("shard-?????.npy"), *(out / "parts").glob("*-?????.parquet")]:
            p.unlink()
        for name in _OUTPUTS:
            (out / name).unlink(missing_ok=True)
    write_stamp(out / STAMP, stamp)
    return []


# --------------------------------------------------------------------------- the whole run
@dataclass
class CropSummary:
    """What a run did; ``failed`` maps image id -> error."""

    n_images: int
    n_skipped: int
    n_cells: int
    failed: dict[str, str]
    labels_without_images: list[str]
    images_without_labels: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def build_cell_dataset(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    out: str | os.PathLike,
    labels: LabelTable | str | os.PathLike | None = None,
    options: CropOptions | None = None,
    taxonomy: str | Taxonomy | None = None,
    workers: int = 1,
    shard_size: int = 4096,
    overwrite: bool = False,
) -> CropSummary:
    """Crop every cell of every image into ``out`` (see the module docs).

    Parameters
    ----------
    images_dir, masks_dir : path
        Image sets ``<ID>_<channel>.<ext>`` and masks ``<ID>_cellmask.png``
        (``<ID>_nucleimask.png`` optional).
    out : path
        The ``CELLS`` folder (created and marked for ``crop``; a rerun with the
        same inputs and options resumes, other ones are refused).
    labels : LabelTable or path, optional
        Image labels inherited by the cells (a table, or a 2021/2018 CSV to
        read); images without a row get ``[]``.
    options : CropOptions
    taxonomy : str, optional
        Taxonomy recorded when no label table is given (default hpa2021).
    workers : int
        Worker processes.
    shard_size : int
        Crops per shard (a shard is committed once it holds at least this many).
    overwrite : bool
        Recompute everything when the folder holds crops made with other
        inputs (images, masks, label table content) or options.

    Raises
    ------
    InputError
        No image sets in ``images_dir``; ``out`` is not a crop folder; its
        crops were made with other inputs or options (without ``overwrite``).
    """
    options = options or CropOptions()
    if shard_size < 1:
        raise InputError(f"shard_size must be >= 1, got {shard_size}")
    images_dir, masks_dir, out = Path(images_dir), Path(masks_dir), Path(out)
    labels_source = None
    if labels is not None and not isinstance(labels, LabelTable):
        labels_source = str(labels)
        labels = read_labels(labels)
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"{masks_dir}: mask folder does not exist")
    tax = labels.taxonomy if labels is not None else get_taxonomy(taxonomy or HPA2021)
    sets = find_image_sets(images_dir)
    if not sets:
        raise InputError(
            f"{images_dir}: no image sets found (expected <ID>_{{red,green,blue,yellow}}.<png|tif|jpg> files)"
        )
    mask_ids = {p.name[: -len(CELLMASK_SUFFIX)] for p in masks_dir.glob(f"*{CELLMASK_SUFFIX}")}
    all_ids = sorted(set(sets) | mask_ids)

    claim_folder(out, "crop", legacy=[STAMP])
    (out / "parts").mkdir(parents=True, exist_ok=True)
    n_tmp = clean_stale_temps(out) + clean_stale_temps(out / "parts")
    if n_tmp:
        log.warning("removed %d temp files of an interrupted run in %s", n_tmp, out)
    stamp = {
        **options.model_dump(),
        "taxonomy": tax.name,
        "images": os.path.abspath(images_dir),
        "masks": os.path.abspath(masks_dir),
        "labels": _labels_digest(labels, labels_source),
    }
    done = _reuse_or_reset(out, stamp, overwrite)

    missing_images, unlabelled = ([], sorted(sets))
    if labels is not None:
        missing_images, unlabelled = compare_ids(labels.ids, sets)
    label_of = labels.as_dict() if labels is not None else {}

    status = _read_parts(out, "status", done)
    finished = set(status.loc[status["status"] == "ok", "image_id"]) if len(status) else set()
    todo = [i for i in all_ids if i not in finished]
    log.info("%d images: %d done before, %d to crop", len(all_ids), len(all_ids) - len(todo), len(todo))

    def items():
        for image_id in todo:
            cell, nuc = mask_paths(masks_dir, image_id)
            yield CropItem(image_id, sets.get(image_id), cell, nuc if nuc.is_file() else None, options)

    writer = ShardWriter(out, options.size, (done[-1] + 1) if done else 0)
    failed: dict[str, str] = {}
    n_new = 0
    try:
        for res in run_jobs(
            process_image, items(), workers=workers, desc="crop", total=len(todo), ordered=True
        ):
            image_id = res.item.image_id
            if res.ok:
                crops, table = res.value
                table.insert(0, "image_id", image_id)
                table.insert(0, "cell_uid", [f"{image_id}_{c}" for c in table["cell"]])
                table["labels"] = [list(label_of.get(image_id, []))] * len(table)
                writer.add(crops, table)
                writer.add_status(
                    dict(image_id=image_id, n_cells=len(table), status="ok", error="", seconds=res.seconds)
                )
                n_new += len(table)
            else:
                failed[image_id] = res.error
                log.error("%s: %s", image_id, res.error)
                writer.add_status(
                    dict(image_id=image_id, n_cells=0, status="failed", error=res.error, seconds=res.seconds)
                )
            if writer.n >= shard_size:
                writer.commit()
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    n_cells = consolidate(
        out,
        tax,
        options,
        sources={  # relative to meta.json (hpacell.utils.outputs.record_path)
            "images": record_path(images_dir, out),
            "masks": record_path(masks_dir, out),
            "labels": record_path(labels_source, out) if labels_source else None,
        },
    )
    log.info("cropped %d new cells; %d cells in %s; %d images failed", n_new, n_cells, out, len(failed))
    return CropSummary(
        n_images=len(all_ids),
        n_skipped=len(all_ids) - len(todo),
        n_cells=n_cells,
        failed=failed,
        labels_without_images=missing_images,
        images_without_labels=unlabelled,
    )


def consolidate(out: Path, taxonomy: Taxonomy, options: CropOptions, sources: dict) -> int:
    """Rebuild ``cells.parquet``, ``crop_status.parquet`` and ``meta.json`` from the parts."""
    out = Path(out)
    done = _committed(out)
    cells = _read_parts(out, "shard", done)
    dup = cells["cell_uid"].duplicated()
    if dup.any():
        raise InputError(f"{out}: duplicated cells in the parts, e.g. {cells['cell_uid'][dup].iloc[0]}")
    write_parquet(cells[list(TABLE_COLUMNS)], out / "cells.parquet")
    status = _read_parts(out, "status", done)
    status = status.drop_duplicates("image_id", keep="last").sort_values("image_id", ignore_index=True)
    write_parquet(status, out / "crop_status.parquet")
    meta = {
        "version": FORMAT_VERSION,
        "crop_size": options.size,
        "channels": list(CHANNELS),
        "taxonomy": taxonomy.name,
        "classes": list(taxonomy.classes),
        "mask_background": options.mask_background,
        "n_cells": len(cells),
        "n_shards": int(cells["shard"].nunique()) if len(cells) else 0,
        "feature_columns": list(FEATURE_COLUMNS),
        "options": options.model_dump(),
        "sources": sources,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_bytes(out / "meta.json", (json.dumps(meta, indent=1) + "\n").encode())
    return len(cells)
