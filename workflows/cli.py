"""The ``hpacell`` command line: one Typer app, one thin module per command.

Command modules live in :mod:`hpacell.workflows.commands` and import only Typer at
module level (heavy libraries are imported inside the command function), so
``hpacell --help`` stays fast; shared options are declared once in
:mod:`hpacell.workflows.options`.

One error path for every command (:func:`guard`): a domain error
(:class:`~hpacell.utils.errors.HpacellError`: bad input, bad options) or an
``OSError`` (a missing or unwritable file) prints ``hpacell CMD: error: ...`` in
one line and exits 1; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from typing import Any

import typer

from hpacell.utils.errors import HpacellError

# Order = order in ``hpacell --help``. Each name is a module of hpacell.workflows.commands
# exposing ``command`` (the Typer callback).
COMMANDS: tuple[str, ...] = (
    "synth",
    "segment",
    "crop",
    "merge-cells",
    "workflow",
    "train-cells",
    "relabel",
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


def fail(command: str, message: str) -> None:
    """Print ``hpacell COMMAND: error: MESSAGE`` on stderr and exit 1."""
    typer.echo(f"hpacell {command}: error: {message}", err=True)
    raise typer.Exit(code=1)


def guard(command: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with the one error path of the command line (see the module docs)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (HpacellError, OSError) as e:
            fail(command, str(e).strip() or type(e).__name__)

    return run


for _name in COMMANDS:
    _mod = importlib.import_module(f"hpacell.workflows.commands.{_name.replace('-', '_')}")
    app.command(_name, help=_mod.__doc__)(guard(_name, _mod.command))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
