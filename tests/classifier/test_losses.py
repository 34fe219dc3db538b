import numpy as np
import pytest
import torch

from hpacell.classifier.training.losses import CellLoss, bce_loss, class_pos_weight, triplet_loss


def _separated():
    emb = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    lab = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float32)
    return emb, lab


def test_triplet_zero_when_perfectly_separated():
    emb, lab = _separated()
    assert triplet_loss(emb * 5, lab, margin=0.3).item() == 0.0


def test_triplet_positive_otherwise_and_has_gradient():
    emb, lab = _separated()
    emb = (emb + 0.6 * torch.tensor([0.0, 0, 1.0])).requires_grad_(True)  # negatives pulled closer
    loss = triplet_loss(emb, lab[[0, 2, 1, 3, 4]], margin=0.3)
    assert loss.item() > 0
    loss.backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


def test_triplet_multilabel_rule_shared_label_is_positive():
    # cell 2 carries classes 0 and 1: positive of both others, so anchors 0/1 have no negative -> skipped
    emb = torch.tensor([[1.0, 0], [0, 1.0], [0.7, 0.7]])
    lab = torch.tensor([[1, 0], [0, 1], [1, 1]], dtype=torch.float32)
    # 0 and 1 share nothing: each is the other's negative; positives via cell 2
    assert triplet_loss(emb, lab, margin=2.0).item() > 0
    # no anchor with both a positive and a negative: loss 0, no error
    assert triplet_loss(emb[:2], torch.tensor([[1.0, 0], [1.0, 0]])).item() == 0.0
    # unlabelled cells take no part
    assert triplet_loss(emb, torch.zeros(3, 2)).item() == 0.0


def test_triplet_gather_single_process_group(tmp_path):
    import torch.distributed as dist

    emb, lab = _separated()
    emb = emb + 0.4
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        e = emb.clone().requires_grad_(True)
        g = triplet_loss(e, lab[[0, 2, 1, 3, 4]], gather=True)
        g.backward()
        assert e.grad is not None
    finally:
        dist.destroy_process_group()
    assert g.item() == pytest.approx(triplet_loss(emb, lab[[0, 2, 1, 3, 4]]).item())


def test_bce_focal_and_weights():
    logits = torch.tensor([[4.0, -4.0], [0.0, 0.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    plain = bce_loss(logits, y)
    assert bce_loss(logits, y, focal=True) < plain
    w = class_pos_weight(np.array([[1, 1], [0, 1], [0, 1], [0, 1], [0, 1], [0, 1], [0, 1], [0, 0]]))
    assert w[0] == pytest.approx(np.log(7)) and w[1] == 1.0
    assert bce_loss(logits, y, pos_weight=torch.tensor([3.0, 1.0])) > plain


def test_cell_loss_parts():
    out = {"logits": torch.zeros(4, 2), "embedding": torch.randn(4, 8)}
    y = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    parts = CellLoss(triplet_lambda=0.5)(out, y)
    assert set(parts) == {"bce", "triplet", "loss"}
    assert parts["loss"].item() == pytest.approx(parts["bce"].item() + 0.5 * parts["triplet"].item())
    assert set(CellLoss()(out, y)) == {"bce", "loss"}
