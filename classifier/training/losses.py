"""Losses of the weakly supervised cell classifier.

* Classification: binary cross-entropy with logits over the classes (the
  multi-label "cross-entropy"), optionally focal (``alpha``, ``gamma``) and
  with per-class positive weights ``max(1, ln(neg/pos))``.
* Metric learning: batch-hard triplet loss on the L2-normalised embeddings.
* Multiple-instance (``weak_loss="mil"``, :func:`mil_loss`): the image label
  is exact about the classes an image lacks (every cell lacks them) but not
  about which cells show the classes it has. So per-cell BCE only on the
  certain entries (classes absent from the image = 0; all cells of a Negative
  image = Negative), and for each class of a positive image one BCE of the
  image's cells pooled (LSE, top-k mean, max or mean of their logits) against 1.
  The Negative output of cells of positive images gets no loss
  (``negative="ignore"``): such a cell may show none of its image's patterns.

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


def pool_logits(z: torch.Tensor, how: str = "lse", r: float = 5.0, topk: float = 0.5) -> torch.Tensor:
    """Pool ``(n, C)`` cell logits of one image into ``(C,)`` image logits.

    ``lse``: ``log(mean(exp(r z))) / r`` (between mean and max); ``topk``: mean of the
    ``ceil(topk n)`` largest; ``max``; ``mean``.

    Examples
    --------
    >>> z = torch.tensor([[0.0], [2.0], [4.0]])
    >>> [round(float(pool_logits(z, h)[0]), 3) for h in ("max", "mean", "topk")]
    [4.0, 2.0, 3.0]
    """
    n = z.shape[0]
    if how == "max":
        return z.amax(0)
    if how == "mean":
        return z.mean(0)
    if how == "topk":
        k = max(1, min(n, math.ceil(topk * n)))
        return z.topk(k, dim=0).values.mean(0)
    if how == "lse":
        return (torch.logsumexp(r * z, 0) - math.log(n)) / r
    raise ValueError(f"unknown pooling {how!r}")


def mil_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    groups: torch.Tensor,
    pool: str = "lse",
    r: float = 5.0,
    topk: float = 0.5,
    cell_weight: float = 0.0,
    negative: int | None = None,
    negative_mode: str = "ignore",
) -> dict[str, torch.Tensor]:
    """Multiple-instance loss of a batch of whole images (module docstring).

    Parameters
    ----------
    logits, targets : (B, C)
        Cell logits and inherited (image) labels; an image's label is the union
        of its cells' targets in the batch.
    groups : (B,) int
        Image of each cell.
    cell_weight : float
        Weight of a per-cell BCE on the image's classes (the inherited loss) next to the pooled term.
    negative : int, optional
        The Negative class id.

    Returns the parts ``"cell"`` (certain entries), ``"mil"`` (pooled) and
    ``"bce"`` (their sum), each normalised by ``B x C`` like :func:`bce_loss`.
    Cells of an image count once per cell in the pooled term, so its scale matches the per-cell loss.
    """
    z = logits.float()
    b, c = z.shape
    _, g = torch.unique(groups, return_inverse=True)
    n_img = int(g.max()) + 1 if b else 0
    img = torch.zeros(n_img, c, dtype=z.dtype, device=z.device).index_add_(0, g, (targets > 0.5).to(z))
    has = img[g] > 0  # (B, C): class of the cell's image
    neg_img = torch.zeros(b, dtype=torch.bool, device=z.device)
    if negative is not None:  # a Negative image: Negative and no other class
        others = torch.ones(c, dtype=torch.bool, device=z.device)
        others[negative] = False
        neg_img = has[:, negative] & ~has[:, others].any(1)
    weight = (~has).to(z)  # classes absent from the image: certain 0 for every cell
    cell_t = torch.zeros_like(z)
    if negative is not None:
        weight[neg_img] = 1.0  # a Negative image: every cell is Negative, nothing else
        cell_t[neg_img, negative] = 1.0
        weight[~neg_img, negative] = 0.0 if negative_mode == "ignore" else 1.0
    ce = F.binary_cross_entropy_with_logits(z, cell_t, reduction="none")
    cell = (ce * weight).sum()
    uncertain = has & ~neg_img[:, None]
    if cell_weight > 0:
        ones = F.binary_cross_entropy_with_logits(z, torch.ones_like(z), reduction="none")
        cell = cell + cell_weight * (ones * uncertain).sum()
    pooled_sum = z.new_zeros(())
    for k in range(n_img):
        rows = g == k
        pos = uncertain[rows].any(0)
        if not pos.any():
            continue
        zp = pool_logits(z[rows][:, pos], pool, r, topk)
        bce = F.binary_cross_entropy_with_logits(zp, torch.ones_like(zp), reduction="sum")
        pooled_sum = pooled_sum + int(rows.sum()) * bce
    norm = float(max(b * c, 1))
    parts = {"cell": cell / norm, "mil": pooled_sum / norm}
    parts["bce"] = parts["cell"] + parts["mil"]
    return parts


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
        mil: dict | None = None,
        groups: np.ndarray | None = None,
    ) -> None:
        self.mil = mil
        self.groups = None if groups is None else torch.as_tensor(np.asarray(groups), dtype=torch.long)
        self.pos_weight = pos_weight
        self.focal, self.alpha, self.gamma = focal, alpha, gamma
        self.triplet_lambda, self.margin, self.gather = triplet_lambda, margin, gather

    def __call__(
        self, out: dict[str, torch.Tensor], targets: torch.Tensor, index: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``index``: dataset positions of the batch's cells (their images, for the MIL loss)."""
        if self.mil is not None and self.groups is not None and index is not None:
            groups = self.groups[index.cpu().long()].to(out["logits"].device)
            parts = mil_loss(out["logits"], targets, groups, **self.mil)
            cls = parts["bce"]
        else:
            cls = bce_loss(out["logits"], targets, self.pos_weight, self.focal, self.alpha, self.gamma)
            parts = {"bce": cls}
        total = cls
        if self.triplet_lambda > 0:
            tri = triplet_loss(out["embedding"], targets, self.margin, self.gather)
            parts["triplet"] = tri
            total = total + self.triplet_lambda * tri
        parts["loss"] = total
        return parts
