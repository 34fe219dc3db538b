"""Weak supervision: per-cell label files, the MIL loss, image batches and label refinement."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from hpacell.cellcrops.labels import LabelError, read_cell_targets, read_cells_csv, write_cell_targets
from hpacell.classifier.training.config import TrainConfig
from hpacell.classifier.training.losses import mil_loss, pool_logits
from hpacell.classifier.training.refine import refine_targets, relabel
from hpacell.classifier.training.samplers import ImageBatchSampler
from hpacell.classifier.training.train import train_cells

CLASSES = ["a", "b", "c"]


@pytest.fixture
def make_cells(weak_cells):
    return weak_cells


def tiny_config(**kw):
    base = dict(model="resnet18", epochs=1, batch_size=8, embedding_dim=16, num_workers=0, folds=3)
    base |= dict(device="cpu", warmup_epochs=0, triplet_lambda=0.0, backbone_lr_mult=1.0)
    return TrainConfig(**(base | kw))


# --------------------------------------------------------------------------- label files
def test_cells_csv_and_soft_tables_round_trip(tmp_path):
    p = tmp_path / "cells.csv"
    p.write_text("ID,cell,Label\na,1,0|2\na,2,\nb,1,1\n")
    assert read_cells_csv(p) == {"a": {1: [0, 2], 2: []}, "b": {1: [1]}}
    hard = read_cell_targets(p, CLASSES)
    assert not hard.soft and hard.targets.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    t = np.array([[0.25, 0, 1], [0, 0.5, 0]], np.float32)
    for name in ("soft.parquet", "soft.csv"):
        write_cell_targets(tmp_path / name, ["a", "b"], [1, 3], t, CLASSES)
        back = read_cell_targets(tmp_path / name, CLASSES)
        assert back.soft and back.image_ids == ["a", "b"] and back.cells.tolist() == [1, 3]
        np.testing.assert_allclose(back.targets, t)
    # class columns may also be named by class id, in any order
    pd.DataFrame({"cell": [1], "image_id": ["a"], "2": [1.0], "0": [0.0], "1": [0.5]}).to_csv(
        tmp_path / "ids.csv", index=False
    )
    assert read_cell_targets(tmp_path / "ids.csv", CLASSES).targets.tolist() == [[0.0, 0.5, 1.0]]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("ID,cel,Label\na,1,0\n", r"row 1: .*unknown column"),
        ("image_id,cell,a,b,cc\na,1,0,0,1\n", r"row 1: unknown column\(s\) \['cc'\]"),
        ("image_idd,cell,a,b,c\na,1,0,0,1\n", r"row 1: missing key column"),
        ("image_id,cell,a,b,c\na,1,0,0,1\na,x,0,0,1\n", r"row 3: cell 'x' is not an integer"),
        ("image_id,cell,a,b,c\na,1,0,2,1\n", r"row 2: column 'b' is '2', not a number"),
        ("ID,cell,Label\na,1,0\na,1,1\n", r"row 3: duplicate cell 1"),
        ("ID,cell,Label\na,1,7\n", r"row 2: class id out of range"),
    ],
)
def test_cell_label_file_errors_name_file_and_row(tmp_path, text, match):
    p = tmp_path / "labels.csv"
    p.write_text(text)
    with pytest.raises(LabelError, match=match) as e:
        read_cell_targets(p, CLASSES)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_unknown_cell_or_image_is_an_error(tmp_path):
    p = tmp_path / "cells.csv"
    p.write_text("ID,cell,Label\na,1,0\na,9,1\n")
    ct = read_cell_targets(p, CLASSES)
    with pytest.raises(LabelError, match=r"cells.csv: row 3: no cell 9 in image 'a' in TABLE"):
        ct.positions_in(["a", "a"], [1, 2], "TABLE")
    p.write_text("ID,cell,Label\nA,1,0\n")
    with pytest.raises(LabelError, match=r"row 2: no image 'A' in TABLE"):
        read_cell_targets(p, CLASSES).positions_in(["a"], [1], "TABLE")


# --------------------------------------------------------------------------- MIL loss and image batches
def test_pooling_and_mil_loss_ignore_the_uncertain_cells():
    z = torch.tensor([[3.0, -3.0, -3.0], [-3.0, -3.0, 3.0], [-3.0, 3.0, -3.0], [-3.0, -3.0, 3.0]])
    y = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]])  # image 0 {a}, image 1 Negative (c)
    groups = torch.tensor([5, 5, 9, 9])
    z.requires_grad_(True)
    parts = mil_loss(z, y, groups, pool="max", negative=2)
    parts["bce"].backward()
    g = z.grad
    # cell 1 of image 0 lacks "a" (scores low): max pooling leaves it alone, and its Negative score (high)
    # costs nothing in a positive image; "b" is absent from image 0, so a certain 0 for both cells
    assert g[1, 0] == 0 and g[1, 2] == 0 and g[0, 1] > 0 and g[1, 1] > 0
    # a Negative image: every cell is Negative (cell 2 is pushed up on c, down on b)
    assert g[2, 2] < 0 and g[2, 1] > 0
    zero = mil_loss(z.detach(), y, groups, pool="max", negative=2, negative_mode="zero")
    assert zero["cell"] > parts["cell"]  # the inherited 0 on cell 1's Negative is paid for
    assert float(pool_logits(torch.tensor([[0.0], [0.0]]), "lse")[0]) == pytest.approx(0.0)


def test_image_batch_sampler_draws_whole_images_deterministically():
    groups = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 1, 2, 3, 4, 5])
    s = ImageBatchSampler(groups, batch_size=8, seed=3)
    s.set_epoch(1)
    a, b = list(s), list(s)
    assert a == b and len(a) == len(s) == len(groups) // 8
    for batch in a:
        assert 2 <= len(batch) <= 8
        for img in set(groups[batch]):  # an image is never split across batches
            assert (groups[batch] == img).sum() == (groups == img).sum()
    s.set_epoch(2)
    assert list(s) != a


# --------------------------------------------------------------------------- label refinement
def test_refinement_drops_the_label_of_a_cell_whose_scores_say_it_lacks_it():
    # image x {a, b}: cell 2 scores high for a but low for b; image y {c}: one cell shows nothing
    probs = np.array(
        [[0.9, 0.8, 0.0, 0.1], [0.8, 0.05, 0.0, 0.1], [0.0, 0.0, 0.7, 0.2], [0.0, 0.0, 0.1, 0.9]]
    )
    y = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]])
    groups = np.array(["x", "x", "y", "y"])
    hard = refine_targets(probs, y, groups, "hard", 0.5, negative=3)
    assert hard.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    soft = refine_targets(probs, y, groups, "soft", 0.5, negative=3)
    assert soft[1, 1] == pytest.approx(0.05 / 0.8) and soft[3, 2] == pytest.approx(0.1 / 0.7)
    assert soft[3, 3] == pytest.approx(1 - 0.1 / 0.7)
    # mix blends refined and inherited targets; 0 leaves the inherited labels
    half = refine_targets(probs, y, groups, "soft", 0.5, negative=3, mix=0.5)
    np.testing.assert_allclose(half, 0.5 * soft + 0.5 * y, atol=1e-6)
    assert refine_targets(probs, y, groups, "hard", 0.5, negative=3, mix=0.0).tolist() == y.tolist()
    # a Negative image keeps its labels; without a Negative class nothing is added
    y_neg = np.array([[0, 0, 0, 1]])
    assert refine_targets(probs[:1], y_neg, ["z"], negative=3).tolist() == [[0, 0, 0, 1]]
    assert refine_targets(probs[2:, :3], y[2:, :3], groups[2:]).tolist() == [[0, 0, 1], [0, 0, 0]]


def _losses(run):
    return [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_mil_training_runs_and_is_deterministic(tmp_path, make_cells):
    cells = make_cells(tmp_path / "cells")
    cfg = tiny_config(weak_loss="mil", mil_pool="topk")
    train_cells(cells, tmp_path / "a", cfg)
    train_cells(cells, tmp_path / "b", cfg)
    la, lb = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert la == lb and np.isfinite(la).all()


def test_relabel_writes_a_file_that_round_trips_and_is_reused(tmp_path, make_cells):
    cells = make_cells(tmp_path / "cells")
    cfg = tiny_config(refine_folds=2, refine_rule="soft")
    path = relabel(cells, tmp_path / "refine", cfg, rounds=1)
    ct = read_cell_targets(path, CLASSES)
    table = pd.read_parquet(cells / "cells.parquet")
    assert ct.soft and len(ct) == len(table) and ct.cells.tolist() == table["cell"].tolist()
    oof = pd.read_parquet(tmp_path / "refine" / "round-1" / "oof.parquet")
    assert np.isfinite(oof[CLASSES].to_numpy()).all()
    # the targets are the soft rule applied to the out-of-fold scores
    inherited = np.eye(3)[[i % 3 for i in range(12) for _ in range(4)]]
    ids = table["image_id"]
    expected = refine_targets(oof[CLASSES].to_numpy(), inherited, ids, "soft", mix=cfg.refine_mix)
    np.testing.assert_allclose(ct.targets, expected, atol=1e-6)
    mtime = path.stat().st_mtime_ns
    again = relabel(cells, tmp_path / "refine", cfg, rounds=1)  # reused: same targets, no fold retrained
    assert read_cell_targets(again, CLASSES).targets.tolist() == ct.targets.tolist()
    assert (tmp_path / "refine" / "round-1" / "cell_labels.parquet").stat().st_mtime_ns <= mtime
    # and a second run gives the same file
    path2 = relabel(cells, tmp_path / "refine2", cfg, rounds=1)
    np.testing.assert_array_equal(read_cell_targets(path2, CLASSES).targets, ct.targets)


def test_resuming_a_refined_run_keeps_its_targets(tmp_path, make_cells):
    """More --epochs on a refined run resumes on the labels it started with; no round is redone."""
    cells, run = make_cells(tmp_path / "cells"), tmp_path / "run"
    train_cells(cells, run, tiny_config(refine_rounds=1, refine_folds=2))
    labels = run / "refine" / "cell_labels.parquet"
    before = labels.read_bytes(), labels.stat().st_mtime_ns
    train_cells(cells, run, tiny_config(refine_rounds=1, refine_folds=2, epochs=2), resume=True)
    assert (labels.read_bytes(), labels.stat().st_mtime_ns) == before
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1]
