import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from hpacell.segmentation.io import (
    CHANNELS,
    ImageSetError,
    find_image_sets,
    read_image_set,
    read_mask,
    write_mask,
)
from hpacell.utils.files import atomic_write_bytes
from hpacell.utils.intensity import effective_bits, to_float, to_uint8


def _write_set(folder: Path, image_id: str, shape=(40, 60), dtype=np.uint8, ext=".png", seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == np.uint8 else 4095
    planes = rng.integers(0, hi + 1, size=(4, *shape)).astype(dtype)
    for ch, plane in zip(CHANNELS, planes, strict=True):
        assert cv2.imwrite(str(folder / f"{image_id}_{ch}{ext}"), plane)
    return planes


def test_read_real_images_channel_order(hpa2021, real_ids):
    sets = find_image_sets(hpa2021 / "images")
    assert sorted(sets) == real_ids
    for image_id in real_ids[:2]:
        img = read_image_set(sets[image_id])
        assert img.shape == (4, 2048, 2048) and img.dtype == np.uint8
        for i, ch in enumerate(CHANNELS):
            ref = cv2.imread(str(hpa2021 / "images" / f"{image_id}_{ch}.png"), cv2.IMREAD_GRAYSCALE)
            np.testing.assert_array_equal(img[i], ref)


def test_id_is_everything_before_last_underscore(tmp_path):
    _write_set(tmp_path, "plate_1_A1")
    (tmp_path / "notes.txt").write_text("x")
    assert list(find_image_sets(tmp_path)) == ["plate_1_A1"]
    assert read_image_set(tmp_path, "plate_1_A1").shape == (4, 40, 60)


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg"])
def test_non_square_and_formats(tmp_path, ext):
    planes = _write_set(tmp_path, "a", shape=(48, 64), ext=ext)
    img = read_image_set(tmp_path, "a")
    assert img.shape == (4, 48, 64)
    if ext != ".jpg":
        np.testing.assert_array_equal(img, planes)


def test_16bit_kept_and_normalised(tmp_path):
    planes = _write_set(tmp_path, "b", dtype=np.uint16)
    img = read_image_set(tmp_path, "b")
    assert img.dtype == np.uint16
    np.testing.assert_array_equal(img, planes)
    assert effective_bits(img) == 12
    f = to_float(img)
    assert f.dtype == np.float32 and 0 <= f.min() and f.max() <= 1
    u = to_uint8(img)
    assert u.dtype == np.uint8
    np.testing.assert_array_equal(u, np.rint(img / 4095 * 255).astype(np.uint8))
    full = np.array([[0, 65535, 257]], dtype=np.uint16)
    assert to_uint8(full).tolist() == [[0, 255, 1]]


def test_missing_channel_names_file(tmp_path):
    _write_set(tmp_path, "c")
    (tmp_path / "c_yellow.png").unlink()
    with pytest.raises(ImageSetError, match=r"c_yellow\.png.*missing yellow"):
        read_image_set(tmp_path, "c")
    with pytest.raises(ImageSetError, match="c_yellow"):
        read_image_set(find_image_sets(tmp_path)["c"])
    assert find_image_sets(tmp_path, complete_only=True) == {}


def test_corrupt_file_names_file(tmp_path):
    _write_set(tmp_path, "d")
    (tmp_path / "d_green.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(ImageSetError, match=r"d_green\.png: corrupt"):
        read_image_set(tmp_path, "d")
    (tmp_path / "d_green.png").write_bytes(b"")
    with pytest.raises(ImageSetError, match=r"d_green\.png: corrupt"):
        read_image_set(tmp_path, "d")


def test_shape_mismatch_names_file(tmp_path):
    _write_set(tmp_path, "e")
    cv2.imwrite(str(tmp_path / "e_blue.png"), np.zeros((41, 60), np.uint8))
    with pytest.raises(ImageSetError, match=r"e_blue\.png: blue channel has shape \(41, 60\)"):
        read_image_set(tmp_path, "e")


def test_non_2d_file_names_file(tmp_path):
    _write_set(tmp_path, "f")
    rgb = np.random.default_rng(1).integers(0, 255, (40, 60, 3)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "f_red.png"), rgb)
    with pytest.raises(ImageSetError, match=r"f_red\.png: expected a 2-D grayscale"):
        read_image_set(tmp_path, "f")


def test_mask_roundtrip_uint16_atomic(tmp_path):
    labels = np.zeros((30, 50), np.int32)
    labels[2:10, 3:20] = 1
    labels[12:20, 5:9] = 300
    path = write_mask(tmp_path / "x_cellmask.png", labels)
    back = read_mask(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    assert [p.name for p in tmp_path.iterdir()] == ["x_cellmask.png"]
    with pytest.raises(ValueError):
        write_mask(tmp_path / "y.png", np.full((2, 2), 70000))


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, None)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_duplicate_channel_prefers_png_and_outputs_are_world_readable(tmp_path):
    _write_set(tmp_path, "g")
    cv2.imwrite(str(tmp_path / "g_red.tif"), np.zeros((40, 60), np.uint8))
    assert find_image_sets(tmp_path)["g"]["red"].name == "g_red.png"
    out = write_mask(tmp_path / "m.png", np.zeros((4, 4), np.uint16))
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


# --------------------------------------------------------------------------- issue 13
def test_bad_masks_are_refused_naming_the_file(tmp_path):
    from PIL import Image

    bits = tmp_path / "bits_cellmask.png"
    Image.fromarray(np.eye(20, dtype=bool)).save(bits)  # a 1-bit PNG: a binary picture
    with pytest.raises(ImageSetError, match=r"bits_cellmask\.png: a 1-bit PNG"):
        read_mask(bits)
    floats = np.zeros((20, 20), np.float32)
    floats[3:6, 3:6] = 1.5
    assert cv2.imwrite(str(tmp_path / "f.tiff"), floats)
    os.replace(tmp_path / "f.tiff", tmp_path / "f_cellmask.png")
    with pytest.raises(ImageSetError, match=r"f_cellmask\.png: mask must hold integer cell ids, got float32"):
        read_mask(tmp_path / "f_cellmask.png")
    neg = np.zeros((20, 20), np.int16)
    neg[1, 1] = -3
    assert cv2.imwrite(str(tmp_path / "n.tiff"), neg)
    os.replace(tmp_path / "n.tiff", tmp_path / "n_cellmask.png")
    with pytest.raises(ImageSetError, match=r"n_cellmask\.png: mask ids must be >= 0"):
        read_mask(tmp_path / "n_cellmask.png")


def test_one_channel_file_matcher_for_folder_and_set_reads(tmp_path):
    planes = np.random.default_rng(0).integers(0, 255, size=(4, 20, 30)).astype(np.uint8)
    for ch, plane in zip(CHANNELS, planes, strict=True):
        assert cv2.imwrite(str(tmp_path / f"UPPER_{ch.upper()}.PNG"), plane)
    assert list(find_image_sets(tmp_path)) == ["UPPER"]
    np.testing.assert_array_equal(read_image_set(tmp_path, "UPPER"), planes)  # what the report reads
    np.testing.assert_array_equal(read_image_set(find_image_sets(tmp_path)["UPPER"]), planes)
