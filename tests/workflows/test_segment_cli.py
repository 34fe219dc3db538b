"""``hpacell segment`` end to end on small synthetic images (builtin and a stand-in hpacellseg)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hpacell.cellcrops.synth import make_synth_dataset
from hpacell.segmentation.io import mask_paths, read_mask
from hpacell.segmentation.matching import segmentation_scores
from hpacell.workflows.cli import COMMANDS, app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "segmentation"))
from hpacellseg_standin import StandInUNet  # noqa: E402

runner = CliRunner()
# The synthetic cells are drawn at about 0.3x the HPA pixel scale (size 256, cell_scale 0.5).
SMALL = ["-O", "pixel_scale=0.3"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("synth")
    make_synth_dataset(d, 4, size=256, seed=3, height=192, cell_scale=0.5)
    return d


@pytest.fixture
def images(synth, tmp_path) -> Path:
    d = tmp_path / "images"
    shutil.copytree(synth / "images", d)
    return d


def invoke(*args: str):
    return runner.invoke(app, ["segment", *map(str, args)])


def test_registered():
    assert "segment" in COMMANDS
    res = runner.invoke(app, ["segment", "--help"])
    assert res.exit_code == 0 and "--overlays" in res.output


def test_builtin_end_to_end_failure_exit_code_and_resume(synth, images, tmp_path):
    out = tmp_path / "out"
    (images / "synth-0001_green.png").write_bytes(b"garbage")
    res = invoke(images, "--out", out, *SMALL, "--overlays")
    assert res.exit_code == 1
    assert "synth-0001: ImageSetError:" in res.output and "synth-0001_green.png" in res.output
    assert "3 ok" in res.output and "1 failed" in res.output
    table = pd.read_parquet(out / "segmentation.parquet")
    assert list(table["status"]) == ["ok", "failed", "ok", "ok"]
    assert set(table["backend"]) == {"builtin"}
    for image_id in ("synth-0000", "synth-0002", "synth-0003"):
        cells = read_mask(mask_paths(out / "masks", image_id)[0])
        truth = read_mask(mask_paths(synth / "masks", image_id)[0])
        assert cells.dtype == np.uint16 and cells.shape == (192, 256)
        scores = segmentation_scores(cells, truth)
        assert scores.recall >= 0.6 and scores.precision >= 0.6, (image_id, scores)
        assert (out / "overlays" / f"{image_id}.png").is_file()
    # fix the broken file: the rerun segments only that image and succeeds
    shutil.copy(synth / "images" / "synth-0001_green.png", images / "synth-0001_green.png")
    before = mask_paths(out / "masks", "synth-0000")[0].stat().st_mtime_ns
    res = invoke(images, "--out", out, *SMALL)
    assert res.exit_code == 0, res.output
    assert "4 ok" in res.output
    assert mask_paths(out / "masks", "synth-0000")[0].stat().st_mtime_ns == before
    assert (pd.read_parquet(out / "segmentation.parquet")["status"] == "ok").all()


def test_ids_and_table_options(images, tmp_path):
    (tmp_path / "ids.txt").write_text("synth-0002\nsynth-0003\n")
    res = invoke(images, "--out", tmp_path / "out", *SMALL, "--ids", tmp_path / "ids.txt",
                 "--table", tmp_path / "shard.parquet", "--workers", "2")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert list(pd.read_parquet(tmp_path / "shard.parquet")["ID"]) == ["synth-0002", "synth-0003"]
    assert not (tmp_path / "out" / "segmentation.parquet").exists()
    names = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir() if not p.name.startswith("."))
    assert names == [f"synth-000{i}_{k}mask.png" for i in (2, 3) for k in ("cell", "nuclei")]


def test_hpacellseg_without_weights_is_a_clear_error(images, tmp_path, monkeypatch):
    monkeypatch.delenv("HPACELLSEG_NUCLEI_MODEL", raising=False)
    monkeypatch.delenv("HPACELLSEG_CELL_MODEL", raising=False)
    res = invoke(
        images, "--out", tmp_path / "out", "--backend", "hpacellseg", "--nuclei-model", tmp_path / "x.pth"
    )
    assert res.exit_code == 1
    assert "4665863" in res.output and "x.pth" in res.output
    assert not list((tmp_path / "out" / "masks").glob("*.png"))


def test_model_flags_need_hpacellseg(images, tmp_path):
    res = invoke(images, "--out", tmp_path / "out", "--nuclei-model", tmp_path / "x.pth")
    assert res.exit_code == 1 and "--nuclei-model only apply to --backend hpacellseg" in res.output
    res = invoke(images, "--out", tmp_path / "out", "-O", "novalue")
    assert res.exit_code == 1 and "KEY=VALUE" in res.output


def test_hpacellseg_with_standin_models(images, tmp_path):
    torch.save(StandInUNet(), tmp_path / "nuclei.pth")
    torch.save(StandInUNet(), tmp_path / "cell.pth")
    models = ["--nuclei-model", tmp_path / "nuclei.pth", "--cell-model", tmp_path / "cell.pth"]
    sizes = ["-O", "min_nucleus_size=50", "-O", "min_cell_size=200", "-O", "closing_radius=2"]
    res = invoke(images, "--out", tmp_path / "out", "--backend", "hpacellseg", *models, "--device", "cpu",
                 "--batch-size", "2", *sizes)  # fmt: skip
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "out" / "segmentation.parquet")
    assert (table["backend"] == "hpacellseg").all() and (table["n_cells"] > 0).all()
    cells = read_mask(mask_paths(tmp_path / "out" / "masks", "synth-0000")[0])
    assert cells.shape == (192, 256)


def test_bad_backend_option_is_one_line_naming_it(images, tmp_path):
    res = invoke(images, "--out", tmp_path / "out", "-O", "pixel_scale=abc")
    assert res.exit_code == 1
    assert "error: segmentation option pixel_scale='abc' (backend builtin): expected a number" in res.output
    assert "Traceback" not in res.output
    res = invoke(images, "--out", tmp_path / "out", "-O", "pixel_sclae=0.5")
    assert res.exit_code == 1 and "unknown segmentation option 'pixel_sclae'" in res.output


def test_folder_without_image_sets_exits_1(tmp_path):
    (tmp_path / "none").mkdir()
    res = invoke(tmp_path / "none", "--out", tmp_path / "out")
    assert res.exit_code == 1 and "no image sets found" in res.output
