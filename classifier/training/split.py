"""Train/validation split by image with multilabel stratification.

All cells of an image fall on the same side (their labels are inherited from
the image, so splitting cells would leak). Images are stratified on their
label sets with iterative stratification (``iterstrat``) into K folds; fold
``fold`` is the validation set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpacell.utils.errors import InputError


def image_split(
    image_ids: Sequence[str], labels: np.ndarray, folds: int = 5, fold: int = 0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the training and validation cells.

    Parameters
    ----------
    image_ids : sequence of str
        Image of each cell (length N).
    labels : (N, C) array
        Multi-hot labels of each cell (inherited from its image).
    folds, fold : int
        K of the K-fold split and which fold is validation.
    seed : int
        Shuffling seed.

    Examples
    --------
    >>> ids = [f"img{i // 3}" for i in range(30)]
    >>> y = np.eye(2, dtype=int)[[i // 3 % 2 for i in range(30)]]
    >>> tr, va = image_split(ids, y, folds=5)
    >>> len(tr) + len(va), set(np.array(ids)[tr]) & set(np.array(ids)[va])
    (30, set())
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    ids = np.asarray(image_ids).astype(str)
    labels = np.asarray(labels)
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} image ids but {len(labels)} label rows")
    if not 0 <= fold < folds:
        raise InputError(f"fold {fold} not in 0..{folds - 1}")
    uniq, inverse = np.unique(ids, return_inverse=True)
    if len(uniq) < folds:
        raise InputError(f"{len(uniq)} images cannot be split into {folds} folds by image")
    img_labels = np.zeros((len(uniq), labels.shape[1]), dtype=np.int64)
    np.maximum.at(img_labels, inverse, (labels > 0).astype(np.int64))
    kfold = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = kfold.split(np.zeros(len(uniq)), img_labels)
    val_img = next(v for i, (_, v) in enumerate(splits) if i == fold)
    is_val = np.isin(inverse, val_img)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
