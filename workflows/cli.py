"""The ``hpacell`` command line: one Typer app, one thin module per command.

Command modules live in :mod:`hpacell.workflows.commands` and import only Typer at
module level (heavy libraries are imported inside the command function), so
``hpacell --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging

import typer

# Order = order in ``hpacell --help``. Each name is a module of hpacell.workflows.commands
# exposing ``command`` (the Typer callback).
COMMANDS: tuple[str, ...] = (
    "synth",
    "segment",
    "crop",
    "merge-cells",
    "train-cells",
    "train-images",
    "predict",
    "predict-images",
    "evaluate",
    "demo",
)

app = typer.Typer(
    name="hpacell",
    help="Single-cell protein localisation for Human Protein Atlas images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only."),
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


for _name in COMMANDS:
    _mod = importlib.import_module(f"hpacell.workflows.commands.{_name.replace('-', '_')}")
    app.command(_name, help=_mod.__doc__)(_mod.command)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
