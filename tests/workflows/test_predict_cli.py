"""``hpacell evaluate`` and ``hpacell predict`` through the CLI on small synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from classifier.evaluate import read_truth
from classifier.submission import prediction_string, write_submission
from workflows.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    from cellcrops.synth import make_dataset

    out = tmp_path_factory.mktemp("synth")
    make_dataset(out, 4, 128, 0, cell_scale=0.4)
    return out


def _submission_from_truth(truth, path, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for img in truth:
        s = np.zeros((len(img.cells), 19))
        for i, lab in enumerate(img.labels):
            s[i, lab] = 0.9
        s += rng.random(s.shape) * noise
        rows.append((img.image_id, img.width, img.height, prediction_string(img.masks, s)))
    write_submission(rows, path)


def test_evaluate_perfect_submission(synth_dir, tmp_path):
    truth = read_truth(synth_dir)
    _submission_from_truth(truth, tmp_path / "sub.csv")
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "sub.csv"),
            "--truth",
            str(synth_dir),
            "--json",
            str(tmp_path / "e.json"),
            "--report",
            str(tmp_path / "rep"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == "mAP=1.000000"
    figures = json.loads((tmp_path / "e.json").read_text())
    assert figures["mAP"] == 1.0 and figures["mAP_strict"] == 1.0 and len(figures["per_class"]) == 19
    assert (tmp_path / "rep" / "pr_curves.png").stat().st_size > 1000


def test_evaluate_wrong_confidences_score_lower_and_errors_exit_1(synth_dir, tmp_path):
    truth = read_truth(synth_dir)
    for t in truth:  # every cell claimed for the wrong class (shift by one)
        t.labels = [[(k + 1) % 19 for k in lab] for lab in t.labels]
    _submission_from_truth(truth, tmp_path / "sub.csv")
    js = tmp_path / "e.json"
    res = runner.invoke(
        app, ["evaluate", str(tmp_path / "sub.csv"), "--truth", str(synth_dir), "--json", str(js)]
    )
    assert res.exit_code == 0, res.output
    value = float(res.output.strip().splitlines()[-1].split("=")[1])
    # default mode ignores the wrong classes outside the image labels, strict mode counts them
    assert value < 1.0 and json.loads(js.read_text())["mAP_strict"] < 0.5
    res = runner.invoke(app, ["evaluate", str(tmp_path / "none.csv"), "--truth", str(synth_dir)])
    assert res.exit_code == 1 and "not found" in res.output
