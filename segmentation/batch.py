"""The segmentation batch job: a folder of image sets → masks, overlays and a status table.

:func:`segment_folder` is what ``hpacell segment`` runs. For each image ID it writes
``OUT/masks/<ID>_nucleimask.png`` then ``OUT/masks/<ID>_cellmask.png`` (uint16 PNG,
input size), each under a temp name then renamed, so *both masks present* means
*finished*: a rerun skips those IDs (unless ``overwrite``) and redoes the rest,
including the images that failed before. A failing image (corrupt file, missing
channel, channels of different sizes, a backend error) becomes a ``failed`` row
with its error and the run goes on.

CPU backends run in ``workers`` processes (the backend is built once per
process); a backend on a GPU (``backend.uses_gpu``) runs in this process on
batches of ``backend.batch_size`` images, and when it splits its work into a
device part and a CPU part (``infer_batch`` + ``postprocess``, as the
hpacellseg backend does) the CPU part runs in ``workers`` processes meanwhile.

The status table (``OUT/segmentation.parquet`` unless ``table`` is given) has one
row per image: ``ID, width, height, n_cells, backend, seconds, status, error``.
It is merged across runs (rows of images not redone are kept) and rewritten
atomically, also every ``checkpoint_every`` images during a run.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hpacell.segmentation.backends import Backend, get_backend
from hpacell.segmentation.io import (
    CELLMASK_SUFFIX,
    ImageSetError,
    find_image_sets,
    mask_paths,
    read_image_set,
    read_mask,
    write_mask,
    write_png,
)
from hpacell.utils.errors import InputError
from hpacell.utils.jobs import JobResult, run_jobs
from hpacell.utils.outputs import check_stamp, claim_folder, read_stamp, write_stamp
from hpacell.utils.tables import write_parquet

log = logging.getLogger(__name__)

STATUS_COLUMNS: tuple[str, ...] = (
    "ID",
    "width",
    "height",
    "n_cells",
    "backend",
    "seconds",
    "status",
    "error",
)
OVERLAY_MAX_SIDE = 1024
STAMP = ".segment.json"
"""In ``OUT/masks``: the backend and options the masks were made with."""
RUN_ONLY_OPTIONS = ("device", "batch_size")
"""Backend options that do not change the masks (left out of the stamp)."""


# --------------------------------------------------------------------------- small helpers
def _clean_temps(folder: Path, names: set[str]) -> int:
    """Remove ``.<name>.<random>.tmp`` files (left by killed writers) for the given final names."""
    if not folder.is_dir():
        return 0
    n = 0
    for entry in os.scandir(folder):
        fn = entry.name
        if fn.startswith(".") and fn.endswith(".tmp") and fn[1:-4].rsplit(".", 1)[0] in names:
            Path(entry.path).unlink(missing_ok=True)
            n += 1
    return n


def _check_labels(cells: np.ndarray, nuclei: np.ndarray, shape: tuple[int, int]) -> None:
    for what, lab in (("cell", cells), ("nuclei", nuclei)):
        if lab.shape != shape:
            raise ValueError(f"backend returned {what} labels of shape {lab.shape}, image is {shape}")
        if lab.dtype.kind not in "iu":
            raise ValueError(f"backend returned {what} labels of dtype {lab.dtype} (expected integers)")


def _count_cells(cells: np.ndarray) -> int:
    return int(np.count_nonzero(np.bincount(cells.ravel())[1:])) if cells.size else 0


def overlay_image(image: np.ndarray, cells: np.ndarray, nuclei: np.ndarray | None = None) -> np.ndarray:
    """RGB composite with cell outlines (white) and nucleus outlines (cyan), at most 1024 px a side."""
    from hpacell.utils.render import composite, draw_outlines

    h, w = cells.shape
    scale = min(1.0, OVERLAY_MAX_SIDE / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # OpenCV: (width, height)
        image = np.stack([cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in image])
        cells = cv2.resize(cells.astype(np.float32), size, interpolation=cv2.INTER_NEAREST).astype(np.int64)
        if nuclei is not None:
            nuclei = cv2.resize(nuclei.astype(np.float32), size, interpolation=cv2.INTER_NEAREST).astype(
                np.int64
            )
    rgb = composite(image)
    if nuclei is not None:
        rgb = draw_outlines(rgb, nuclei, color=(0, 255, 255))
    return draw_outlines(rgb, cells, color=(255, 255, 255))


def _write_outputs(
    image_id: str, image: np.ndarray, cells: np.ndarray, nuclei: np.ndarray, out_dir: Path, overlays: bool
) -> dict[str, Any]:
    """Check and write one image's outputs (overlay, nuclei mask, cell mask last); its row values."""
    _check_labels(cells, nuclei, image.shape[1:])
    cell_path, nuc_path = mask_paths(out_dir / "masks", image_id)
    if overlays:
        write_png(out_dir / "overlays" / f"{image_id}.png", overlay_image(image, cells, nuclei))
    write_mask(nuc_path, nuclei)
    write_mask(cell_path, cells)  # last: its presence (with the nuclei mask) marks the image done
    return {"width": int(image.shape[2]), "height": int(image.shape[1]), "n_cells": _count_cells(cells)}


# --------------------------------------------------------------------------- worker processes
_WORKER_BACKENDS: dict[tuple[str, str], Backend] = {}


def _worker_backend(name: str, options: dict[str, Any]) -> Backend:
    """The backend of this process (built on first use, then reused)."""
    key = (name, repr(sorted(options.items())))
    if key not in _WORKER_BACKENDS:
        _WORKER_BACKENDS[key] = get_backend(name, **options)
    return _WORKER_BACKENDS[key]


def _segment_one(item: tuple[str, dict[str, Path], Path, bool, str, dict[str, Any]]) -> dict[str, Any]:
    image_id, paths, out_dir, overlays, name, options = item
    image = read_image_set(paths)
    cells, nuclei = _worker_backend(name, options).segment(image)
    return _write_outputs(image_id, image, np.asarray(cells), np.asarray(nuclei), out_dir, overlays)


# --------------------------------------------------------------------------- GPU batches
def _read(paths: dict[str, Path]) -> np.ndarray | Exception:
    try:
        return read_image_set(paths)
    except Exception as e:  # noqa: BLE001 - recorded per image
        return e


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _finish_one(args: tuple) -> tuple[dict[str, Any] | None, str | None, float]:
    """Worker side of a deferred backend: labels from the device output, then the files."""
    image_id, raw, image, fn, options, out_dir, overlays = args
    t0 = time.perf_counter()
    try:
        cells, nuclei = fn(raw, image.shape[1:], **options)
        value = _write_outputs(image_id, image, np.asarray(cells), np.asarray(nuclei), out_dir, overlays)
        return value, None, time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - recorded per image
        return None, _err(e), time.perf_counter() - t0


def _per_image(fn: Any, images: list[np.ndarray], good: list[int]) -> dict[int, Any]:
    """``fn(list_of_images)`` on the ``good`` images; on failure image by image, to find the culprit."""
    try:
        return dict(zip(good, fn([images[i] for i in good]), strict=True))
    except Exception as e:  # noqa: BLE001
        log.warning("batch of %d failed (%s); retrying image by image", len(good), _err(e))
    outs: dict[int, Any] = {}
    for i in good:
        try:
            outs[i] = fn([images[i]])[0]
        except Exception as e1:  # noqa: BLE001
            outs[i] = e1
    return outs


def _run_batches(
    backend: Backend, todo: list[tuple[str, dict[str, Path]]], out_dir: Path, overlays: bool, workers: int = 1
) -> Iterator[JobResult]:
    """Segment ``todo`` in batches on the backend's device, in this process.

    Image reading overlaps the device work (threads). With ``workers > 1`` and a
    backend that splits its work (``infer_batch`` on the device + ``postprocess``,
    a picklable CPU function), the labelling and writing run in ``workers``
    processes while the device goes on with the next batch.
    """
    size = max(1, int(getattr(backend, "batch_size", 8)))
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    deferred = (
        workers > 1 and callable(getattr(backend, "infer_batch", None)) and hasattr(backend, "postprocess")
    )
    fn, options = backend.postprocess() if deferred else (None, {})
    # spawn: the workers never inherit the parent's CUDA state
    procs = (
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if deferred else None
    )
    running: dict[Future, tuple[str, float]] = {}
    bar = tqdm(total=len(todo), desc="segment", disable=None, unit="img")

    def collect(block: bool) -> Iterator[JobResult]:
        while running and (block or len(running) >= 2 * workers):
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                image_id, share = running.pop(fut)
                value, error, seconds = fut.result()
                bar.update()
                yield JobResult(image_id, value=value, error=error, seconds=share + seconds)
        for fut in [f for f in running if f.done()]:
            image_id, share = running.pop(fut)
            value, error, seconds = fut.result()
            bar.update()
            yield JobResult(image_id, value=value, error=error, seconds=share + seconds)

    try:
        with ThreadPoolExecutor(max_workers=min(8, size)) as readers:
            pending = [readers.submit(_read, p) for _, p in chunks[0]] if chunks else []
            for k, chunk in enumerate(chunks):
                t0 = time.perf_counter()
                images = [f.result() for f in pending]
                if k + 1 < len(chunks):  # prefetch the next batch while this one runs
                    pending = [readers.submit(_read, p) for _, p in chunks[k + 1]]
                good = [i for i, im in enumerate(images) if not isinstance(im, Exception)]
                run = backend.infer_batch if deferred else backend.segment_batch
                outs = _per_image(run, images, good) if good else {}
                share = (time.perf_counter() - t0) / max(1, len(chunk))
                for i, (image_id, _) in enumerate(chunk):
                    res = outs.get(i, images[i])
                    if isinstance(res, Exception):
                        bar.update()
                        yield JobResult(image_id, error=_err(res), seconds=share)
                    elif deferred:
                        job = (image_id, res, images[i], fn, options, out_dir, overlays)
                        running[procs.submit(_finish_one, job)] = (image_id, share)
                        yield from collect(block=False)
                    else:
                        t1 = time.perf_counter()
                        try:
                            cells, nuclei = (np.asarray(a) for a in res)
                            value = _write_outputs(image_id, images[i], cells, nuclei, out_dir, overlays)
                            yield JobResult(image_id, value=value, seconds=share + time.perf_counter() - t1)
                        except Exception as e:  # noqa: BLE001
                            yield JobResult(image_id, error=_err(e), seconds=share)
                        bar.update()
            yield from collect(block=True)
    finally:
        if procs is not None:
            procs.shutdown(cancel_futures=True)
        bar.close()


# --------------------------------------------------------------------------- the status table
def _empty_table() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: [] for c in STATUS_COLUMNS}))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reindex(columns=list(STATUS_COLUMNS))
    for c in ("width", "height", "n_cells"):
        df[c] = pd.to_numeric(df[c]).astype("Int64")
    df["seconds"] = pd.to_numeric(df["seconds"]).astype("float64")
    for c in ("ID", "backend", "status", "error"):
        df[c] = df[c].astype("object").where(df[c].notna(), None)
    return df


def read_status_table(path: str | os.PathLike) -> pd.DataFrame:
    """The status table at ``path`` (an empty one when absent or unreadable, with a warning)."""
    path = Path(path)
    if not path.is_file():
        return _empty_table()
    try:
        return _typed(pd.read_parquet(path))
    except Exception as e:  # noqa: BLE001 - a damaged table is rebuilt from the masks
        log.warning("%s: unreadable status table (%s); starting a new one", path, _err(e))
        return _empty_table()


def _write_table(rows: Iterable[dict[str, Any]], previous: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Merge this run's rows into the previous table (they replace rows of the same ID); write atomically."""
    new = _typed(pd.DataFrame(list(rows), columns=list(STATUS_COLUMNS)))
    kept = previous[~previous["ID"].isin(set(new["ID"]))]
    merged = pd.concat([kept, new], ignore_index=True) if len(kept) else new
    merged = merged.sort_values("ID", kind="stable").reset_index(drop=True)
    write_parquet(merged, path)
    return merged


def _row(image_id: str, backend: str | None, **values: Any) -> dict[str, Any]:
    row = dict.fromkeys(STATUS_COLUMNS)
    row.update(ID=image_id, backend=backend, **values)
    return row


def _remove_outputs(out_dir: Path, image_id: str) -> None:
    """Remove what a failed image may have left (masks of an earlier run, an overlay): it is retried."""
    for path in (*mask_paths(out_dir / "masks", image_id), out_dir / "overlays" / f"{image_id}.png"):
        path.unlink(missing_ok=True)


def _skipped_row(image_id: str, previous: dict[str, dict[str, Any]], masks_dir: Path) -> dict[str, Any]:
    """Row of a finished image: the previous one when it says ok, else rebuilt from its cell mask."""
    old = previous.get(image_id)
    if old is not None and old.get("status") == "ok":
        return old
    try:
        cells = read_mask(mask_paths(masks_dir, image_id)[0])
        return _row(image_id, None, width=cells.shape[1], height=cells.shape[0], n_cells=_count_cells(cells),
                    status="ok")  # fmt: skip
    except ImageSetError as e:
        return _row(image_id, None, status="failed", error=str(e))


# --------------------------------------------------------------------------- the job
def segment_folder(
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    backend: str = "builtin",
    backend_options: dict[str, Any] | None = None,
    workers: int = 1,
    overwrite: bool = False,
    overlays: bool = False,
    ids: Iterable[str] | None = None,
    table: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
) -> pd.DataFrame:
    """Segment every image set of ``images_dir`` (or the given ``ids``) into ``out_dir``.

    Parameters
    ----------
    images_dir : path
        Folder of ``<ID>_{red,green,blue,yellow}.<ext>`` files.
    out_dir : path
        Gets ``masks/``, ``overlays/`` (with ``overlays``) and the status table.
    backend, backend_options : str, dict
        Backend name for :func:`hpacell.segmentation.backends.get_backend` and its options.
    workers : int
        Worker processes for CPU backends (``<= 1``: this process).
    overwrite : bool
        Redo images whose two masks already exist.
    overlays : bool
        Also write ``overlays/<ID>.png`` (composite with outlines, at most 1024 px).
    ids : iterable of str, optional
        Only these IDs (an ID without image files becomes a failed row).
    table : path, optional
        Status table path (default ``out_dir/segmentation.parquet``).
    checkpoint_every : int
        Rewrite the table every this many finished images.

    Returns
    -------
    pandas.DataFrame
        The status rows of this run's images (segmented now or skipped as finished),
        sorted by ID; the file holds these merged with earlier rows.
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    masks_dir = out_dir / "masks"
    table_path = Path(table) if table is not None else out_dir / "segmentation.parquet"
    options = dict(backend_options or {})
    sets = find_image_sets(images_dir)
    if not sets:
        raise InputError(
            f"{images_dir}: no image sets found (expected <ID>_{{red,green,blue,yellow}}.<png|tif|jpg> files)"
        )
    wanted = list(sets) if ids is None else list(dict.fromkeys(ids))
    # masks/ is segment's own (a folder of someone else's masks, e.g. synth's truth, is refused: its files
    # would count as finished images); its masks are reused only when made by this backend and options.
    claim_folder(masks_dir, "segment", legacy=["../segmentation.parquet"])
    stamp = {
        "backend": backend,
        "options": {k: v for k, v in options.items() if k not in RUN_ONLY_OPTIONS},
    }
    stamp_path = masks_dir / STAMP
    if any(masks_dir.glob(f"*{CELLMASK_SUFFIX}")) and read_stamp(stamp_path) is not None:
        check_stamp(stamp_path, stamp, overwrite=overwrite, what="masks", folder=out_dir)

    # Temp files of killed runs (only ours: shards of other jobs may be writing beside us).
    names = {p.name for i in wanted for p in mask_paths(masks_dir, i)}
    removed = _clean_temps(masks_dir, names) + _clean_temps(
        out_dir / "overlays", {f"{i}.png" for i in wanted}
    )
    for stale in table_path.parent.glob(f".{table_path.stem}.*.tmp{table_path.suffix}"):
        stale.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("removed %d stale temp file(s) of an interrupted run", removed)

    previous = read_status_table(table_path)
    prev_rows = {r["ID"]: r for r in previous.to_dict("records")}
    rows: dict[str, dict[str, Any]] = {}
    todo: list[tuple[str, dict[str, Path]]] = []
    for image_id in wanted:
        if image_id not in sets:
            rows[image_id] = _row(
                image_id, backend, status="failed", error=f"{images_dir}: no image files for ID {image_id!r}"
            )
        elif not overwrite and all(p.is_file() for p in mask_paths(masks_dir, image_id)):
            rows[image_id] = _skipped_row(image_id, prev_rows, masks_dir)
        else:
            todo.append((image_id, sets[image_id]))
    log.info("%d image(s): %d to segment, %d already done", len(wanted), len(todo), len(wanted) - len(todo))

    if todo:
        model = get_backend(backend, **options)  # fails early (e.g. missing model files) before any work
        write_stamp(stamp_path, stamp)
        if overwrite:
            # The cell mask marks an image done: drop it before redoing the image, so that an image that
            # fails now (or a killed run) is not counted finished, with stale masks, by the next run.
            for image_id, _ in todo:
                mask_paths(masks_dir, image_id)[0].unlink(missing_ok=True)
        if getattr(model, "uses_gpu", False):
            results = _run_batches(model, todo, out_dir, overlays, workers)
        else:
            if workers <= 1:
                _WORKER_BACKENDS[(backend, repr(sorted(options.items())))] = model
            items = [(i, p, out_dir, overlays, backend, options) for i, p in todo]
            results = (
                JobResult(r.item[0], r.value, r.error, r.seconds)
                for r in run_jobs(_segment_one, items, workers=workers, desc="segment", total=len(items))
            )
        done = 0
        for res in results:
            if res.ok:
                rows[res.item] = _row(res.item, backend, seconds=res.seconds, status="ok", **res.value)
            else:
                log.warning("%s: %s", res.item, res.error)
                _remove_outputs(out_dir, res.item)
                rows[res.item] = _row(
                    res.item, backend, seconds=res.seconds, status="failed", error=res.error
                )
            done += 1
            if checkpoint_every and done % checkpoint_every == 0:
                _write_table(rows.values(), previous, table_path)

    _write_table(rows.values(), previous, table_path)
    out = _typed(pd.DataFrame([rows[i] for i in wanted], columns=list(STATUS_COLUMNS)))
    return out.sort_values("ID", kind="stable").reset_index(drop=True)
