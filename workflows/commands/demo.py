"""Run the whole pipeline on generated data (synth → segment → crop → train → predict → evaluate)."""

from __future__ import annotations

from pathlib import Path

import typer

from hpacell.workflows.options import ConfigFile, Device, Epochs, Match, OutDir


def command(
    out: OutDir = Path("hpacell-demo"),
    real: Path = typer.Option(
        None, "--real", help="Also segment, crop and score the real HPA images in this folder."
    ),
    config: ConfigFile = None,
    train_images: int = typer.Option(None, "--train-images", help="Synthetic training images."),
    epochs: Epochs = None,
    device: Device = None,
    workers: int = typer.Option(None, "--workers", "-j", min=1, help="Worker processes."),
    match: Match = None,
) -> None:
    from hpacell.utils.errors import InputError
    from hpacell.workflows.config import load_config
    from hpacell.workflows.demo import DemoConfig, format_summary, run_demo

    cfg = load_config(
        DemoConfig,
        config,
        train_images=train_images,
        epochs=epochs,
        device=device,
        workers=workers,
        match=None if match is None else match.value,
    )
    if real is not None and not real.is_dir():
        raise InputError(f"{real}: folder not found")
    summary = run_demo(out, cfg, real=real, say=typer.echo)
    typer.echo(format_summary(summary))
