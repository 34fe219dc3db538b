"""The Snakemake workflow: a dry run, a small local run, the SLURM profile's settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hpacell.cellcrops.synth import make_synth_dataset
from hpacell.workflows.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "workflows" / "Snakefile"
PROFILES = REPO / "workflows" / "profiles"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(
    shutil.which("snakemake", path=str(BIN)) is None, reason="snakemake not installed"
)


def snakemake(workdir: Path, *args: str, profile: Path = PROFILES / "default") -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(BIN / "snakemake"), "-s", str(SNAKEFILE), "--workflow-profile", str(profile), *args]
    # cwd = workdir: Snakemake's .snakemake/ state goes there, not into the repository.
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("wf")
    make_synth_dataset(d / "synth", 4, size=256, seed=7, height=192, cell_scale=0.5)
    images = d / "synth" / "images"
    for ch in ("red", "green", "blue", "yellow"):  # a fifth image, corrupt
        (images / f"zz-broken_{ch}.png").write_bytes(b"not a png")
    return images


def test_dry_run_plans_shards(images, tmp_path):
    res = snakemake(tmp_path, "-n", "--config", f"images={images}", f"out={tmp_path / 'out'}", "shard_size=2",
                    "crop=true")  # fmt: skip
    assert res.returncode == 0, res.stderr + res.stdout
    log = res.stdout + res.stderr
    for rule, n in (("shard_ids", 3), ("segment", 3), ("segmentation_table", 1), ("crop", 3)):
        assert any(line.split()[:2] == [rule, str(n)] for line in log.splitlines()), (rule, log)
    assert "--ids" in log and "shard-00002.txt" in log
    assert not (tmp_path / "out").exists()


def test_missing_config_is_a_clear_error(tmp_path):
    res = snakemake(tmp_path, "-n", "--config", f"out={tmp_path}")
    assert res.returncode != 0 and "set --config images=" in res.stdout + res.stderr


def test_small_local_run_then_nothing_to_do(images, tmp_path):
    out = tmp_path / "out"
    crop = "crop" in COMMANDS  # the crop rule runs only where `hpacell crop` exists
    config = [f"images={images}", f"out={out}", "shard_size=3", "segment_args=-O pixel_scale=0.3",
              "allow_failures=true", f"crop={str(crop).lower()}", "crop_size=64"]  # fmt: skip
    res = snakemake(tmp_path, "--cores", "2", "--config", *config)
    assert res.returncode == 0, res.stderr[-3000:]
    table = pd.read_parquet(out / "segmentation.parquet")
    assert list(table["ID"]) == ["synth-0000", "synth-0001", "synth-0002", "synth-0003", "zz-broken"]
    assert list(table["status"]) == ["ok"] * 4 + ["failed"]
    assert (table.loc[:3, "n_cells"] > 0).all() and (table.loc[:3, "backend"] == "builtin").all()
    assert len(list((out / "masks").glob("*_cellmask.png"))) == 4
    assert sorted(p.name for p in (out / "shards").glob("segment-*.parquet")) == [
        "segment-00000.parquet",
        "segment-00001.parquet",
    ]
    if crop:
        from hpacell.cellcrops import CellDataset

        merged = CellDataset(out / "cells")  # one dataset over both shards' crops
        cells = merged.table
        assert set(cells["image_id"]) == {"synth-0000", "synth-0001", "synth-0002", "synth-0003"}
        assert len(cells) == int(table["n_cells"].sum())
        assert merged[len(merged) - 1]["image"].shape == (4, 64, 64)
    again = snakemake(tmp_path, "-n", "--config", *config)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_failed_images_fail_their_shard_by_default(images, tmp_path):
    out = tmp_path / "out"
    config = [
        f"images={images}",
        f"out={out}",
        "shard_size=3",
        "segment_args=-O pixel_scale=0.3",
        "crop=false",
    ]
    targets = [str(out / "shards" / f"segment-0000{k}.parquet") for k in (0, 1)]
    res = snakemake(tmp_path, "--cores", "2", "--config", *config, "--", *targets)
    assert res.returncode != 0
    assert (out / "shards" / "segment-00000.parquet").is_file()  # the shard without failures is done
    assert not (out / "shards" / "segment-00001.parquet").exists()
    assert "zz-broken" in (out / "logs" / "segment-00001.log").read_text()


def test_profiles():
    local = yaml.safe_load((PROFILES / "default" / "config.yaml").read_text())
    assert local["executor"] == "local"
    slurm = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    assert slurm["executor"] == "slurm"
    assert {"slurm_partition", "runtime", "mem_mb"} <= set(slurm["default-resources"])
    assert slurm["set-resources"]["segment"]["gpu"] == 1


def test_slurm_profile_settings_are_valid_snakemake_options(images, tmp_path):
    # The executor plugin is not installed here: check everything else of the profile with a dry run.
    profile = tmp_path / "profile"
    profile.mkdir()
    settings = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    settings.pop("executor")
    (profile / "config.yaml").write_text(yaml.safe_dump(settings))
    res = snakemake(
        tmp_path, "-n", "--config", f"images={images}", f"out={tmp_path / 'out'}", profile=profile
    )
    assert res.returncode == 0, res.stderr + res.stdout
    assert "gpu=1" in res.stdout + res.stderr and "slurm_partition=gpu" in res.stdout + res.stderr


@pytest.mark.skipif("crop" not in COMMANDS, reason="no hpacell crop")
def test_shard_with_an_image_without_cells_crops_and_merges(tmp_path):
    """Issue 13, case 16: a 0-cell image (segment: ok) no longer fails its crop shard; the merged
    dataset keeps the masks folder (through the shard views' links), relative to its meta.json."""
    import cv2
    import numpy as np

    from hpacell.cellcrops.shards import recorded_source

    make_synth_dataset(tmp_path / "synth", 2, size=256, seed=7, height=192, cell_scale=0.5)
    images = tmp_path / "synth" / "images"
    for ch in ("red", "green", "blue", "yellow"):
        assert cv2.imwrite(str(images / f"dark_{ch}.png"), np.zeros((64, 64), np.uint8))
    out = tmp_path / "out"
    config = [f"images={images}", f"out={out}", "shard_size=2", "segment_args=-O pixel_scale=0.3",
              "crop=true", "crop_size=32"]  # fmt: skip
    res = snakemake(tmp_path, "--cores", "2", "--config", *config)
    assert res.returncode == 0, res.stderr[-3000:]
    status = pd.read_parquet(out / "cells" / "shard-00000" / "crop_status.parquet").set_index("image_id")
    assert status.loc["dark", "status"] == "ok" and status.loc["dark", "n_cells"] == 0
    assert recorded_source(out / "cells", "masks") == out / "masks"
