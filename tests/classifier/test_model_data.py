import numpy as np
import pandas as pd
import pytest
import timm
import torch

from hpacell.classifier.model import create_model
from hpacell.classifier.training.data import TrainTransform, eval_transform, read_cell_truth


def test_head_variants_and_features():
    m = create_model("resnet18", num_classes=5, pool="gem", embedding_dim=8, n_features=3).eval()
    out = m(torch.rand(2, 4, 64, 64), torch.rand(2, 3))
    assert out["logits"].shape == (2, 5) and out["embedding"].shape == (2, 8)
    with pytest.raises(ValueError, match="features"):
        m(torch.rand(2, 4, 64, 64))


@pytest.mark.parametrize("fourth,src", [("green", 1), ("blue", 2)])
def test_pretrained_first_conv_adaptation(tmp_path, fourth, src):
    ref = timm.create_model("resnet18", pretrained=False)  # a stand-in "ImageNet" checkpoint, 3 channels
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": ref.state_dict()}, path)
    m = create_model("resnet18", num_classes=3, pretrained=path, fourth_channel_init=fourth)
    w, w0 = m.backbone.conv1.weight.detach(), ref.conv1.weight.detach()
    assert w.shape[1] == 4
    assert torch.equal(w[:, :3], w0) and torch.equal(w[:, 3], w0[:, src])
    assert torch.equal(m.backbone.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)


def test_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth: pretrained weights file not found"):
        create_model("resnet18", pretrained=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"foo.weight": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="no parameter names match"):
        create_model("resnet18", pretrained=bad)


def test_eval_transform_normalises_and_train_transform_is_seeded():
    crop = np.random.default_rng(0).integers(0, 255, (4, 48, 48), dtype=np.uint8)
    e = eval_transform(32)(crop)
    assert e.shape == (4, 32, 32) and e.dtype == torch.float32
    assert torch.allclose(
        eval_transform(48)(crop)[1, 0, 0],
        torch.tensor((crop[1, 0, 0] / 255 - 0.05) / 0.11, dtype=torch.float32),
    )
    a, b = TrainTransform(48, seed=5), TrainTransform(48, seed=5)
    outs_a = [a(crop) for _ in range(4)]
    outs_b = [b(crop) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(outs_a, outs_b, strict=True))
    assert not all(torch.equal(outs_a[0], x) for x in outs_a[1:])


def test_read_cell_truth(tmp_path):
    p = tmp_path / "cells.csv"
    p.write_text("ID,cell,Label\nimgA,1,0|2\nimgA,2,\nimgB,1,1\n")
    table = pd.DataFrame({"image_id": ["imgA", "imgA", "imgB", "imgC"], "cell": [1, 2, 1, 1]})
    y, found = read_cell_truth(p, table, 3)
    assert found.tolist() == [True, True, True, False]
    assert y.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0], [0, 0, 0]]
    with pytest.raises(FileNotFoundError, match="cell truth"):
        read_cell_truth(tmp_path / "no.csv", table, 3)
