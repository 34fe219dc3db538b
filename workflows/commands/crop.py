"""Cut every cell into a square crop: npy shards + cells.parquet (labels, features) + meta.json.

Each cell of MASKS_DIR/<ID>_cellmask.png becomes a 4-channel (red, green, blue,
yellow) uint8 crop of --size px, centred on its bounding box; the cells inherit
their image's labels from --labels (2021 or 2018 CSV). A rerun with the same inputs
and options resumes; other images, masks, labels or options are refused unless
--overwrite (which recomputes). Failed images are recorded in
CELLS/crop_status.parquet and make the exit code 1.
"""

from __future__ import annotations

import typer

from hpacell.workflows.options import ImagesDir, Labels, Masks, OutDir, Overwrite, Taxonomy, Workers


def command(
    images_dir: ImagesDir,
    masks: Masks,
    out: OutDir,
    labels: Labels = None,
    size: int = typer.Option(256, "--size", help="Crop side in pixels."),
    mask_background: bool = typer.Option(
        True, "--mask-background/--no-mask-background", help="Zero the pixels outside the cell."
    ),
    min_area: int = typer.Option(0, "--min-area", help="Drop cells with fewer pixels."),
    drop_border_cells: bool = typer.Option(
        False, "--drop-border-cells", help="Drop cells touching the border."
    ),
    margin: int = typer.Option(0, "--margin", help="Extra pixels around each cell's square box."),
    feature_size: int = typer.Option(
        128, "--feature-size", help="Side of the crops features are computed on."
    ),
    taxonomy: Taxonomy = "hpa2021",
    shard_size: int = typer.Option(4096, "--shard-size", help="Crops per shard file."),
    workers: Workers = 1,
    overwrite: Overwrite = False,
) -> None:
    import json
    import logging

    from hpacell.cellcrops.shards import CropOptions, build_cell_dataset

    log = logging.getLogger("hpacell.crop")
    options = CropOptions(
        size=size,
        mask_background=mask_background,
        min_area=min_area,
        drop_border_cells=drop_border_cells,
        margin=margin,
        feature_size=feature_size,
    )
    summary = build_cell_dataset(
        images_dir,
        masks,
        out,
        labels=labels,
        options=options,
        taxonomy=None if labels else taxonomy,
        workers=workers,
        shard_size=shard_size,
        overwrite=overwrite,
    )
    report = {
        "images": summary.n_images,
        "skipped_done": summary.n_skipped,
        "cells": summary.n_cells,
        "failed": len(summary.failed),
        "images_without_labels": len(summary.images_without_labels) if labels else None,
        "label_ids_without_images": len(summary.labels_without_images) if labels else None,
    }
    typer.echo(json.dumps(report))
    if summary.failed:
        for image_id, err in sorted(summary.failed.items()):
            typer.echo(f"failed: {image_id}: {err}", err=True)
        log.error("%d images failed (see %s)", len(summary.failed), out / "crop_status.parquet")
        raise typer.Exit(code=1)
