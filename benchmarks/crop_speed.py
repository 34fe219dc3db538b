"""Cells per second per core of ``crop_cells`` (crop + resize + features), image decode excluded.

Decodes the real HPA images and reference masks first, then times
:func:`hpacell.cellcrops.crop.crop_cells` on one core (``cv2.setNumThreads(1)``, one
process) at ``--size``. Rates are cells per CPU-second of this process
(``cpu_*``, robust when other jobs share the machine) and per wall-clock
second (``wall_*``); each configuration runs ``--repeats`` times and the best
and median are printed (JSON).

    python benchmarks/crop_speed.py [--data ../shared/data/hpa2021] [--size 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import cv2

from hpacell.cellcrops.crop import crop_cells
from hpacell.segmentation.io import find_image_sets, mask_paths, read_image_set, read_mask

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("HPACELL_SHARED_DATA", REPO.parent / "shared" / "data")) / "hpa2021"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    sets = find_image_sets(args.data / "images")
    data = [(read_image_set(s), read_mask(mask_paths(args.data / "masks", i)[0])) for i, s in sets.items()]
    configs = {
        "default": {},
        "exact_inter_area": {"exact_area": True},
        "feature_size_64": {"feature_size": 64},
        "no_mask_background": {"mask_background": False},
    }
    result = {
        "images": len(data),
        "crop_size": args.size,
        "repeats": args.repeats,
        "cells_per_s_per_core": {},
    }
    for name, kw in configs.items():
        cpu, wall = [], []
        for _ in range(args.repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            n = sum(len(crop_cells(img, mask, size=args.size, **kw)[0]) for img, mask in data)
            cpu.append(n / (time.process_time() - c0))
            wall.append(n / (time.perf_counter() - t0))
        result["cells"] = n
        result["cells_per_s_per_core"][name] = {
            "cpu_best": round(max(cpu), 1),
            "cpu_median": round(statistics.median(cpu), 1),
            "wall_best": round(max(wall), 1),
            "wall_median": round(statistics.median(wall), 1),
        }
    result["target"] = 500
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
