"""Merge cell datasets (e.g. the Snakemake per-shard folders) into one, without copying crops."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    out: Path = typer.Argument(
        ..., help="Merged dataset folder (cells.parquet + meta.json pointing to the parts)."
    ),
    parts: list[Path] = typer.Argument(..., help="Cell dataset folders written by `hpacell crop`."),
) -> None:
    from hpacell.cellcrops.merge import merge_cell_datasets

    n = merge_cell_datasets(parts, out)
    typer.echo(f"{n} cells from {len(parts)} datasets -> {out}")
