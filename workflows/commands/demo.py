"""Run the whole pipeline on generated data (synth → segment → crop → train → predict → evaluate)."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    out: Path = typer.Option(Path("hpacell-demo"), "--out", "-o", help="Output folder (a rerun resumes)."),
    real: Path = typer.Option(
        None, "--real", help="Also segment, crop and score the real HPA images in this folder."
    ),
    config: Path = typer.Option(None, "--config", "-c", help="YAML demo config (DemoConfig fields)."),
    train_images: int = typer.Option(None, "--train-images", help="Synthetic training images."),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs."),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda."),
    workers: int = typer.Option(None, "--workers", help="Worker processes."),
) -> None:
    from hpacell.workflows.config import ConfigError, load_config
    from hpacell.workflows.demo import DemoConfig, format_summary, run_demo

    try:
        cfg = load_config(
            DemoConfig, config, train_images=train_images, epochs=epochs, device=device, workers=workers
        )
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    if real is not None and not real.is_dir():
        typer.echo(f"error: {real}: folder not found", err=True)
        raise typer.Exit(1)
    try:
        summary = run_demo(out, cfg, real=real, say=typer.echo)
    except (RuntimeError, ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(format_summary(summary))
