import json

import numpy as np
import pytest

from hpacell.cellcrops import CellDataset
from hpacell.cellcrops.merge import merge_cell_datasets
from hpacell.cellcrops.shards import CropOptions, build_cell_dataset
from hpacell.cellcrops.synth import make_synth_dataset


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    out = []
    for k, seed in enumerate((1, 2)):
        syn = root / f"syn{k}"
        make_synth_dataset(syn, n_images=2, size=256, seed=seed, cell_scale=0.5)
        # distinct image IDs per part, as shards of one folder have
        for p in list((syn / "images").iterdir()) + list((syn / "masks").iterdir()):
            p.rename(p.with_name(p.name.replace("synth-", f"p{k}-")))
        build_cell_dataset(syn / "images", syn / "masks", root / f"cells{k}", options=CropOptions(size=32))
        out.append(root / f"cells{k}")
    return out


def test_merged_dataset_reads_every_crop_of_the_parts(parts, tmp_path):
    n = merge_cell_datasets(parts, tmp_path / "all")
    merged = CellDataset(tmp_path / "all")
    singles = [CellDataset(p) for p in parts]
    assert n == len(merged) == sum(len(d) for d in singles)
    i = 0
    for d in singles:
        for j in range(len(d)):
            np.testing.assert_array_equal(merged[i]["image"], d[j]["image"])
            assert merged.table["cell_uid"][i] == d.table["cell_uid"][j]
            i += 1
    assert not list((tmp_path / "all").glob("*.npy"))  # nothing copied
    assert json.loads((tmp_path / "all" / "meta.json").read_text())["n_cells"] == n


def test_merge_refuses_incompatible_or_duplicate_parts(parts, tmp_path):
    with pytest.raises(ValueError, match="appears in more than one part"):
        merge_cell_datasets([parts[0], parts[0]], tmp_path / "dup")
    meta = json.loads((parts[1] / "meta.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cells.parquet").write_bytes((parts[1] / "cells.parquet").read_bytes())
    (bad / "meta.json").write_text(json.dumps({**meta, "crop_size": 64}))
    with pytest.raises(ValueError, match="crop_size=64"):
        merge_cell_datasets([parts[0], bad], tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="not a cell dataset"):
        merge_cell_datasets([tmp_path], tmp_path / "y")


def test_crop_output_does_not_depend_on_worker_count(tmp_path):
    syn = tmp_path / "syn"
    make_synth_dataset(syn, n_images=6, size=256, seed=3, cell_scale=0.5)
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        build_cell_dataset(syn / "images", syn / "masks", out, options=CropOptions(size=32), workers=workers)
        outs.append(out)
    a, b = (CellDataset(o) for o in outs)
    assert list(a.table["cell_uid"]) == list(b.table["cell_uid"])
    assert (outs[0] / "shard-00000.npy").read_bytes() == (outs[1] / "shard-00000.npy").read_bytes()
