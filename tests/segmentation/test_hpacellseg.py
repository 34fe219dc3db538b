"""The hpacellseg adapter, driven by a tiny stand-in model of the same interface."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hpacellseg_standin import NotAModule, StandInUNet

from hpacell.segmentation.backends import get_backend
from hpacell.segmentation.backends.hpacellseg import (
    CELL_ENV,
    NUCLEI_ENV,
    HpaCellSegBackend,
    ModelFileError,
)
from hpacell.segmentation.backends.hpacellseg_labels import label_cells

# Size filters for the small synthetic images (the published ones are for 2048 px HPA images).
SMALL = dict(min_nucleus_size=100, min_cell_size=400, closing_radius=3)
CELLS = [((60, 64), (40, 32)), ((60, 122), (40, 30)), ((140, 200), (34, 40))]  # (cy, cx), (ry, rx)


def synth(h: int = 192, w: int = 256) -> np.ndarray:
    """Three cells (red + yellow ellipses, a blue nucleus each); the first two touch."""
    img = np.zeros((4, h, w), np.uint8)
    for (cy, cx), (ry, rx) in CELLS:
        cv2.ellipse(img[0], (cx, cy), (rx, ry), 0, 0, 360, 150, -1)
        cv2.ellipse(img[3], (cx, cy), (rx, ry), 0, 0, 360, 120, -1)
        cv2.circle(img[2], (cx, cy), 16, 220, -1)
    img[1] = img[0] // 3
    return img


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("models")
    torch.save(StandInUNet(), d / "nuclei.pth")
    torch.save(torch.nn.DataParallel(StandInUNet()), d / "cell.pth")  # published files may be wrapped
    return d / "nuclei.pth", d / "cell.pth"


@pytest.fixture(scope="module")
def backend(models) -> HpaCellSegBackend:
    return HpaCellSegBackend(*models, device="cpu", batch_size=2, **SMALL)


def _check_consistent(cells: np.ndarray, nuclei: np.ndarray) -> None:
    ids = np.unique(cells[cells > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # 1..N
    assert not np.any((nuclei > 0) & (nuclei != cells))  # a nucleus carries its cell's id
    assert set(np.unique(nuclei[nuclei > 0])) == set(ids)  # every cell has its nucleus


def test_loads_standin_unwraps_dataparallel_and_logs(models, caplog):
    with caplog.at_level(logging.INFO, logger="hpacell.segmentation.backends.hpacellseg"):
        b = get_backend("hpacellseg", nuclei_model=models[0], cell_model=models[1], device="cpu")
    assert isinstance(b.cell_model, StandInUNet) and isinstance(b.nuclei_model, StandInUNet)
    assert not b.cell_model.training and b.device == "cpu" and not b.uses_gpu
    assert "weights_only=False" in caplog.text and str(models[1]) in caplog.text


def test_device_follows_the_shared_rule(models, monkeypatch):
    """The backend resolves its device like training and predict (hpacell.utils.device)."""
    from hpacell.utils.errors import InputError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert HpaCellSegBackend(*models, device="auto").device == "cpu"
    with pytest.raises(InputError, match="no CUDA GPU"):
        HpaCellSegBackend(*models, device="cuda")
    with pytest.raises(InputError, match="expected auto, cpu, cuda or cuda:N"):
        HpaCellSegBackend(*models, device="gpu0")


def test_non_square_round_trip(backend):
    img = synth()  # 192 x 256: scaled 48 x 64, padded to 64 x 64
    cells, nuclei = backend.segment(img)
    assert cells.shape == nuclei.shape == img.shape[1:]
    _check_consistent(cells, nuclei)
    assert cells.max() == len(CELLS)
    centres = [cells[cy, cx] for (cy, cx), _ in CELLS]
    assert sorted(centres) == [1, 2, 3]  # each drawn cell is its own instance, in the right place
    for (cy, cx), (ry, rx) in CELLS:
        lab = cells[cy, cx]
        drawn = np.zeros(img.shape[1:], np.uint8)
        cv2.ellipse(drawn, (cx, cy), (rx, ry), 0, 0, 360, 1, -1)
        inside = (cells == lab)[drawn > 0].mean()
        assert inside > 0.85  # covers the drawn cell (the touching neighbour takes a sliver)
        assert nuclei[cy, cx] == lab
    # The transposed image gives the transposed segmentation: width and height are not swapped anywhere.
    t_cells, _ = backend.segment(np.ascontiguousarray(img.transpose(0, 2, 1)))
    assert t_cells.shape == (256, 192)
    assert ((t_cells.T > 0) != (cells > 0)).mean() < 0.01


def test_batches_mixed_sizes_and_16bit(backend):
    img = synth()
    img16 = img.astype(np.uint16) * 16  # 12-bit data in 16-bit files
    small = synth(160, 224)
    backend.cell_model.calls.clear()
    results = backend.segment_batch([img, img16, small])
    assert [c.shape for c, _ in results] == [(192, 256), (192, 256), (160, 224)]
    assert [c[0] for c in backend.cell_model.calls] == [2, 1]  # batch_size=2 on the device
    single, _ = backend.segment(img)
    np.testing.assert_array_equal(results[0][0], single)
    c16 = results[1][0]
    assert c16.max() == single.max() and ((c16 > 0) != (single > 0)).mean() < 0.01
    for cells, nuclei in results:
        _check_consistent(cells, nuclei)


def test_all_dark_image_gives_empty_masks(backend):
    cells, nuclei = backend.segment(np.zeros((4, 96, 128), np.uint8))
    assert cells.shape == (96, 128) and cells.max() == 0 and nuclei.max() == 0


def test_size_filters_drop_small_cells(models):
    b = HpaCellSegBackend(*models, device="cpu", min_nucleus_size=100, min_cell_size=50_000)
    cells, nuclei = b.segment(synth())
    assert cells.max() == 0 and nuclei.max() == 0


def maps(nuclei_fg: np.ndarray, cell_fg: np.ndarray, cell_border: np.ndarray | None = None):
    """Reference-layout uint8 ``(H, W, 3)`` maps (channel 1 border, 2 foreground) from 0/1 planes."""
    nuclei_map = np.zeros((*nuclei_fg.shape, 3), np.uint8)
    cell_map = np.zeros_like(nuclei_map)
    nuclei_map[..., 2] = nuclei_fg * 255
    cell_map[..., 2] = cell_fg * 255
    if cell_border is not None:
        cell_map[..., 1] = cell_border * 255
    return cell_map, nuclei_map


def two_touching_cells():
    yy, xx = np.mgrid[:120, :200]
    nuc_fg = (((yy - 60) ** 2 + (xx - 50) ** 2) < 15**2) | (((yy - 60) ** 2 + (xx - 150) ** 2) < 15**2)
    cell_fg = (np.abs(yy - 60) < 40) & (np.abs(xx - 100) < 90)
    cell_border = (np.abs(xx - 100) < 3) & cell_fg  # a touching border between the two cells
    return maps(nuc_fg, cell_fg, cell_border), cell_fg


def test_touching_cells_get_a_2px_gap_unless_boundary_gaps_is_false():
    (cell_map, nuclei_map), cell_fg = two_touching_cells()
    cells, nuclei = label_cells(cell_map, nuclei_map, **SMALL)
    assert cells.dtype == np.uint16 and cells.max() == 2 and cells[60, 50] != cells[60, 150]
    _check_consistent(cells, nuclei)
    row = cells[60, 90:110]
    assert np.count_nonzero(row == 0) == 2  # the reference's gap between touching cells
    # each of the two "fill holes" steps shaves 1 px off the outer edges (the border zone grows back)
    assert not cells[21].any() and not cells[22, :98].any() and not cells[:, 11:13].any()
    assert (cells[23:98, 13:188] > 0).mean() > 0.98
    touching, t_nuclei = label_cells(cell_map, nuclei_map, boundary_gaps=False, **SMALL)
    assert touching.max() == 2 and ((touching > 0) == cell_fg).all()  # no gap, nothing shaved
    _check_consistent(touching, t_nuclei)


def test_a_piece_cut_off_from_its_nucleus_is_kept_as_a_cell():
    # two 100 px squares joined by a 2 px bridge; the nucleus is in the left one. The boundary
    # removal of the reference's "fill holes" cuts the bridge: the right square becomes a cell.
    yy, xx = np.mgrid[:150, :300]
    cell_fg = (yy >= 25) & (yy < 125) & (((xx >= 20) & (xx < 120)) | ((xx >= 160) & (xx < 260)))
    cell_fg |= (yy >= 74) & (yy < 76) & (xx >= 120) & (xx < 160)
    nuc_fg = ((yy - 75) ** 2 + (xx - 70) ** 2) < 20**2
    cell_map, nuclei_map = maps(nuc_fg, cell_fg)
    cells, nuclei = label_cells(cell_map, nuclei_map, min_nucleus_size=1000)
    assert cells.max() == 2 and cells[75, 70] == 1 and cells[75, 210] == 2
    assert set(np.unique(nuclei)) == {0, 1}  # the fragment has no nucleus
    assert not np.any((nuclei > 0) & (nuclei != cells))
    one, _ = label_cells(cell_map, nuclei_map, min_nucleus_size=1000, boundary_gaps=False)
    assert one.max() == 1


def test_more_than_255_cells_wrap_as_in_the_reference():
    # 300 separate cells (15 rows x 20 columns). The reference casts the first watershed's ids to
    # uint8: the cell of the 256th nucleus (raster order) becomes background and is lost; ids
    # 257..300 share values with 1..44 but are separate pieces, so they come back as cells.
    rows, cols, tile = 15, 20, 56
    cell_fg = np.zeros((rows * tile, cols * tile), bool)
    nuc_fg = np.zeros_like(cell_fg)
    for r in range(rows):
        for c in range(cols):
            y, x = r * tile + 8, c * tile + 8
            cell_fg[y : y + 40, x : x + 40] = True
            nuc_fg[y + 8 : y + 32, x + 8 : x + 32] = True
    cell_map, nuclei_map = maps(nuc_fg, cell_fg)
    cells, nuclei = label_cells(cell_map, nuclei_map, min_nucleus_size=100, min_cell_size=1000)
    assert cells.dtype == np.uint16 and cells.max() == 299
    lost = divmod(255, cols)  # the 256th cell
    y, x = lost[0] * tile + 28, lost[1] * tile + 28
    assert cells[y, x] == 0 and cells[y, x + tile] > 0 and cells[y, x - tile] > 0
    _check_consistent(cells, nuclei)


def test_seed_rule_adds_the_border_maps_in_uint8_as_the_reference():
    # nuclei border 200 + cell border 100 wraps to 44 in uint8: seeds are allowed (1 - 44/255 > 0.05)
    yy, xx = np.mgrid[:160, :160]
    nuc_fg = ((yy - 80) ** 2 + (xx - 80) ** 2) < 30**2
    cell_fg = ((yy - 80) ** 2 + (xx - 80) ** 2) < 70**2
    cell_map, nuclei_map = maps(nuc_fg, cell_fg)
    nuclei_map[..., 1] = np.where(nuc_fg, 200, 0)
    cell_map[..., 1] = np.where(nuc_fg, 100, 0)
    cells, nuclei = label_cells(cell_map, nuclei_map, min_nucleus_size=1000)
    assert cells.max() == 1 and nuclei[80, 80] == 1
    cell_map[..., 1] = np.where(nuc_fg, 50, 0)  # 250: no wrap, no seeds, no cell
    cells, _ = label_cells(cell_map, nuclei_map, min_nucleus_size=1000)
    assert cells.max() == 0


def test_empty_maps_give_empty_masks():
    zeros = np.zeros((64, 96, 3), np.uint8)
    cells, nuclei = label_cells(zeros, zeros)
    assert cells.shape == nuclei.shape == (64, 96) and not cells.any() and not nuclei.any()
    assert cells.dtype == nuclei.dtype == np.uint16


def test_missing_weights_error_says_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv(NUCLEI_ENV, raising=False)
    monkeypatch.delenv(CELL_ENV, raising=False)
    with pytest.raises(ModelFileError) as e:
        HpaCellSegBackend(nuclei_model=tmp_path / "nope.pth", cell_model=tmp_path / "nope2.pth")
    msg = str(e.value)
    assert (
        "nope.pth" in msg
        and "4665863" in msg
        and "dpn_unet_nuclei_v1.pth" in msg
        and "never downloads" in msg
    )
    with pytest.raises(ModelFileError, match="--nuclei-model"):
        HpaCellSegBackend()


def test_env_vars_are_the_default_paths(models, monkeypatch):
    monkeypatch.setenv(NUCLEI_ENV, str(models[0]))
    monkeypatch.setenv(CELL_ENV, str(models[1]))
    assert HpaCellSegBackend(device="cpu").nuclei_model is not None


def test_a_file_that_is_not_a_module_is_rejected(tmp_path, models):
    bad = tmp_path / "state.pth"
    torch.save(StandInUNet().state_dict(), bad)
    with pytest.raises(ModelFileError, match="whole pickled torch module"):
        HpaCellSegBackend(nuclei_model=bad, cell_model=models[1], device="cpu")
    other = tmp_path / "other.pth"
    other.write_bytes(pickle.dumps(NotAModule()))
    with pytest.raises(ModelFileError, match="other.pth"):
        HpaCellSegBackend(nuclei_model=models[0], cell_model=other, device="cpu")


# --------------------------------------------------------------------------- real weights
def _real_weights() -> tuple[str, str] | None:
    paths = os.environ.get(NUCLEI_ENV), os.environ.get(CELL_ENV)
    return paths if all(p and Path(p).is_file() for p in paths) else None  # type: ignore[return-value]


@pytest.mark.hpacellseg_weights
@pytest.mark.skipif(_real_weights() is None, reason=f"set {NUCLEI_ENV} and {CELL_ENV} to the model files")
def test_real_weights_match_reference_masks(hpa2021, real_ids):
    from hpacell.segmentation.io import read_image_set, read_mask
    from hpacell.segmentation.matching import segmentation_scores

    b = HpaCellSegBackend(*_real_weights(), device="auto", batch_size=2)
    images = [read_image_set(hpa2021 / "images", i) for i in real_ids[:2]]
    for image_id, (cells, nuclei) in zip(real_ids, b.segment_batch(images), strict=False):
        ref = read_mask(hpa2021 / "masks" / f"{image_id}_cellmask.png")
        assert cells.shape == ref.shape
        _check_consistent(cells, nuclei)
        scores = segmentation_scores(cells, ref, iou_threshold=0.6)
        assert scores.recall > 0.8 and scores.precision > 0.8, (image_id, scores)
