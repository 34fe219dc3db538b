"""Write synthetic HPA-like image sets with per-cell ground truth (for tests, the demo, benchmarks).

OUT/images/<ID>_{red,green,blue,yellow}.png, OUT/train.csv (2021 format, image labels),
OUT/masks/<ID>_cellmask.png + _nucleimask.png (uint16 truth) and OUT/cells.csv (ID,cell,Label).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from hpacell.workflows.options import Overwrite, Workers


def command(
    out: Path = typer.Argument(..., help="Output folder."),
    images: int = typer.Option(8, "--images", "-n", min=1, help="Number of images."),
    size: int = typer.Option(512, "--size", min=16, help="Image width in pixels."),
    height: int = typer.Option(None, "--height", min=16, help="Image height (default: --size)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same bytes)."),
    bit_depth: int = typer.Option(8, "--bit-depth", help="8, or 16 (uint16 PNG holding 12-bit values)."),
    weak_share: float = typer.Option(
        0.3, "--weak-share", min=0.0, max=1.0, help="Share of cells that lack an image label or are Negative."
    ),
    negative_share: float = typer.Option(
        0.08, "--negative-share", min=0.0, max=1.0, help="Share of all-Negative images."
    ),
    cell_scale: float = typer.Option(
        1.0, "--cell-scale", min=0.05, help="Cell size factor (1.0: nuclei ~90-150 px)."
    ),
    workers: Workers = 1,
    overwrite: Overwrite = False,
) -> None:
    from hpacell.cellcrops.synth import make_synth_dataset
    from hpacell.utils.errors import InputError

    if bit_depth not in (8, 16):
        raise InputError(f"--bit-depth must be 8 or 16, got {bit_depth}")
    summary = make_synth_dataset(
        out,
        images,
        size,
        seed,
        height=height,
        bit_depth=bit_depth,
        weak_share=weak_share,
        negative_share=negative_share,
        cell_scale=cell_scale,
        overwrite=overwrite,
        workers=workers,
    )
    keep = ("out", "n_images", "n_cells", "generated", "skipped", "seconds")
    typer.echo(json.dumps({k: summary[k] for k in keep}))
