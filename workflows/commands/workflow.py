"""Run the Snakemake workflow (segment, crop, merge-cells per shard) with a shipped profile: local or slurm.

IMAGES OUT [KEY=VALUE ...]: KEY=VALUE are the workflow's config keys (shard_size=50 workers=4
backend=hpacellseg ..., see `hpacell workflow --print-command` for the Snakefile that lists them).
--profile slurm submits one sbatch job per shard and step; --account/--partition/--gpu-partition (or
$HPACELL_SLURM_ACCOUNT/_PARTITION/_GPU_PARTITION) say where; nothing in the installed package is edited.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import typer

from hpacell.workflows.options import ImagesDir

PROFILES = {"local": "default", "default": "default", "slurm": "slurm"}


def snakemake_command(
    images: Path,
    out: Path,
    settings: list[str],
    profile: str = "local",
    dry_run: bool = False,
    extra: str = "",
) -> list[str]:
    """The ``python -m snakemake`` command line of a workflow run (absolute paths to the shipped files)."""
    from hpacell.utils.errors import InputError

    here = Path(__file__).resolve().parents[1]
    if profile in PROFILES:
        profile_dir = here / "profiles" / PROFILES[profile]
    else:
        profile_dir = Path(profile).resolve()
        if not (profile_dir / "config.yaml").is_file():
            raise InputError(f"--profile {profile}: expected local, slurm or a folder with config.yaml")
    for s in settings:
        if "=" not in s or not s.split("=", 1)[0].isidentifier():
            raise InputError(f"{s!r}: expected KEY=VALUE (a workflow config key, e.g. workers=4)")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(here / "Snakefile")]
    cmd += ["--workflow-profile", str(profile_dir)]
    cmd += ["--config", f"images={images.resolve()}", f"out={out.resolve()}", *settings]
    return cmd + (["--dry-run"] if dry_run else []) + shlex.split(extra)


def command(
    images: ImagesDir,
    out: Path = typer.Argument(..., help="Output folder (masks/, segmentation.parquet, cells/, logs/)."),
    settings: list[str] = typer.Argument(None, help="More workflow config keys as KEY=VALUE."),
    profile: str = typer.Option("local", "--profile", "-p", help="local, slurm, or a profile folder."),
    account: str = typer.Option(None, "--account", "-A", help="SLURM account (key slurm_account)."),
    partition: str = typer.Option(None, "--partition", help="SLURM partition (key slurm_partition)."),
    gpu_partition: str = typer.Option(
        None, "--gpu-partition", help="Partition of hpacellseg segment jobs (key gpu_partition)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Show the jobs, run nothing."),
    snakemake_args: str = typer.Option(
        "", "--snakemake-args", help="More Snakemake arguments as one string, e.g. '--jobs 20 --unlock'."
    ),
    print_command: bool = typer.Option(False, "--print-command", help="Print the Snakemake command only."),
) -> None:
    from hpacell.utils.errors import InputError

    keys = [f"{k}={v}" for k, v in (("slurm_account", account), ("slurm_partition", partition),
                                    ("gpu_partition", gpu_partition)) if v]  # fmt: skip
    cmd = snakemake_command(images, out, [*keys, *(settings or [])], profile, dry_run, snakemake_args)
    if print_command:
        typer.echo(shlex.join(cmd))
        return
    try:
        import snakemake  # noqa: F401
    except ImportError:
        raise InputError("snakemake is not installed: pip install 'hpacell[workflow]'") from None
    typer.echo(shlex.join(cmd), err=True)
    rc = subprocess.run(cmd, env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                  f"{os.environ.get('PATH', '')}"}).returncode  # fmt: skip
    if rc:
        raise typer.Exit(rc)
