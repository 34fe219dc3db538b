"""hpacell train-cells --cell-labels / --weak-loss and hpacell relabel from the command line."""

import json

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
