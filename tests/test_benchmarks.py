"""The prepared benchmark scripts run (tiny CPU modes): not broken when a GPU finally runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_gpu_suite_smoke_mode_runs_every_section_on_cpu(tmp_path):
    res = _run([str(ROOT / "benchmarks" / "gpu_suite.py"), "--smoke"], tmp_path)
    assert res["smoke"] and res["device"] == "cpu"
    for section in ("train", "predict", "hpacellseg"):
        assert "error" not in res[section] and "skipped" not in res[section], res[section]
    assert res["train"]["full_pipeline_cells_per_s"] > 0 and res["train"]["raw_model_step_cells_per_s"] > 0
    assert res["predict"]["cells_per_s_fp32"] > 0 and res["hpacellseg"]["images_per_s_fp32"] > 0
    assert "skipped" in res["ddp"] and "skipped" in res["train_compiled"]


def test_pipeline_scale_reports_every_stage(tmp_path):
    args = ["--images", "5", "--size", "384", "--height", "320", "--cell-scale", "1.0", "--workers", "1"]
    args += ["--model", "resnet18", "--crop-size", "32", "--train-crop", "32", "--batch-size", "4"]
    args += ["--train-batches", "1", "--epochs", "1", "--out", str(tmp_path / "out")]
    res = _run([str(ROOT / "benchmarks" / "pipeline_scale.py"), *args], tmp_path)
    stages = res["stages"]
    assert list(stages) == ["synth", "segment", "crop", "train-cells", "predict", "evaluate"]
    for name, rec in stages.items():
        assert rec["seconds"] > 0 and rec["peak_rss_mb"] > 0 and rec["output_bytes"] > 0, (name, rec)
        if name != "evaluate":  # evaluate may fail until the scorer fix lands: recorded, not raised
            assert "error" not in rec, (name, rec)
    assert res["config"]["height"] == 320 and stages["crop"]["cells"] > 0
