"""Random-access read speed of ``CellDataset`` (crops/s), direct and through a DataLoader.

Builds a cell dataset of ``--n`` crops (default 3,000 at 256 px, ~750 MB) by
repeating the crops of the real HPA images through the shard writer, then
times 1,000 random ``ds[i]`` reads with the shards in the page cache (warm)
and after asking the kernel to drop them (cold, ``posix_fadvise DONTNEED``),
and a cold ``DataLoader`` pass (2 workers, batch 64, start-up excluded) over
1,000 random rows, returning uint8 crops or float tensors scaled to [0, 1].
Prints JSON. A training step on a GPU consumes a few hundred to a few
thousand 256 px crops per second.

    python benchmarks/dataset_read.py [--n 3000] [--out /tmp/hpacell-dataset-read]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from hpacell.cellcrops.crop import crop_cells
from hpacell.cellcrops.dataset import CellDataset
from hpacell.cellcrops.labels import HPA2021, read_labels
from hpacell.cellcrops.shards import CropOptions, ShardWriter, consolidate
from hpacell.segmentation.io import find_image_sets, mask_paths, read_image_set, read_mask

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("HPACELL_SHARED_DATA", REPO.parent / "shared" / "data")) / "hpa2021"


def build(data: Path, out: Path, n: int, size: int, shard_size: int) -> None:
    labels = read_labels(data / "train.csv")
    parts = []
    for image_id, files in find_image_sets(data / "images").items():
        crops, table = crop_cells(
            read_image_set(files), read_mask(mask_paths(data / "masks", image_id)[0]), size=size
        )
        table.insert(0, "image_id", image_id)
        table["labels"] = [labels.labels_of(image_id)] * len(table)
        parts.append((crops, table))
    (out / "parts").mkdir(parents=True)
    writer = ShardWriter(out, size, 0)
    done, rep = 0, 0
    while done < n:
        for crops, table in parts:
            k = min(len(crops), n - done)
            t = table.iloc[:k].copy()
            t.insert(
                0, "cell_uid", [f"{i}_{c}_r{rep}" for i, c in zip(t["image_id"], t["cell"], strict=True)]
            )
            writer.add(crops[:k], t)
            done += k
            if writer.n >= shard_size:
                writer.commit()
            if done >= n:
                break
        rep += 1
    writer.commit()
    consolidate(out, HPA2021, CropOptions(size=size), sources={"benchmark": "repeated real crops"})


def drop_cache(out: Path) -> None:
    for p in out.glob("shard-*.npy"):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def time_reads(ds: CellDataset, idx: np.ndarray) -> float:
    t0 = time.perf_counter()
    for i in idx:
        ds[int(i)]
    return len(idx) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=Path("/tmp/hpacell-dataset-read"))
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--reads", type=int, default=1000)
    ap.add_argument("--keep", action="store_true", help="Keep the dataset folder.")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    t0 = time.perf_counter()
    build(args.data, args.out, args.n, args.size, shard_size=1024)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    ds = CellDataset(args.out)
    idx = rng.integers(0, len(ds), args.reads)
    time_reads(ds, idx[:50])  # open the maps
    warm = time_reads(ds, idx)
    drop_cache(args.out)
    cold = time_reads(CellDataset(args.out), rng.integers(0, len(ds), args.reads))
    loader_rates = {}
    for name, transform in (("uint8", None), ("float", lambda a: torch.from_numpy(a).float().div_(255))):
        drop_cache(args.out)
        sub = CellDataset(args.out, rows=rng.permutation(len(ds))[: args.reads], transform=transform)
        it = iter(DataLoader(sub, batch_size=64, num_workers=2, shuffle=False))
        next(it)  # worker start-up excluded
        t0 = time.perf_counter()
        n = sum(len(b["index"]) for b in it)
        loader_rates[name] = round(n / (time.perf_counter() - t0), 1)
    result = {
        "crops": len(ds),
        "crop_size": args.size,
        "shards": int(ds.table["shard"].nunique()),
        "build_s": round(build_s, 1),
        "random_reads_per_s_warm": round(warm, 1),
        "random_reads_per_s_cold": round(cold, 1),
        "dataloader_2_workers_batch64_crops_per_s_cold": loader_rates,
    }
    print(json.dumps(result, indent=1))
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
