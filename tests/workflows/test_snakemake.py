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
    # status without accounting; no resource lists that a command-line override would replace whole
    assert slurm["slurm-status-command"] == "squeue"
    assert not {"default-resources", "set-resources", "set-threads"} & set(slurm)


def slurm_dry_run(tmp_path: Path, images: Path, *config: str, sinfo: str | None = None, **env: str) -> str:
    """Dry run through the SLURM profile (its executor settings only where the plugin is installed)."""
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    settings = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        settings = {k: v for k, v in settings.items() if k != "executor" and not k.startswith("slurm-")}
    (profile / "config.yaml").write_text(yaml.safe_dump(settings))
    path = os.environ.get("PATH", "")
    if sinfo is not None:  # a fake sinfo: "CPUS MEMORY_MB" per node
        fake = tmp_path / "bin"
        fake.mkdir(exist_ok=True)
        (fake / "sinfo").write_text(f"#!/bin/sh\nprintf '{sinfo}\\n'\n")
        (fake / "sinfo").chmod(0o755)
        path = f"{fake}{os.pathsep}{path}"
    cmd = [str(BIN / "snakemake"), "-s", str(SNAKEFILE), "--workflow-profile", str(profile), "-n",
           "--cores", "8", "--config", f"images={images}", f"out={tmp_path / 'out'}", "crop=true",
           *config]  # fmt: skip
    env = {**os.environ, **env, "PATH": f"{BIN}{os.pathsep}{path}"}
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr + res.stdout
    return res.stdout + res.stderr


def _resources(log: str, rule: str) -> str:
    lines = log.splitlines()
    start = lines.index(f"rule {rule}:")
    return next(line for line in lines[start:] if line.strip().startswith("resources:"))


def test_slurm_profile_builtin_backend_asks_no_gpu_and_follows_workers(images, tmp_path, monkeypatch):
    for var in ("HPACELL_SLURM_ACCOUNT", "HPACELL_SLURM_PARTITION", "HPACELL_SLURM_GPU_PARTITION"):
        monkeypatch.delenv(var, raising=False)
    log = slurm_dry_run(tmp_path, images, "workers=3", sinfo="64 512000")
    seg = _resources(log, "segment")
    assert "mem_mb=6000" in seg and "runtime=60" in seg
    assert "gpu" not in seg and "slurm_account" not in seg and "slurm_partition" not in seg
    assert "--workers 3" in log and "threads: 3" in log
    assert "mem_mb=6000" in _resources(log, "crop")


def test_slurm_profile_hpacellseg_gets_a_gpu_account_and_partitions(images, tmp_path, monkeypatch):
    monkeypatch.setenv("HPACELL_SLURM_ACCOUNT", "lab42")
    monkeypatch.setenv("HPACELL_SLURM_PARTITION", "cpu")
    log = slurm_dry_run(tmp_path, images, "backend=hpacellseg", "gpu_partition=gpu", sinfo="64 512000")
    seg, crop = _resources(log, "segment"), _resources(log, "crop")
    assert "gpu=1" in seg and "slurm_partition=gpu" in seg and "slurm_account=lab42" in seg
    assert "mem_mb=8000" in seg
    assert "gpu" not in crop.replace("slurm_partition=cpu", "") and "slurm_partition=cpu" in crop
    # the config key wins over the environment variable; gpus=0 runs hpacellseg on CPU
    log = slurm_dry_run(tmp_path, images, "backend=hpacellseg", "gpus=0", "slurm_account=other")
    seg = _resources(log, "segment")
    assert "gpu=" not in seg and "slurm_account=other" in seg and "runtime=240" in seg


def test_slurm_requests_are_capped_at_the_largest_node(images, tmp_path):
    log = slurm_dry_run(tmp_path, images, "workers=4", sinfo="2 3000\\n2+ 2500+")
    assert "mem_mb=3000" in _resources(log, "segment") and "--workers 2" in log


def test_workflow_command_line(tmp_path):
    from hpacell.utils.errors import InputError
    from hpacell.workflows.commands.workflow import snakemake_command

    cmd = snakemake_command(tmp_path / "im", tmp_path / "out", ["workers=2"], "slurm", dry_run=True,
                            extra="--jobs 5")  # fmt: skip
    assert cmd[1:3] == ["-m", "snakemake"] and Path(cmd[4]).name == "Snakefile" and Path(cmd[4]).is_file()
    assert cmd[5:7] == ["--workflow-profile", str(PROFILES.resolve() / "slurm")]
    assert cmd[7:] == ["--config", f"images={tmp_path / 'im'}", f"out={tmp_path / 'out'}", "workers=2",
                       "--dry-run", "--jobs", "5"]  # fmt: skip
    with pytest.raises(InputError, match="KEY=VALUE"):
        snakemake_command(tmp_path, tmp_path, ["workers"])
    with pytest.raises(InputError, match="--profile"):
        snakemake_command(tmp_path, tmp_path, [], profile=str(tmp_path))


def test_hpacell_workflow_dry_run(images, tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(BIN / "hpacell"), "workflow", str(images), str(tmp_path / "out"), "shard_size=2", "--dry-run",
           "--account", "lab42"]  # fmt: skip
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "slurm_account=lab42" in res.stderr and "segment" in res.stdout + res.stderr
    assert not (tmp_path / "out").exists()


SBATCH = REPO / "workflows" / "slurm" / "train_cells.sbatch"


def test_readme_shows_the_sbatch_script_whole_and_the_profile_settings():
    readme = (REPO / "README.md").read_text()
    assert f"```bash\n{SBATCH.read_text()}```" in readme
    assert "slurm-status-command: squeue" in readme and "HPACELL_SLURM_ACCOUNT" in readme


def test_sbatch_script_needs_cells_and_out():
    res = subprocess.run(["bash", str(SBATCH), "cells-only"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "usage: sbatch" in res.stderr


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
