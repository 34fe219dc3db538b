"""``hpacell evaluate`` speed at competition scale, mask and box mode; prints JSON.

A synthetic submission shaped like the competition's test set: 559 images
(462 at 2048 px, 68 at 1728, 29 at 3072, the sample submission's sizes), ~40
cells each (irregular blobs, ~200 px across at 2048 px), every cell once per
class (19 triples), and a truth CSV of the same cells (predicted masks are
shifted, reshaped copies of the true ones, so IoUs spread around 0.6). Each
mode is timed end to end as ``evaluate_files`` (read + check every row + score),
wall and process CPU seconds (the machine may be shared: CPU time is the figure
that does not depend on the load). Target: <= 120 s per mode on one core.

    python benchmarks/evaluate_speed.py [--data DIR] [--images 559] [--cells 40]

``--data`` keeps the generated files there and reuses them on the next run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from hpacell.classifier.scoring.evaluate import (  # noqa: E402
    TruthImage,
    evaluate,
    read_truth,
    write_truth_csv,
)
from hpacell.classifier.scoring.rle import encode_cell  # noqa: E402
from hpacell.classifier.scoring.submission import (  # noqa: E402
    prediction_string,
    read_submission,
    write_submission,
)

SIZES = [(2048, 462), (1728, 68), (3072, 29)]  # side, images (the sample submission's)
C = 19


def _blob(seed: int, radius: float, scale: float = 1.0) -> np.ndarray:
    """An irregular star-shaped cell in its own box (the same ``seed``: the same shape)."""
    rng = np.random.default_rng(seed)
    n = int(radius * scale * 1.6) + 2
    yy, xx = np.mgrid[-n : n + 1, -n : n + 1].astype(np.float64)
    theta = np.arctan2(yy, xx)
    r = radius * (1 + 0.15 * rng.standard_normal())
    for k in (2, 3, 5, 8):
        r = r * (1 + (0.25 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)))
    ry = rng.uniform(0.7, 1.0)
    return (xx**2 + (yy / ry) ** 2) <= (r * scale) ** 2


PRED_SCALES = (0.75, 0.85, 0.95, 1.05)


def _library(side: int, n: int = 48) -> list[list[np.ndarray]]:
    """``n`` cell shapes for one image size: each as true (scale 1) and at every predicted scale."""
    radius = 100 * side / 2048
    return [[_blob(seed, radius, scale) for scale in (1.0, *PRED_SCALES)] for seed in range(n)]


def _place(crop: np.ndarray, cy: float, cx: float, side: int) -> str:
    h, w = crop.shape
    y0, x0 = int(cy) - h // 2, int(cx) - w // 2
    ys, xs = max(0, -y0), max(0, -x0)  # clip to the image
    ye, xe = min(h, side - y0), min(w, side - x0)
    return encode_cell(crop[ys:ye, xs:xe], x0 + xs, y0 + ys, side, side)


def _image(
    rng: np.random.Generator, side: int, n_cells: int, library: list[list[np.ndarray]]
) -> tuple[list[str], list[str], list[list[int]]]:
    """True and predicted mask strings of one image's cells, and the cells' labels."""
    grid = int(np.ceil(np.sqrt(n_cells)))
    step = side / grid
    labels_img = sorted(rng.choice(C - 1, rng.integers(1, 4), replace=False).tolist())
    true, pred, labels = [], [], []
    for k in range(n_cells):
        cy, cx = (np.array(divmod(k, grid)) + 0.5) * step + rng.uniform(-0.1, 0.1, 2) * step
        shapes = library[rng.integers(len(library))]
        dy, dx = rng.integers(-25, 26, 2) * side / 2048
        true.append(_place(shapes[0], cy, cx, side))
        pred.append(_place(shapes[1 + rng.integers(len(PRED_SCALES))], cy + dy, cx + dx, side))
        n = rng.integers(1, len(labels_img) + 1)
        labels.append(sorted(rng.choice(labels_img, n, replace=False).tolist()))
    return true, pred, labels


def make_data(folder: Path, n_images: int, n_cells: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``submission.csv`` and ``truth.csv`` into ``folder`` (kept if present)."""
    sub_path, truth_path = folder / "submission.csv", folder / "truth.csv"
    if sub_path.is_file() and truth_path.is_file():
        return sub_path, truth_path
    rng = np.random.default_rng(seed)
    sides = np.concatenate([[side] * n for side, n in SIZES])[:n_images]
    if len(sides) < n_images:
        sides = np.resize(sides, n_images)
    libraries = {side: _library(side) for side, _ in SIZES}
    rows, truth = [], []
    for i, side in enumerate(sides):
        side = int(side)
        nc = max(1, int(rng.integers(n_cells - 10, n_cells + 11)))
        true, pred, labels = _image(rng, side, nc, libraries[side])
        scores = rng.random((nc, C)) * 0.6
        for j, lab in enumerate(labels):
            scores[j, lab] += 0.4
        image_id = f"img{i:04d}"
        rows.append((image_id, side, side, prediction_string(pred, scores)))
        truth.append(TruthImage(image_id, side, side, list(range(1, nc + 1)), labels, true))
    folder.mkdir(parents=True, exist_ok=True)
    write_truth_csv(truth, truth_path)
    write_submission(rows, sub_path)
    return sub_path, truth_path


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, round(time.perf_counter() - w, 2), round(time.process_time() - c, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="Keep/reuse the generated files here.")
    ap.add_argument("--images", type=int, default=559)
    ap.add_argument("--cells", type=int, default=40, help="Mean cells per image.")
    args = ap.parse_args()
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory()
        args.data = Path(tmp.name)
    (sub_path, truth_path), gen_wall, _ = _timed(lambda: make_data(args.data, args.images, args.cells))
    result: dict = {
        "images": args.images,
        "submission_mb": round(sub_path.stat().st_size / 1e6, 1),
        "generate_s": gen_wall,
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }
    for mode in ("mask", "box"):
        sub, w_sub, c_sub = _timed(lambda: read_submission(sub_path, n_classes=C))
        truth, w_truth, c_truth = _timed(lambda: read_truth(truth_path))
        ev, w_ev, c_ev = _timed(lambda: evaluate(sub, truth, match=mode))  # noqa: B023
        result[mode] = {
            "wall_s": round(w_sub + w_truth + w_ev, 2),
            "cpu_s": round(c_sub + c_truth + c_ev, 2),
            "read_check_submission_s": w_sub,
            "read_check_truth_s": w_truth,
            "score_s": w_ev,
            "mAP": round(ev.map, 6),
        }
    result["detections"] = sum(len(s) for s in sub)
    result["distinct_masks"] = sum(len(set(s.masks)) for s in sub)
    result["true_cells"] = sum(len(t.cells) for t in truth)
    print(json.dumps(result, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
