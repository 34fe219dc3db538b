import pickle

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hpacell.cellcrops import CellDataset
from hpacell.cellcrops.dataset import multi_hot
from hpacell.cellcrops.labels import write_labels
from hpacell.cellcrops.shards import CropOptions, build_cell_dataset
from hpacell.segmentation.io import CHANNELS, write_mask
from hpacell.utils.errors import InputError


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """A small cell dataset: 4 synthetic images x 3 cells, 5 crops per shard."""
    root = tmp_path_factory.mktemp("ds")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        for ch in CHANNELS:
            cv2.imwrite(str(images / f"im{i}_{ch}.png"), rng.integers(0, 256, (64, 96), dtype=np.uint8))
        mask = np.zeros((64, 96), np.uint16)
        mask[5:30, 5:40], mask[35:60, 10:30], mask[10:50, 50:90] = 1, 2, 3
        write_mask(masks / f"im{i}_cellmask.png", mask)
    write_labels(root / "labels.csv", {"im0": [0], "im1": [1, 18], "im2": [5]})
    build_cell_dataset(
        images,
        masks,
        root / "cells",
        labels=root / "labels.csv",
        options=CropOptions(size=16, feature_size=16),
        shard_size=5,
    )
    return root / "cells"


def test_random_access_matches_shards(cells):
    ds = CellDataset(cells)
    assert len(ds) == 12 and ds.taxonomy == "hpa2021" and len(ds.classes) == 19
    assert ds.labels.shape == (12, 19) and ds.labels.dtype == np.uint8
    assert ds.table["shard"].nunique() > 1
    for i in np.random.default_rng(1).permutation(12):
        item = ds[int(i)]
        r = ds.table.iloc[i]
        ref = np.load(cells / f"shard-{r['shard']:05d}.npy", mmap_mode="r")[r["row"]]
        np.testing.assert_array_equal(item["image"], ref)
        assert item["image"].dtype == np.uint8 and item["image"].shape == (4, 16, 16)
        assert item["index"] == i
        expected = np.zeros(19, np.float32)
        expected[list(r["labels"])] = 1
        np.testing.assert_array_equal(item["labels"], expected)
    assert ds.labels[ds.table["image_id"] == "im3"].sum() == 0  # unlabelled image
    with pytest.raises(IndexError):
        ds[12]


def test_rows_transform_features(cells):
    ds = CellDataset(
        cells,
        rows=[7, 2],
        transform=lambda a: torch.from_numpy(a).float() / 255,
        feature_columns=["feat_cell_area", "feat_green_nucleus_share"],
    )
    assert len(ds) == 2 and ds.rows.tolist() == [7, 2]
    item = ds[1]
    assert item["index"] == 2 and isinstance(item["image"], torch.Tensor)
    assert item["features"].dtype == np.float32 and item["features"].shape == (2,)
    assert item["features"][0] == ds.table.loc[2, "area"]
    with pytest.raises(IndexError):
        CellDataset(cells, rows=[99])
    with pytest.raises(InputError):
        CellDataset(cells, feature_columns=["nope"])


def test_dataloader_with_workers_and_pickle(cells):
    ds = CellDataset(cells, feature_columns=["feat_cell_area"])
    ds[0]
    assert ds._maps and pickle.loads(pickle.dumps(ds))._maps == {}
    loader = DataLoader(ds, batch_size=5, num_workers=2, shuffle=True)
    seen = []
    for batch in loader:
        assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (4, 16, 16)
        assert batch["labels"].shape[1] == 19 and batch["features"].shape[1] == 1
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(12))


def test_multi_hot_rejects_bad_ids():
    with pytest.raises(ValueError):
        multi_hot([[3]], 3)
