"""Losses of the weakly supervised cell classifier.

* Classification: binary cross-entropy with logits over the classes (the
  multi-label "cross-entropy"), optionally focal (``alpha``, ``gamma``) and
  with per-class positive weights ``max(1, ln(neg/pos))``.
* Metric learning: batch-hard triplet loss on the L2-normalised embeddings.

Multi-label triplet rule
------------------------
Two cells are a *positive* pair when their (inherited) label sets share at
least one class, a *negative* pair when they share none. Cells without any
label take no part. For each anchor, the hardest positive is the farthest
cell sharing a label and the hardest negative the closest cell sharing none;
anchors lacking a valid positive or negative are skipped. The loss is the
mean over the remaining anchors of ``relu(d(a, p) - d(a, n) + margin)``
(Euclidean distances), 0 when no anchor is valid.

Under DDP with ``gather=True`` the embeddings and labels of all ranks are
all-gathered with ``torch.distributed.nn.functional.all_gather`` (gradients
flow back to each rank's own embeddings): each rank's anchors are its own
cells, the candidates are the cells of the whole global batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def class_pos_weight(labels: np.ndarray) -> torch.Tensor:
    """Per-class positive weight ``max(1, ln(neg / pos))`` from an (N, C) 0/1 matrix.

    Examples
    --------
    >>> class_pos_weight(np.array([[1, 1], [0, 1], [0, 1], [0, 0]])).tolist()
    [1.0986122886681098, 1.0]
    """
    labels = np.asarray(labels, dtype=bool)
    pos = labels.sum(0).astype(np.float64)
    neg = len(labels) - pos
    w = np.log(np.maximum(neg, 1.0) / np.maximum(pos, 1.0))
    return torch.as_tensor(np.maximum(w, 1.0), dtype=torch.float64)


def bce_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    focal: bool = False,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Mean binary cross-entropy (optionally focal) over cells and classes.

    Examples
    --------
    >>> z = torch.zeros(2, 3)
    >>> round(bce_loss(z, torch.ones(2, 3)).item(), 4) == round(math.log(2), 4)
    True
    """
    logits = logits.float()
    targets = targets.float()
    pw = None if pos_weight is None else pos_weight.to(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pw, reduction="none")
    if focal:
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        a_t = alpha * targets + (1 - alpha) * (1 - targets)
        ce = a_t * (1 - p_t).pow(gamma) * ce
    return ce.mean()


def _gather(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather along dim 0 with gradients; ``(global tensor, offset of this rank)``."""
    import warnings

    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public autograd one
        warnings.simplefilter("ignore", FutureWarning)
        parts = all_gather(x.contiguous())
    rank = dist.get_rank()
    offset = sum(p.shape[0] for p in parts[:rank])
    return torch.cat(parts, 0), offset


def triplet_loss(
    embedding: torch.Tensor, labels: torch.Tensor, margin: float = 0.3, gather: bool = False
) -> torch.Tensor:
    """Batch-hard triplet loss with the multi-label rule of this module.

    ``gather=True`` mines over all ranks when ``torch.distributed`` is
    initialised (the batch sizes of the ranks must be equal).

    Examples
    --------
    >>> e = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    >>> y = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1]])
    >>> triplet_loss(e, y).item()
    0.0
    >>> triplet_loss(e, y[[0, 2, 1, 3]]).item() > 0
    True
    """
    emb = F.normalize(embedding.float(), dim=1)
    lab = labels.float()
    cand_emb, cand_lab, offset = emb, lab, 0
    if gather:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            cand_emb, offset = _gather(emb)
            cand_lab, _ = _gather(lab)
    n = emb.shape[0]
    # squared distances via the Gram matrix; clamp before sqrt keeps gradients finite
    d2 = (2.0 - 2.0 * emb @ cand_emb.T).clamp(min=1e-12)
    dist_ = d2.sqrt()
    share = (lab @ cand_lab.T) > 0
    has_lab = (lab.sum(1) > 0)[:, None] & (cand_lab.sum(1) > 0)[None, :]
    self_mask = torch.zeros_like(share)
    self_mask[torch.arange(n), torch.arange(n) + offset] = True
    pos = share & has_lab & ~self_mask
    neg = ~share & has_lab
    valid = pos.any(1) & neg.any(1)
    if not valid.any():
        return emb.sum() * 0.0
    hardest_pos = torch.where(pos, dist_, torch.full_like(dist_, -math.inf)).amax(1)
    hardest_neg = torch.where(neg, dist_, torch.full_like(dist_, math.inf)).amin(1)
    loss = F.relu(hardest_pos - hardest_neg + margin)
    return loss[valid].mean()


class CellLoss:
    """BCE/focal + ``lambda`` x triplet; returns a dict of the parts and ``"loss"``."""

    def __init__(
        self,
        pos_weight: torch.Tensor | None = None,
        focal: bool = False,
        alpha: float = 0.25,
        gamma: float = 2.0,
        triplet_lambda: float = 0.0,
        margin: float = 0.3,
        gather: bool = False,
    ) -> None:
        self.pos_weight = pos_weight
        self.focal, self.alpha, self.gamma = focal, alpha, gamma
        self.triplet_lambda, self.margin, self.gather = triplet_lambda, margin, gather

    def __call__(self, out: dict[str, torch.Tensor], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        cls = bce_loss(out["logits"], targets, self.pos_weight, self.focal, self.alpha, self.gamma)
        parts = {"bce": cls}
        total = cls
        if self.triplet_lambda > 0:
            tri = triplet_loss(out["embedding"], targets, self.margin, self.gather)
            parts["triplet"] = tri
            total = total + self.triplet_lambda * tri
        parts["loss"] = total
        return parts
