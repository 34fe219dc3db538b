"""RLE speed: ms per cell, ours (bbox-derived) vs pycocotools on full masks, on the real 2048 px masks.

Every cell of the five HPA reference masks in ``../shared/data/hpa2021/masks``
(or ``$HPACELL_SHARED_DATA``) is encoded to the submission's mask string
(``base64(zlib(counts))``) both ways; the outputs are checked equal. Prints JSON.

    python benchmarks/rle_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask
from scipy import ndimage

from hpacell.classifier.scoring.rle import encode_cell, encode_counts, encode_mask_cells
from hpacell.segmentation.io import read_mask

DATA = Path(os.environ.get("HPACELL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    masks = [read_mask(p) for p in sorted((DATA / "hpa2021" / "masks").glob("*_cellmask.png"))]
    if not masks:
        raise SystemExit(f"no masks under {DATA / 'hpa2021' / 'masks'}")
    n_cells = sum(int(m.max()) for m in masks)

    def ours_amortised() -> dict:  # bboxes found per image (find_objects) + encoding
        return {i: encode_mask_cells(m) for i, m in enumerate(masks)}

    boxes = [ndimage.find_objects(m) for m in masks]

    def ours_bbox_given() -> dict:  # bboxes known (predict: from cells.parquet)
        out = {}
        for i, (m, sls) in enumerate(zip(masks, boxes, strict=True)):
            h, w = m.shape
            for c, sl in enumerate(sls, 1):
                if sl is not None:
                    out[i, c] = encode_cell(m[sl] == c, sl[1].start, sl[0].start, h, w)
        return out

    def reference() -> dict:
        out = {}
        for i, m in enumerate(masks):
            for c in range(1, int(m.max()) + 1):
                full = np.asfortranarray((m == c).astype(np.uint8))
                out[i, c] = encode_counts(coco_mask.encode(full)["counts"])
        return out

    timings = {}
    results = {}
    for name, fn in (
        ("ours", ours_amortised),
        ("ours_bbox_given", ours_bbox_given),
        ("pycocotools", reference),
    ):
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            results[name] = fn()
            best = min(best, time.perf_counter() - t0)
        timings[name] = best / n_cells * 1000
    flat = {(i, c): s for i, d in results["ours"].items() for c, s in d.items()}
    identical = flat == results["pycocotools"] == results["ours_bbox_given"]
    print(
        json.dumps(
            {
                "n_images": len(masks),
                "n_cells": n_cells,
                "image_size": list(masks[0].shape),
                "ms_per_cell_ours": round(timings["ours"], 4),
                "ms_per_cell_ours_bbox_given": round(timings["ours_bbox_given"], 4),
                "ms_per_cell_pycocotools_full_mask": round(timings["pycocotools"], 4),
                "speedup": round(timings["pycocotools"] / timings["ours"], 1),
                "identical_output": identical,
                "note": "ours includes scipy find_objects per image; best of --repeats runs",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
