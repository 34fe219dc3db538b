"""fit learns: on a tiny set with a visible class signal it beats the label-frequency baseline."""

from __future__ import annotations

from hpacell.classifier.training.config import TrainConfig
from hpacell.classifier.training.train import fit


def test_fit_beats_the_label_frequency_baseline(tmp_path, make_data):
    # FakeCells: each class lights its own band of the green channel; 36 training, 12 validation cells
    cfg = TrainConfig(
        model="resnet18",
        batch_size=8,
        embedding_dim=16,
        num_workers=0,
        warmup_epochs=0,
        lr=3e-3,
        backbone_lr_mult=1.0,
        schedule="onecycle",
        triplet_lambda=0.0,
        epochs=2,
    )
    summary = fit(make_data(), cfg, tmp_path)
    base = summary["baseline"]["map"]  # a frequency score ranks all cells alike: AP = prevalence
    assert base < 0.4
    assert summary["best"]["val_map"] > base + 0.2, (summary["best"]["val_map"], base)
