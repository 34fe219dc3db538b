"""hpacellseg labelling speed: seconds per 2048 px image on one core, output checked against the reference.

Runs :func:`hpacell.segmentation.backends.hpacellseg_labels.label_cells` on the
full-resolution maps of every 2048 x 2048 case of ``../shared/data/hpacellseg-reference``
(or ``$HPACELL_SHARED_DATA``): the 5 real images and the 7 maps-only cases. Each
result must equal the reference's masks pixel for pixel. With ``--compare`` it
also times a straightforward version (the reference's steps with the
scikit-image / SciPy calls the reference makes, our code) on the same maps, so
the speed-up can be read under the same machine load; with ``--fast`` it times
``exact_ties=False`` and counts the pixels that differ; with ``--skimage-flood`` the three
watersheds run in scikit-image instead of the compiled flood (what an install without numba
gets). One thread (OpenCV, BLAS). Prints JSON: per case CPU and wall seconds, their medians,
identical: true/false, which flood ran.

    python benchmarks/hpacellseg_postprocess.py [--repeats 1] [--compare] [--fast] [--skimage-flood]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402
from skimage import filters, measure, morphology, segmentation  # noqa: E402

from hpacell.segmentation.backends.hpacellseg_labels import label_cells  # noqa: E402
from hpacell.segmentation.io import read_mask  # noqa: E402

DATA = Path(os.environ.get("HPACELL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
GOLDEN = DATA / "hpacellseg-reference"


def read_map(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1])


def straightforward(cell_map: np.ndarray, nuclei_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's steps, written plainly with the library calls it makes (for the timing ratio)."""
    levels = np.arange(256) / 255.0

    def fill_holes(labels):
        kept = np.where(segmentation.find_boundaries(labels), 0, labels)
        return ndi.label(ndi.binary_fill_holes(kept > 0))[0]

    def drop(labels, size):
        small = np.bincount(labels.ravel()) < size
        small[0] = False
        return np.where(small[labels], 0, labels)

    n1, n2, c1, c2 = nuclei_map[..., 1], nuclei_map[..., 2], cell_map[..., 1], cell_map[..., 2]
    seeds = ((1 - levels) > 0.05)[n1 + c1] & (levels > 0.15)[n2]
    seeds = morphology.remove_small_objects(seeds, max_size=499)
    region = morphology.remove_small_holes((levels > 0.4)[n2], max_size=999)
    region = morphology.remove_small_objects(region, max_size=7)
    nuclei = segmentation.watershed(
        region.astype(np.uint8), ndi.label(seeds)[0], mask=region, watershed_line=True
    )
    nuclei = measure.label(drop(nuclei, 2500))
    t = max(0.22, filters.threshold_otsu(c2 / 255.0) * 0.5)
    elevation = -c2.astype(np.float64)
    cells = segmentation.watershed(elevation, nuclei, mask=(levels > t)[c2])
    cells = morphology.closing(drop(cells, 5500).astype(np.uint8), morphology.disk(6))
    cells = fill_holes(cells)
    cells = segmentation.watershed(elevation, cells, mask=(cells > 0) | (levels > 0.05)[c1])
    cells = measure.label(fill_holes(cells) > 0)
    cells = measure.label(drop(cells, 5500)).astype(np.uint16)
    inside = drop(measure.label((cells > 0) & (nuclei > 0)), 2500)
    return cells, np.where(inside > 0, cells, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--compare", action="store_true", help="also time the straightforward version")
    ap.add_argument("--fast", action="store_true", help="also time exact_ties=False (pixels differing)")
    ap.add_argument("--skimage-flood", action="store_true", help="scikit-image's watershed, not numba's")
    args = ap.parse_args()
    from hpacell.segmentation.backends import flood

    if args.skimage_flood:
        flood._KERNELS["packed"] = None
    cv2.setNumThreads(1)
    if not (GOLDEN / "cases.json").is_file():
        raise SystemExit(f"no golden data under {GOLDEN}")
    cases = json.loads((GOLDEN / "cases.json").read_text())["cases"]
    cases = {k: v for k, v in cases.items() if v["shape"] == [2048, 2048] and v["kind"] in ("image", "post")}
    runs = {"ours": label_cells}
    if args.fast:
        runs["exact_ties_false"] = lambda c, n: label_cells(c, n, exact_ties=False)
    if args.compare:
        runs["straightforward"] = straightforward
    result: dict = {"cases": {}, "identical": True, "threads": 1}
    result["flood"] = "numba" if flood.have_numba() else "scikit-image"
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    wall: dict[str, list[float]] = {k: [] for k in runs}
    for name, case in cases.items():
        files = case["files"]
        cell_map, nuclei_map = read_map(GOLDEN / files["cell_map"]), read_map(GOLDEN / files["nuclei_map"])
        ref = read_mask(GOLDEN / files["cellmask"]), read_mask(GOLDEN / files["nucleimask"])
        row = {}
        for key, fn in runs.items():
            c_times, w_times = [], []
            for _ in range(args.repeats):
                c0, w0 = time.process_time(), time.perf_counter()
                cells, nuclei = fn(cell_map, nuclei_map)
                c_times.append(time.process_time() - c0)
                w_times.append(time.perf_counter() - w0)
            same = bool(np.array_equal(cells, ref[0]) and np.array_equal(nuclei, ref[1]))
            if key != "exact_ties_false":
                result["identical"] &= same
            cpu[key].append(min(c_times))
            wall[key].append(min(w_times))
            row[key] = {"cpu_s": round(min(c_times), 3), "wall_s": round(min(w_times), 3), "identical": same}
            if not same:
                row[key]["cell_pixels_differing"] = int(np.count_nonzero(cells != ref[0]))
        result["cases"][name] = row
    for key in runs:
        result[f"{key}_median_cpu_s"] = round(statistics.median(cpu[key]), 3)
        result[f"{key}_median_wall_s"] = round(statistics.median(wall[key]), 3)
    if args.compare:
        result["speedup_cpu"] = round(result["straightforward_median_cpu_s"] / result["ours_median_cpu_s"], 2)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
