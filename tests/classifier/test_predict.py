"""Cell scoring (with flip TTA), aggregation, image labels, blending and the submission of predict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from hpacell.classifier.scoring.build_submission import build_submission
from hpacell.classifier.scoring.predict import (
    aggregate,
    blend,
    label_images,
    read_image_scores,
    score_cells,
    with_negative,
)
from hpacell.classifier.scoring.rle import decode_mask
from hpacell.classifier.scoring.submission import read_submission, write_submission
from hpacell.segmentation.io import write_mask


class _Crops(Dataset):
    def __init__(self, n=10, size=32, seed=0):
        self.x = torch.from_numpy(
            np.random.default_rng(seed).normal(size=(n, 4, size, size)).astype(np.float32)
        )

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "index": i + 100}


class _Lopsided(torch.nn.Module):
    """Not flip invariant: logits = weighted sums of the left/top halves."""

    def __init__(self):
        super().__init__()
        self.classifier = torch.nn.Linear(2, 2)

    def forward(self, x, features=None):
        h = x.shape[-1] // 2
        f = torch.stack([x[..., :h].mean((1, 2, 3)), x[..., :h, :].mean((1, 2, 3))], 1)
        return {"logits": self.classifier(f) * 10, "embedding": f}


def test_score_cells_order_and_flip_tta():
    torch.manual_seed(0)
    model, ds = _Lopsided(), _Crops()
    idx, p, e = score_cells(model, ds, batch_size=4, embeddings=True)
    assert idx.tolist() == list(range(100, 110)) and p.shape == (10, 2) and e.shape == (10, 2)
    with torch.inference_mode():
        x = ds.x
        manual = sum(torch.sigmoid(model(v)["logits"]) for v in (x, x.flip(3), x.flip(2))) / 3
    _, p_tta, _ = score_cells(model, ds, batch_size=3, tta=True)
    assert np.allclose(p_tta, manual.numpy(), atol=1e-6)
    assert not np.allclose(p_tta, p, atol=1e-3)


def test_score_cells_with_a_real_head():
    from hpacell.classifier.model import create_model

    model = create_model("resnet18", num_classes=19, embedding_dim=16).eval()
    idx, p, e = score_cells(model, _Crops(n=3), batch_size=2)
    assert p.shape == (3, 19) and e is None and ((p >= 0) & (p <= 1)).all()


def test_aggregate_max_mean_topk():
    ids = ["b", "a", "b", "b"]
    p = np.array([[0.1, 0.9], [0.5, 0.5], [0.3, 0.2], [0.8, 0.4]])
    assert aggregate(ids, p, "max").loc["b"].tolist() == [0.8, 0.9]
    assert aggregate(ids, p, "mean").loc["b"].tolist() == pytest.approx([0.4, 0.5])
    assert aggregate(ids, p, "topk", k=2).loc["b"].tolist() == pytest.approx([0.55, 0.65])
    assert aggregate(ids, p, "topk", k=5).loc["a"].tolist() == [0.5, 0.5]
    assert list(aggregate(ids, p).index) == ["a", "b"]
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(ids, p, "median")


def test_image_labels_and_negative_rule():
    thr = np.array([0.5, 0.3, 0.5])
    scores = np.array([[0.6, 0.1, 0.9], [0.4, 0.2, 0.1], [0.1, 0.35, 0.2]])
    assert label_images(scores, thr, negative=2) == [[0], [2], [1]]
    assert label_images(scores, thr, negative=None) == [[0, 2], [], [1]]
    derived = with_negative(np.array([[0.2, 0.7], [0.1, 0.05]]), 3, 2)
    assert derived[:, 2].tolist() == pytest.approx([0.3, 0.9])
    with pytest.raises(ValueError, match="outputs"):
        with_negative(np.zeros((1, 5)), 19, 18)


def test_blend_and_image_scores_file(tmp_path):
    p = tmp_path / "img.csv"
    pd.DataFrame({"ID": ["x", "y"], "0": [0.5, 1.0], "1": [0.25, 0.0]}).to_csv(p, index=False)
    img = read_image_scores(p, 2)
    cell = np.array([[0.4, 0.4], [0.9, 0.1], [0.5, 0.5]])
    out = blend(cell, ["x", "y", "x"], img, a=1.0, b=0.5)
    assert out == pytest.approx(np.array([[0.4 * 0.5**0.5, 0.4 * 0.5], [0.9, 0.0], [0.5 * 0.5**0.5, 0.25]]))
    with pytest.raises(ValueError, match="no image-level scores"):
        blend(cell, ["x", "z", "x"], img)
    pd.DataFrame({"ID": ["x"], "0": [1.5], "1": [0.0]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match="img.csv"):
        read_image_scores(p, 2)
    with pytest.raises(ValueError, match="missing column"):
        read_image_scores(p, 3)


def test_build_submission_every_id_and_exact_masks(tmp_path):
    mask = np.zeros((40, 60), np.uint16)
    mask[0:40, 10:20] = 3  # full height: runs wrap from column to column
    mask[5:9, 30:50] = 7
    write_mask(tmp_path / "masks" / "a_cellmask.png", mask)
    empty = np.zeros((30, 30), np.uint16)
    write_mask(tmp_path / "masks" / "b_cellmask.png", empty)
    table = pd.DataFrame(
        {"image_id": ["a", "a"], "cell": [7, 3], "x0": [30, 10], "y0": [5, 0], "x1": [50, 20], "y1": [9, 40]}
    )
    conf = np.tile(np.linspace(0.01, 0.19, 19), (2, 1))
    conf[0, 4] = 0.95
    ids = tmp_path / "ids.csv"
    write_submission([], ids, ids=["c", "a", "b"], sizes={"c": (64, 64), "a": (60, 40), "b": (30, 30)})
    info = build_submission(table, conf, tmp_path / "masks", tmp_path / "sub.csv", ids_path=ids)
    subs = read_submission(tmp_path / "sub.csv")
    assert [s.image_id for s in subs] == ["c", "a", "b"]
    assert len(subs[0]) == 0 and len(subs[2]) == 0 and len(subs[1]) == 2 * 19
    a = subs[1]
    assert a.classes[4] == 4 and a.confidences[4] == 0.95
    for k, cell in ((0, 7), (19, 3)):
        assert np.array_equal(decode_mask(a.masks[k], 40, 60).astype(bool), mask == cell)
    assert len(set(a.masks[:19])) == 1  # one mask string per cell, repeated per class
    assert info["n_cells"] == 2 and info["missing_ids"] == ["b"]  # b: segmented, no cells
    assert list(info["failed"]) == ["c"] and "no image" in info["failed"]["c"]  # c: never segmented
    # without an ID list: images of the table + every mask file; a broken box is recorded, not fatal
    table.loc[0, "x0"] = 0
    table.loc[0, "x1"] = 5
    info = build_submission(table, conf, tmp_path / "masks", tmp_path / "sub2.csv", min_confidence=0.5)
    assert "a" in info["failed"] and [s.image_id for s in read_submission(tmp_path / "sub2.csv")] == [
        "a",
        "b",
    ]
