import json
import re

from typer.testing import CliRunner

from hpacell.workflows.cli import app


def test_demo_runs_to_summary_and_resumes(tmp_path):
    cfg = tmp_path / "demo.yaml"
    cfg.write_text("train_images: 10\ntest_images: 2\nsize: 384\nepochs: 1\nbatch_size: 16\nworkers: 1\n")
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    last = res.output.strip().splitlines()[-1]
    assert re.fullmatch(r"mAP=\d\.\d{6}", last)
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["evaluation"]["mAP"] <= 1.0
    assert summary["evaluation"]["match"] == "mask"  # the reported mode; the summary prints both
    by_match = summary["evaluation"]["mAP_by_match"]
    assert by_match["mask"] == summary["evaluation"]["mAP"] and 0.0 <= by_match["box"] <= 1.0
    assert "cell mAP@0.6 by IoU: mask" in res.output and "box" in res.output
    assert summary["segmentation"]["true_cells"] > 0 and summary["segmentation"]["recall"] > 0.5
    assert (out / "predict" / "submission.csv").is_file()
    assert list((out / "predict" / "report").glob("*.png"))
    assert (out / "run" / "best.pt").is_file()
    # A rerun skips finished work: training is not repeated, and the figures are the same.
    mtime = (out / "run" / "last.pt").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["demo", "--out", str(out), "--config", str(cfg)])
    assert again.exit_code == 0, again.output
    assert (out / "run" / "last.pt").stat().st_mtime_ns == mtime
    assert again.output.strip().splitlines()[-1] == last


def test_demo_rejects_bad_config(tmp_path):
    cfg = tmp_path / "demo.yaml"
    cfg.write_text("epochz: 1\n")
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--config", str(cfg)])
    assert res.exit_code == 1 and "epochz" in res.output


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    """Issue 13, case 1: a train-cells run (with a foreign predict/) is left untouched."""
    out = tmp_path / "run"
    (out / "predict").mkdir(parents=True)
    (out / "summary.json").write_text('{"best": {"epoch": 3}}')
    (out / "predict" / "cell_scores.parquet").write_bytes(b"theirs")
    before = sorted((p.relative_to(out), p.read_bytes() if p.is_file() else None) for p in out.rglob("*"))
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--epochs", "1"])
    assert res.exit_code == 1 and "not made by 'hpacell demo'" in res.output
    after = sorted((p.relative_to(out), p.read_bytes() if p.is_file() else None) for p in out.rglob("*"))
    assert after == before


def test_duplicate_yaml_keys_are_an_error(tmp_path):
    cfg = tmp_path / "demo.yaml"
    cfg.write_text("epochs: 1\ntrain_images: 10\nepochs: 5\n")
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--config", str(cfg)])
    assert res.exit_code == 1
    assert "demo.yaml: invalid YAML: duplicate key 'epochs' (first on line 1)" in res.output
    assert not (tmp_path / "d").exists()
