"""hpacell train-cells --cell-labels / --weak-loss and hpacell relabel from the command line."""

import json

import pytest
from typer.testing import CliRunner

from hpacell.workflows.cli import app

BASE = ["--model", "resnet18", "--epochs", "1", "--batch-size", "6", "--device", "cpu", "--num-workers", "0"]


def test_train_cells_with_cell_labels_and_its_errors(tmp_path, weak_cells):
    cells = weak_cells(tmp_path / "cells", n_img=8, per=3)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("embedding_dim: 16\nfolds: 4\nwarmup_epochs: 0\ntriplet_lambda: 0\n")
    run = CliRunner().invoke
    args = ["train-cells", str(cells), "--config", str(cfg), *BASE]
    r = run(app, [*args, "--out", str(tmp_path / "a"), "--cell-labels", str(tmp_path / "truth.csv")])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["data"]["n_train_cells_with_cell_labels"] == summary["data"]["n_train_cells"]
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,cell,Label\nim0,1,0\nim0,7,0\n")
    r = run(app, [*args, "--out", str(tmp_path / "b"), "--cell-labels", str(bad)])
    assert r.exit_code == 1
    line = r.output.strip().splitlines()[-1]
    assert (
        line.startswith("hpacell train-cells: error: ") and f"{bad}: row 3: no cell 7 in image 'im0'" in line
    )
    bad.write_text("image_id,cell,a,b,typo\nim0,1,1,0,0\n")
    r = run(app, [*args, "--out", str(tmp_path / "c"), "--cell-labels", str(bad)])
    assert r.exit_code == 1 and "row 1: unknown column(s) ['typo']" in r.output
    r = run(app, [*args, "--out", str(tmp_path / "d"), "--weak-loss", "mil", "--mil-pool", "max"])
    assert r.exit_code == 0, r.output


def test_relabel_then_train_on_its_file(tmp_path, weak_cells):
    cells = weak_cells(tmp_path / "cells", n_img=8, per=3)
    run = CliRunner().invoke
    out = tmp_path / "refine"
    r = run(app, ["relabel", str(cells), "--out", str(out), *BASE, "--refine-folds", "2"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["cells"] == 24 and (out / "cell_labels.parquet").is_file()
    r = run(app, ["relabel", str(cells), "--out", str(out), *BASE, "--refine-folds", "2"])  # reused
    assert r.exit_code == 0 and json.loads(r.output.strip().splitlines()[-1]) == res
    r = run(app, ["relabel", str(cells), "--out", str(out), *BASE, "--refine-folds", "3"])
    assert r.exit_code == 1 and "other inputs or options" in r.output
    train = ["train-cells", str(cells), "--out", str(tmp_path / "run"), *BASE, "--cell-labels"]
    r = run(app, [*train, str(out / "cell_labels.parquet")])
    assert r.exit_code == 0, r.output


@pytest.mark.slow
def test_relabel_under_torchrun_shares_out_the_folds_and_matches_one_process(tmp_path, weak_cells):
    """2 CPU ranks: each trains one fold model, rank 0 writes; the labels equal a single process's."""
    import os
    import subprocess
    import sys

    import pandas as pd

    cells = weak_cells(tmp_path / "cells", n_img=8, per=3)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "SLURM_NTASKS")}
    env["OMP_NUM_THREADS"] = "1"  # the same float reductions in both runs
    cli = ["-m", "hpacell.workflows.cli", "relabel", str(cells), *BASE, "--refine-folds", "2"]
    one = subprocess.run(
        [sys.executable, *cli, "--out", str(tmp_path / "one")], capture_output=True, text=True, env=env
    )
    assert one.returncode == 0, one.stderr[-3000:]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = subprocess.run(
        [*launch, *cli, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300
    )
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-4000:]
    assert "rank 1 trains fold 1" in two.stderr and "rank 0 trains fold 0" in two.stderr
    a = pd.read_parquet(tmp_path / "one" / "cell_labels.parquet")
    b = pd.read_parquet(tmp_path / "two" / "cell_labels.parquet")
    pd.testing.assert_frame_equal(a, b)
    printed = [line for line in two.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1 and json.loads(printed[0])["cells"] == 24  # rank 0 alone prints
