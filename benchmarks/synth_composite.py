"""Synthetic vs real: a side-by-side composite PNG and the speed of ``hpacell synth``.

Writes a PNG with the composite (``hpacell.utils.render.composite``) of one
synthetic 512-px image (optionally its ground-truth cell outlines) beside a
real HPA image downscaled to the synthetic drawing scale (real 2048-px cells
are ~1.7x larger than ``cell_scale`` 1.0; the central 512 px are shown), and
times the generation of 8 images of 512 px, in memory and written to disk
(``make_synth_dataset``, one process). Prints JSON.

    python benchmarks/synth_composite.py [--out out/synth_composite.png] [--seed 0] [--index 0]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from hpacell.cellcrops.synth import image_rng, make_synth_dataset, synth_image
from hpacell.segmentation.io import find_image_sets, read_image_set, write_png
from hpacell.utils.render import composite, draw_outlines, side_by_side

DATA = Path(os.environ.get("HPACELL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
REAL_SCALE = 1.7  # real 2048-px HPA cells / synthetic cells at cell_scale 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/synth_composite.png"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", type=int, default=0, help="which synthetic image of the seed to show")
    ap.add_argument("--real-id", default="000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--outlines", action="store_true", help="add a panel with the true cell outlines")
    args = ap.parse_args()
    cv2.setNumThreads(1)

    t0 = time.perf_counter()
    images = [synth_image(image_rng(args.seed, i), args.size) for i in range(8)]
    t_memory = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = make_synth_dataset(Path(tmp) / "synth", 8, args.size, seed=args.seed)
        t_disk = time.perf_counter() - t0

    img, cells, _, truth = (
        images[args.index] if args.index < 8 else synth_image(image_rng(args.seed, args.index), args.size)
    )
    panels = [composite(img)]
    if args.outlines:
        panels.append(draw_outlines(panels[0], cells, thickness=2))
    sets = find_image_sets(DATA / "hpa2021" / "images", complete_only=True)
    if args.real_id not in sets:
        raise SystemExit(f"{DATA / 'hpa2021' / 'images'}: real image {args.real_id} not found")
    real = composite(read_image_set(sets[args.real_id]))
    side = round(real.shape[1] / REAL_SCALE)
    real = cv2.resize(real, (side, side), interpolation=cv2.INTER_AREA)
    c0 = max((side - args.size) // 2, 0)
    panels.append(real[c0 : c0 + args.size, c0 : c0 + args.size])
    write_png(args.out, side_by_side(*panels))
    print(
        json.dumps(
            {
                "composite": str(args.out.resolve()),
                "synthetic": {"seed": args.seed, "index": args.index, "cells": len(truth), "labels": truth},
                "real": args.real_id,
                "generate_8x512_memory_s": round(t_memory, 3),
                "generate_8x512_written_s": round(t_disk, 3),
                "cells_in_8_images": int(sum(len(t[3]) for t in images)),
                "cells_written": summary["n_cells"],
                "cv2_threads": 1,
                "mean_cells_per_image": float(np.mean([len(t[3]) for t in images])),
            }
        )
    )


if __name__ == "__main__":
    main()
