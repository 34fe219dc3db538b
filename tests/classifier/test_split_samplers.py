import numpy as np
import pytest
import torch

from hpacell.classifier.training.samplers import OversampleSampler, PKBatchSampler, ShuffleSampler
from hpacell.classifier.training.split import image_split


def _cells(n_images=40, seed=0):
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 6, n_images)
    ids = np.repeat([f"i{k}" for k in range(n_images)], per)
    img_lab = (rng.random((n_images, 5)) < 0.3).astype(np.uint8)
    return ids, img_lab.repeat(per, 0)


def test_image_split_never_leaks_and_folds_partition_images():
    ids, y = _cells()
    seen_val = []
    for fold in range(5):
        tr, va = image_split(ids, y, folds=5, fold=fold, seed=1)
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(ids)
        assert not set(ids[tr]) & set(ids[va])
        seen_val += sorted(set(ids[va]))
    assert sorted(seen_val) == sorted(set(ids))  # every image validated exactly once


def test_image_split_stratifies_and_is_seeded():
    ids, y = _cells(100)
    tr, va = image_split(ids, y, folds=4, fold=0, seed=3)
    tr2, va2 = image_split(ids, y, folds=4, fold=0, seed=3)
    assert np.array_equal(va, va2)
    # every class appears on both sides
    assert y[tr].any(0).all() and y[va].any(0).all()


def test_image_split_errors():
    with pytest.raises(ValueError, match="cannot be split"):
        image_split(["a", "a", "b"], np.ones((3, 2)), folds=3)
    with pytest.raises(ValueError, match="label rows"):
        image_split(["a", "b"], np.ones((3, 2)))


def test_pk_sampler_batches_hold_positives():
    _, y = _cells(60)
    s = PKBatchSampler(y, p=3, k=4, seed=0)
    batches = list(s)
    assert len(batches) == len(s)
    for b in batches:
        assert len(b) == 12
        sub = y[b]
        # each of the 3 drawn classes has >= 4 cells in the batch
        assert (sub.sum(0) >= 4).sum() >= 3
    s.set_epoch(1)
    assert list(s) != batches


def test_oversample_favours_rare_classes_and_shards():
    y = np.zeros((100, 2), np.uint8)
    y[:95, 0] = 1
    y[95:, 1] = 1
    s = OversampleSampler(y, power=1.0, seed=0)
    idx = np.array(list(s))
    assert (idx >= 95).mean() > 0.3
    a = list(ShuffleSampler(10, seed=0, rank=0, world_size=2))
    b = list(ShuffleSampler(10, seed=0, rank=1, world_size=2))
    assert sorted(a + b) == list(range(10))


def _epoch_batches(loader, epoch):
    from hpacell.classifier.training.data import set_loader_epoch

    return [(b["index"].tolist(), b["image"]) for b in set_loader_epoch(loader, epoch)]


def _same(a, b):
    pairs = zip(a, b, strict=False)
    return len(a) == len(b) and all(ia == ib and torch.equal(xa, xb) for (ia, xa), (ib, xb) in pairs)


@pytest.mark.parametrize("sampler", ["random", "pk"])
def test_persistent_workers_keep_epochs_seeded_and_resumable(make_data, sampler):
    """Epoch k's batches (order and augmentation) are the same from a loader whose workers lived through
    epochs 0..k-1, from a fresh loader built at epoch k (a resume), and without workers."""
    from hpacell.classifier.training.config import TrainConfig
    from hpacell.classifier.training.data import make_train_loader

    data = make_data()
    kw = dict(batch_size=6, sampler=sampler, pk_classes=2, pk_samples=3, seed=3)
    cfg = TrainConfig(num_workers=2, **kw)
    loader = make_train_loader(data.train, data.train_labels, cfg, epoch=0)
    assert loader.persistent_workers
    epochs = [_epoch_batches(loader, e) for e in range(3)]
    workers = loader._iterator._workers
    assert _epoch_batches(loader, 2) and loader._iterator._workers is workers  # same worker processes
    assert not _same(epochs[1], epochs[2])  # epochs differ
    resumed = make_train_loader(data.train, data.train_labels, cfg, epoch=2)
    assert _same(_epoch_batches(resumed, 2), epochs[2])
    inline = make_train_loader(data.train, data.train_labels, TrainConfig(num_workers=0, **kw), epoch=0)
    assert _same(_epoch_batches(inline, 1), epochs[1])
