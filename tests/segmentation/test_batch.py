"""The segmentation batch job: bad inputs, resume, overlays, worker processes, GPU batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from standin_backend import BatchingBackend

from hpacell.segmentation.backends import BACKENDS
from hpacell.segmentation.batch import STATUS_COLUMNS, read_status_table, segment_folder
from hpacell.segmentation.io import CHANNELS, mask_paths, read_mask
from hpacell.utils.tables import read_id_list

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def standin_backends(monkeypatch):
    monkeypatch.setitem(BACKENDS, "standin", "standin_backend:ThresholdBackend")
    monkeypatch.setitem(BACKENDS, "standin-gpu", "standin_backend:BatchingBackend")


def make_image(h: int = 64, w: int = 80, n: int = 3, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """``n`` separate round cells (red) with a nucleus (blue) each; 8-bit or 12-bit-in-16-bit."""
    rng = np.random.default_rng(seed)
    img = np.zeros((4, h, w), np.uint8)
    r = max(3, min(h, w) // 8)
    for k in range(n):
        cy = int(rng.integers(r + 1, h - r - 1))
        cx = int((k + 0.5) * w / n)
        cv2.circle(img[0], (cx, cy), r, 180, -1)
        cv2.circle(img[2], (cx, cy), max(1, r // 2), 200, -1)
        cv2.circle(img[3], (cx, cy), r, 90, -1)
    img[1] = img[0] // 2
    return img.astype(np.uint16) * 16 if dtype == np.uint16 else img


def write_set(folder: Path, image_id: str, img: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for ch, plane in zip(CHANNELS, img, strict=True):
        assert cv2.imwrite(str(folder / f"{image_id}_{ch}.png"), plane)


@pytest.fixture
def images(tmp_path) -> Path:
    d = tmp_path / "images"
    write_set(d, "a_ok", make_image(seed=1))
    write_set(d, "b_nonsquare", make_image(48, 100, n=4, seed=2))
    write_set(d, "c_16bit", make_image(seed=1, dtype=np.uint16))
    write_set(d, "d_dark", np.zeros((4, 40, 40), np.uint8))
    write_set(d, "e_corrupt", make_image(seed=3))
    (d / "e_corrupt_red.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    write_set(d, "f_missing", make_image(seed=4))
    (d / "f_missing_yellow.png").unlink()
    write_set(d, "g_sizes", make_image(seed=5))
    assert cv2.imwrite(str(d / "g_sizes_blue.png"), np.zeros((30, 30), np.uint8))
    return d


def by_id(table: pd.DataFrame) -> dict[str, dict]:
    return {r["ID"]: r for r in table.to_dict("records")}


def test_bad_inputs_are_recorded_and_the_rest_goes_on(images, tmp_path):
    out = tmp_path / "out"
    table = segment_folder(images, out, backend="standin")
    assert list(table.columns) == list(STATUS_COLUMNS)
    rows = by_id(table)
    assert sorted(rows) == ["a_ok", "b_nonsquare", "c_16bit", "d_dark", "e_corrupt", "f_missing", "g_sizes"]
    assert {i for i, r in rows.items() if r["status"] == "failed"} == {"e_corrupt", "f_missing", "g_sizes"}
    assert "e_corrupt_red.png" in rows["e_corrupt"]["error"] and "corrupt" in rows["e_corrupt"]["error"]
    assert "f_missing_yellow.png" in rows["f_missing"]["error"]
    assert "g_sizes_blue.png" in rows["g_sizes"]["error"] and "shape" in rows["g_sizes"]["error"]
    for i in ("e_corrupt", "f_missing", "g_sizes"):
        assert not any(p.exists() for p in mask_paths(out / "masks", i))
    # what is on disk equals what came back
    pd.testing.assert_frame_equal(read_status_table(out / "segmentation.parquet"), table)

    # the all-dark image: 0 cells, empty masks, status ok
    assert rows["d_dark"]["status"] == "ok" and rows["d_dark"]["n_cells"] == 0
    for p in mask_paths(out / "masks", "d_dark"):
        m = read_mask(p)
        assert m.dtype == np.uint16 and m.shape == (40, 40) and m.max() == 0

    # non-square: masks at input size (H, W), labels consistent
    cells = read_mask(mask_paths(out / "masks", "b_nonsquare")[0])
    nuclei = read_mask(mask_paths(out / "masks", "b_nonsquare")[1])
    assert cells.shape == (48, 100) and cells.dtype == np.uint16
    assert (rows["b_nonsquare"]["width"], rows["b_nonsquare"]["height"]) == (100, 48)
    assert rows["b_nonsquare"]["n_cells"] == 4 == cells.max()
    assert not np.any((nuclei > 0) & (nuclei != cells))

    # 16-bit (12-bit data) gives the same masks as its 8-bit twin
    c8 = read_mask(mask_paths(out / "masks", "a_ok")[0])
    c16 = read_mask(mask_paths(out / "masks", "c_16bit")[0])
    np.testing.assert_array_equal(c8, c16)
    assert rows["a_ok"]["n_cells"] == 3 and rows["a_ok"]["backend"] == "standin"
    assert rows["a_ok"]["seconds"] >= 0


def test_resume_skips_done_retries_failures_and_overwrite_redoes(images, tmp_path):
    out = tmp_path / "out"
    first = by_id(segment_folder(images, out, backend="standin"))
    mtime = mask_paths(out / "masks", "a_ok")[0].stat().st_mtime_ns
    # fix the corrupt image; the rerun redoes only the failures
    write_set(images, "e_corrupt", make_image(seed=3))
    second = by_id(segment_folder(images, out, backend="standin"))
    assert second["e_corrupt"]["status"] == "ok" and second["f_missing"]["status"] == "failed"
    assert second["a_ok"]["seconds"] == first["a_ok"]["seconds"]  # the kept row, not a new run
    assert mask_paths(out / "masks", "a_ok")[0].stat().st_mtime_ns == mtime
    third = by_id(segment_folder(images, out, backend="standin", overwrite=True))
    assert mask_paths(out / "masks", "a_ok")[0].stat().st_mtime_ns != mtime
    assert third["a_ok"]["n_cells"] == 3


def test_rows_are_rebuilt_from_masks_when_the_table_is_lost(images, tmp_path):
    out = tmp_path / "out"
    segment_folder(images, out, backend="standin", ids=["a_ok", "d_dark"])
    (out / "segmentation.parquet").unlink()
    rows = by_id(segment_folder(images, out, backend="standin", ids=["a_ok", "d_dark"]))
    assert rows["a_ok"]["status"] == "ok" and rows["a_ok"]["n_cells"] == 3 and rows["a_ok"]["width"] == 80
    assert rows["d_dark"]["n_cells"] == 0


def test_ids_subset_and_table_merge(images, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "ids.txt").write_text("# shard 0\na_ok\n\nb_nonsquare\n")
    (tmp_path / "ids.csv").write_text("ID,Label\nd_dark,0\nnot_there,1\n")
    assert read_id_list(tmp_path / "ids.txt") == ["a_ok", "b_nonsquare"]
    t1 = segment_folder(images, out, backend="standin", ids=read_id_list(tmp_path / "ids.txt"))
    assert list(t1["ID"]) == ["a_ok", "b_nonsquare"]
    t2 = segment_folder(images, out, backend="standin", ids=read_id_list(tmp_path / "ids.csv"))
    rows = by_id(t2)
    assert sorted(rows) == ["d_dark", "not_there"]
    assert rows["not_there"]["status"] == "failed" and "no image files" in rows["not_there"]["error"]
    on_disk = read_status_table(out / "segmentation.parquet")
    assert list(on_disk["ID"]) == ["a_ok", "b_nonsquare", "d_dark", "not_there"]
    (tmp_path / "bad.csv").write_text("Image,Label\nx,1\n")
    with pytest.raises(ValueError, match="bad.csv"):
        read_id_list(tmp_path / "bad.csv")


def test_worker_processes_match_one_process(images, tmp_path):
    one = segment_folder(images, tmp_path / "one", backend="standin")
    two = segment_folder(images, tmp_path / "two", backend="standin", workers=2)
    cols = ["ID", "width", "height", "n_cells", "status", "error"]
    pd.testing.assert_frame_equal(one[cols], two[cols])
    for i in one.loc[one["status"] == "ok", "ID"]:
        pairs = zip(
            mask_paths(tmp_path / "one" / "masks", i), mask_paths(tmp_path / "two" / "masks", i), strict=True
        )
        for a, b in pairs:
            np.testing.assert_array_equal(read_mask(a), read_mask(b))


def test_gpu_backend_runs_batches_and_isolates_failures(images, tmp_path):
    bad = make_image(seed=6)
    bad[1] = 255  # the backend raises on this one, inside a batch
    write_set(images, "h_backend_error", bad)
    BatchingBackend.batches.clear()
    rows = by_id(segment_folder(images, tmp_path / "out", backend="standin-gpu"))
    assert rows["h_backend_error"]["status"] == "failed" and "saturated" in rows["h_backend_error"]["error"]
    assert rows["e_corrupt"]["status"] == "failed" and rows["a_ok"]["status"] == "ok"
    assert rows["b_nonsquare"]["n_cells"] == 4 and rows["d_dark"]["n_cells"] == 0
    assert max(BatchingBackend.batches) == 2  # batched; reading failures never reach the backend


def test_backend_output_of_the_wrong_shape_is_a_failure(images, tmp_path):
    rows = by_id(
        segment_folder(
            images, tmp_path / "out", backend="standin", backend_options={"wrong_shape": True}, ids=["a_ok"]
        )
    )
    assert rows["a_ok"]["status"] == "failed" and "shape" in rows["a_ok"]["error"]


def test_overlays_are_rgb_and_downscaled(tmp_path):
    d = tmp_path / "images"
    write_set(d, "big", make_image(600, 1400, n=5))
    write_set(d, "small", make_image())
    segment_folder(d, tmp_path / "out", backend="standin", overlays=True)
    big = cv2.imread(str(tmp_path / "out" / "overlays" / "big.png"))
    small = cv2.imread(str(tmp_path / "out" / "overlays" / "small.png"))
    assert big.shape == (439, 1024, 3) and small.shape == (64, 80, 3)
    assert (small == 255).all(axis=2).any()  # white cell outlines drawn


def test_killed_run_leaves_no_half_file_and_rerun_completes(tmp_path):
    d = tmp_path / "images"
    n = 12
    for k in range(n):
        write_set(d, f"img{k:02d}", make_image(seed=k))
    out = tmp_path / "out"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from hpacell.segmentation.backends import BACKENDS;"
        "BACKENDS['standin'] = 'standin_backend:ThresholdBackend';"
        "from hpacell.segmentation.batch import segment_folder;"
        "segment_folder(sys.argv[2], sys.argv[3], 'standin', {'sleep': 0.25}, checkpoint_every=2)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(HERE), str(d), str(out)])
    try:
        deadline = time.time() + 60
        while len(list((out / "masks").glob("*_cellmask.png"))) < 3 and time.time() < deadline:
            assert proc.poll() is None, "the job ended before it could be killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    masks = out / "masks"
    done = {p.name[: -len("_cellmask.png")] for p in masks.glob("*_cellmask.png")}
    assert 3 <= len(done) < n
    for p in masks.glob("*.png"):  # every mask that exists is whole
        assert read_mask(p).shape == (64, 80)
    # a write cut short leaves only a temp file: make one, the rerun must clean it up
    (masks / ".img11_cellmask.png.abc123.tmp").write_bytes(b"half")
    mtimes = {i: mask_paths(masks, i)[0].stat().st_mtime_ns for i in done}
    table = segment_folder(d, out, backend="standin", backend_options={"sleep": 0.25})  # same options
    assert (table["status"] == "ok").all() and len(table) == n
    assert not [p for p in masks.iterdir() if p.name.endswith(".tmp")]
    assert all(mask_paths(masks, i)[0].stat().st_mtime_ns == t for i, t in mtimes.items())
    assert not list(out.glob(".*.tmp*"))


def test_stale_table_temp_is_removed(images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".segmentation.{os.getpid() + 1}.tmp.parquet"
    stale.write_bytes(b"x")
    segment_folder(images, out, backend="standin", ids=["a_ok"])
    assert not stale.exists()


def test_gpu_backend_labels_in_worker_processes(tmp_path, monkeypatch):
    import torch
    from hpacellseg_standin import StandInUNet

    from hpacell.segmentation.backends.hpacellseg import HpaCellSegBackend

    d = tmp_path / "images"
    for k in range(3):
        write_set(d, f"img{k}", make_image(256, 320, seed=k))
    (d / "img1_blue.png").write_bytes(b"broken")
    torch.save(StandInUNet(), tmp_path / "m.pth")
    monkeypatch.setattr(HpaCellSegBackend, "uses_gpu", True)  # take the device path on the CPU
    options = dict(nuclei_model=tmp_path / "m.pth", cell_model=tmp_path / "m.pth", device="cpu", batch_size=2,
                   min_nucleus_size=20, min_cell_size=50, closing_radius=1)  # fmt: skip
    import hpacell.segmentation.batch as batch

    pools = []

    class Spy(batch.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(batch, "ProcessPoolExecutor", Spy)
    one = segment_folder(d, tmp_path / "one", backend="hpacellseg", backend_options=options)
    assert pools == []
    two = segment_folder(d, tmp_path / "two", backend="hpacellseg", backend_options=options, workers=2)
    assert pools == [(2,)]  # the labelling ran in 2 worker processes
    cols = ["ID", "width", "height", "n_cells", "status", "error"]
    pd.testing.assert_frame_equal(one[cols], two[cols])
    assert list(two["status"]) == ["ok", "failed", "ok"] and (two.loc[[0, 2], "n_cells"] == 3).all()
    for i in ("img0", "img2"):
        for a, b in zip(
            mask_paths(tmp_path / "one" / "masks", i), mask_paths(tmp_path / "two" / "masks", i), strict=True
        ):
            np.testing.assert_array_equal(read_mask(a), read_mask(b))


# --------------------------------------------------------------------------- issue 13
def test_image_failing_on_overwrite_loses_its_stale_masks_and_is_retried(images, tmp_path):
    out = tmp_path / "out"
    assert by_id(segment_folder(images, out, backend="standin"))["a_ok"]["status"] == "ok"
    (images / "a_ok_red.png").write_bytes(b"garbage")  # the image breaks, its old masks remain
    rows = by_id(segment_folder(images, out, backend="standin", overwrite=True))
    assert rows["a_ok"]["status"] == "failed"
    assert not any(p.exists() for p in mask_paths(out / "masks", "a_ok"))
    rows = by_id(segment_folder(images, out, backend="standin"))  # the next rerun retries it
    assert rows["a_ok"]["status"] == "failed"
    # an --overwrite refused for a bad backend option removes nothing
    from hpacell.utils.errors import InputError

    with pytest.raises(InputError, match="threshold='x'"):
        segment_folder(images, out, backend="standin", backend_options={"threshold": "x"}, overwrite=True)
    assert all(p.is_file() for p in mask_paths(out / "masks", "b_nonsquare"))


def test_masks_are_reused_only_with_the_same_backend_options(images, tmp_path):
    """The principle of case 5, for segment: other options over finished masks are refused."""
    from hpacell.utils.errors import InputError

    out = tmp_path / "out"
    segment_folder(images, out, backend="standin")
    with pytest.raises(InputError, match=r"masks were made with other inputs or options \(options: "):
        segment_folder(images, out, backend="standin", backend_options={"threshold": 0.5})
    rows = by_id(
        segment_folder(images, out, backend="standin", backend_options={"threshold": 0.5}, overwrite=True)
    )
    assert rows["a_ok"]["status"] == "ok"
    assert segment_folder(images, out, backend="standin", backend_options={"threshold": 0.5}) is not None
    # someone else's masks folder (e.g. synth's truth) is never taken for finished images
    theirs = tmp_path / "theirs"
    (theirs / "masks").mkdir(parents=True)
    (theirs / "masks" / "a_ok_cellmask.png").write_bytes(b"x")
    with pytest.raises(InputError, match="not made by 'hpacell segment'"):
        segment_folder(images, theirs, backend="standin")


def test_folder_without_image_sets_is_an_error(tmp_path):
    from hpacell.utils.errors import InputError

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no image sets found"):
        segment_folder(tmp_path / "empty", tmp_path / "out", backend="standin")
    assert not (tmp_path / "out").exists()
