"""Quality and speed of the ``builtin`` segmenter on the real HPA images.

Prints JSON: per image the agreement with hpacellseg's reference cell masks
(one-to-one matching at IoU >= 0.6: recall, precision, mean IoU of matches,
counts), the segmentation time and the time to decode the image's four PNG
files, both on one core, and their ratio; then totals with the pooled recall
and precision (matched / total over all images).

Usage::

    python benchmarks/segment_quality.py [--backend builtin] [--repeat 3]

Data: ``$HPACELL_SHARED_DATA`` (default ``../shared/data`` beside the repo),
folder ``hpa2021/images`` and ``hpa2021/masks``.
"""

from __future__ import annotations

import os

# One core: set before NumPy/OpenCV start their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from hpacell.segmentation.backends import get_backend  # noqa: E402
from hpacell.segmentation.io import CHANNELS, find_image_sets, read_mask  # noqa: E402
from hpacell.segmentation.matching import segmentation_scores  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def decode(paths: dict[str, Path]) -> np.ndarray:
    """Decode the four channel files (bytes already in memory are not counted as decode)."""
    return np.stack([cv2.imdecode(paths[ch], cv2.IMREAD_UNCHANGED) for ch in CHANNELS])


def best_time(fn, repeat: int) -> tuple[float, object]:
    """Fastest of ``repeat`` runs of ``fn()`` in seconds, and its result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="builtin")
    parser.add_argument("--repeat", type=int, default=3, help="timing runs per image (the fastest counts)")
    parser.add_argument("--iou", type=float, default=0.6, help="IoU threshold of a match")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    data = Path(os.environ.get("HPACELL_SHARED_DATA", REPO.parent / "shared" / "data")) / "hpa2021"
    backend = get_backend(args.backend)
    sets = find_image_sets(data / "images", complete_only=True)
    if not sets:
        raise SystemExit(f"no image sets in {data / 'images'}")

    images, totals = {}, {"n_matched": 0, "n_pred": 0, "n_ref": 0, "segment_s": 0.0, "decode_s": 0.0}
    ious = []
    for image_id, paths in sets.items():
        raw = {ch: np.fromfile(paths[ch], np.uint8) for ch in CHANNELS}
        decode_s, image = best_time(lambda raw=raw: decode(raw), args.repeat)
        segment_s, (cells, _) = best_time(lambda image=image: backend.segment(image), args.repeat)
        ref = read_mask(data / "masks" / f"{image_id}_cellmask.png")
        s = segmentation_scores(cells, ref, args.iou)
        images[image_id] = {
            "recall": round(s.recall, 4),
            "precision": round(s.precision, 4),
            "mean_iou": round(s.mean_iou, 4),
            "n_ref": s.n_ref,
            "n_pred": s.n_pred,
            "n_matched": s.n_matched,
            "segment_s": round(segment_s, 4),
            "decode_s": round(decode_s, 4),
            "ratio": round(segment_s / decode_s, 3),
            "size": list(image.shape[1:]),
        }
        for k in ("n_matched", "n_pred", "n_ref"):
            totals[k] += getattr(s, k)
        totals["segment_s"] += segment_s
        totals["decode_s"] += decode_s
        if s.n_matched:
            ious.append(s.mean_iou)

    ratios = [v["ratio"] for v in images.values()]
    summary = {
        "recall": round(totals["n_matched"] / max(totals["n_ref"], 1), 4),
        "precision": round(totals["n_matched"] / max(totals["n_pred"], 1), 4),
        "mean_iou": round(float(np.mean(ious)) if ious else 0.0, 4),
        **{k: totals[k] for k in ("n_matched", "n_pred", "n_ref")},
        "segment_s_per_image": round(totals["segment_s"] / len(images), 4),
        "decode_s_per_image": round(totals["decode_s"] / len(images), 4),
        "ratio_mean": round(totals["segment_s"] / totals["decode_s"], 3),
        "ratio_max": max(ratios),
    }
    print(
        json.dumps(
            {
                "backend": args.backend,
                "iou_threshold": args.iou,
                "threads": 1,
                "images": images,
                "total": summary,
                "targets": {"recall": 0.90, "precision": 0.90, "ratio": 1.5},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
