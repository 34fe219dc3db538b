"""Segment every image set of a folder into cell and nucleus masks (a resumable batch job).

Writes OUT/masks/<ID>_cellmask.png and <ID>_nucleimask.png (uint16 PNG, input size), the status
table OUT/segmentation.parquet and, with --overlays, OUT/overlays/<ID>.png.

Images whose two masks exist are skipped unless --overwrite. The exit code is 1 when any image
failed; each failure is listed as "ID: error".
"""

from __future__ import annotations

from pathlib import Path

import typer

from hpacell.utils.errors import InputError
from hpacell.workflows.options import IdList, ImagesDir, OutDir, Overwrite, Workers

HPACELLSEG_ONLY = ("nuclei_model", "cell_model", "device", "batch_size")


def _parse_options(pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings → dict; values parsed as YAML (numbers, booleans, lists, mappings)."""
    from hpacell.workflows.config import parse_yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--option expects KEY=VALUE, got {pair!r}")
        options[key.strip().replace("-", "_")] = parse_yaml(value, source=f"-O {pair}") if value else None
    return options


def command(
    images_dir: ImagesDir,
    out: OutDir,
    backend: str = typer.Option("builtin", "--backend", "-b", help="Segmenter: builtin or hpacellseg."),
    workers: Workers = 1,
    overwrite: Overwrite = False,
    overlays: bool = typer.Option(False, "--overlays", help="Also write OUT/overlays/<ID>.png (outlines)."),
    ids: IdList = None,
    table: Path = typer.Option(
        None,
        "--table",
        help="Status table path (default OUT/segmentation.parquet; the Snakefile sets one per shard).",
    ),
    nuclei_model: Path = typer.Option(
        None, "--nuclei-model", help="hpacellseg: dpn_unet_nuclei_v1.pth (default $HPACELLSEG_NUCLEI_MODEL)."
    ),
    cell_model: Path = typer.Option(
        None, "--cell-model", help="hpacellseg: dpn_unet_cell_3ch_v1.pth (default $HPACELLSEG_CELL_MODEL)."
    ),
    device: str = typer.Option(None, "--device", help="hpacellseg: auto (default), cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="hpacellseg: images per GPU batch (4)."),
    option: list[str] = typer.Option(
        [], "--option", "-O", help="Backend option KEY=VALUE (repeatable), e.g. -O pixel_scale=0.5."
    ),
) -> None:
    from hpacell.segmentation.batch import segment_folder
    from hpacell.utils.tables import read_id_list

    options = _parse_options(option)
    given = dict(nuclei_model=nuclei_model, cell_model=cell_model, device=device, batch_size=batch_size)
    given = {k: v for k, v in given.items() if v is not None}
    if given and backend != "hpacellseg":
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise InputError(f"{flags} only apply to --backend hpacellseg (backend is {backend!r})")
    options.update(given)
    id_list = read_id_list(ids) if ids is not None else None
    result = segment_folder(
        images_dir,
        out,
        backend=backend,
        backend_options=options,
        workers=workers,
        overwrite=overwrite,
        overlays=overlays,
        ids=id_list,
        table=table,
    )

    failed = result[result["status"] != "ok"]
    ok = result[result["status"] == "ok"]
    seconds = result["seconds"].sum(min_count=1)
    typer.echo(
        f"{len(result)} image(s): {len(ok)} ok ({int(ok['n_cells'].sum())} cells), {len(failed)} failed; "
        f"{0.0 if seconds != seconds else seconds:.1f} s of segmentation; table: "
        f"{table or out / 'segmentation.parquet'}"
    )
    if len(failed):
        for row in failed.itertuples():
            typer.echo(f"{row.ID}: {row.error}", err=True)
        raise typer.Exit(code=1)
