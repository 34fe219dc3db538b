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


# --------------------------------------------------------------------------- issue 13
def _part(root, name, image_id, **options):
    syn = root / f"syn-{name}"
    make_synth_dataset(syn, n_images=1, size=128, seed=1, cell_scale=0.3)
    for p in list((syn / "images").iterdir()) + list((syn / "masks").iterdir()):
        p.rename(p.with_name(p.name.replace("synth-0000", image_id)))
    out = root / "cells" / name
    build_cell_dataset(syn / "images", syn / "masks", out, options=CropOptions(size=16, **options))
    return out


def test_merge_refuses_parts_cut_with_other_options_naming_the_flag(tmp_path):
    """Case 10 + a failed merge leaves no OUT."""
    a = _part(tmp_path, "a", "ia")
    for name, kw, flag in (("m", {"margin": 4}, "--margin"), ("f", {"feature_size": 32}, "--feature-size")):
        b = _part(tmp_path, name, f"i{name}", **kw)
        with pytest.raises(ValueError, match=f"{flag}"):
            merge_cell_datasets([a, b], tmp_path / "merged")
        assert not (tmp_path / "merged").exists()
    with pytest.raises(FileNotFoundError):
        merge_cell_datasets([a, tmp_path / "nothing"], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not made by 'hpacell merge-cells'"):
        merge_cell_datasets([a], tmp_path / "foreign")


def test_merge_keeps_the_masks_folder_through_linked_views(tmp_path, monkeypatch):
    """Case 13: Snakemake layout (parts inside OUT, masks as links to one folder); run from elsewhere."""
    import os

    from hpacell.cellcrops.shards import recorded_source

    syn = tmp_path / "syn"
    make_synth_dataset(syn, n_images=2, size=128, seed=1, cell_scale=0.3)
    parts = []
    for k, image_id in enumerate(("synth-0000", "synth-0001")):
        view = tmp_path / "shards" / f"view-{k}"
        (view / "images").mkdir(parents=True)
        (view / "masks").mkdir()
        for p in (syn / "images").glob(f"{image_id}_*"):
            os.symlink(p, view / "images" / p.name)
        for p in (syn / "masks").glob(f"{image_id}_*"):
            os.symlink(p, view / "masks" / p.name)
        parts.append(tmp_path / "cells" / f"shard-{k:05d}")
        build_cell_dataset(view / "images", view / "masks", parts[-1], options=CropOptions(size=16))
    n = merge_cell_datasets(parts, tmp_path / "cells")
    assert n == len(CellDataset(tmp_path / "cells"))
    monkeypatch.chdir(tmp_path / "shards")
    assert recorded_source(tmp_path / "cells", "masks") == syn / "masks"
    assert merge_cell_datasets(parts, tmp_path / "cells") == n  # a rerun recomputes in its own folder
