"""``hpacell demo`` rerun with more epochs (issue 13, case 7): training resumes, predict recomputes."""

import json

from typer.testing import CliRunner

from hpacell.workflows.cli import app


def test_demo_with_more_epochs_resumes_training_and_rescores(tmp_path):
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(  # with a refinement round: the resumed training keeps its refined targets
        "train_images: 8\ntest_images: 1\nsize: 256\nepochs: 1\nbatch_size: 16\nworkers: 1\n"
        "refine_rounds: 1\n"
    )
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    scores = (out / "predict" / "cell_scores.parquet").read_bytes()
    labels = (out / "run" / "refine" / "cell_labels.parquet").read_bytes()
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--config", str(cfg), "--epochs", "2"])
    assert res.exit_code == 0, res.output  # onecycle used to fail: "Tried to step ... times"
    epochs = [json.loads(x)["epoch"] for x in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1]
    assert (out / "run" / "refine" / "cell_labels.parquet").read_bytes() == labels
    stamp = json.loads((out / "predict" / "cell_scores.stamp.json").read_text())
    from hpacell.utils.outputs import file_digest

    assert stamp["checkpoint"] == file_digest(out / "run" / "best.pt")  # scored with the new best.pt
    if json.loads((out / "summary.json").read_text())["train"]["epoch"] == 1:
        assert (out / "predict" / "cell_scores.parquet").read_bytes() != scores
