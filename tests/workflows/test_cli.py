"""The command line's one error path and its consistent flags."""

from __future__ import annotations

import click
import pytest
import typer
from typer.main import get_command

from hpacell.utils.errors import HpacellError, InputError
from hpacell.workflows.cli import COMMANDS, app, guard


def _raise(exc: BaseException):
    def fn():
        raise exc

    return fn


@pytest.mark.parametrize("exc", [InputError("a.csv: bad row 3"), FileNotFoundError("x.png: not found")])
def test_domain_errors_and_oserror_print_one_line_and_exit_1(exc, capsys):
    with pytest.raises(typer.Exit) as info:
        guard("crop", _raise(exc))()
    assert info.value.exit_code == 1
    err = capsys.readouterr().err
    assert err == f"hpacell crop: error: {exc}\n"


@pytest.mark.parametrize("exc", [KeyError("crop_size"), ValueError("bug"), TypeError("bug")])
def test_anything_else_is_a_bug_and_keeps_its_traceback(exc):
    with pytest.raises(type(exc)):
        guard("crop", _raise(exc))()


def test_domain_errors_share_one_base():
    from hpacell.cellcrops.labels import LabelError
    from hpacell.classifier.model import CheckpointError
    from hpacell.classifier.scoring.evaluate import TruthError
    from hpacell.classifier.scoring.submission import SubmissionError
    from hpacell.segmentation.io import ImageSetError
    from hpacell.workflows.config import ConfigError

    for cls in (LabelError, CheckpointError, TruthError, SubmissionError, ImageSetError, ConfigError):
        assert issubclass(cls, HpacellError), cls


def _params(name: str) -> dict[str, click.Parameter]:
    cmd = get_command(app).commands[name]
    return {p.name: p for p in cmd.params}


@pytest.mark.parametrize("name", COMMANDS)
def test_short_flags_mean_the_same_everywhere(name):
    meaning = {"-o": "out", "-j": "workers", "-c": "config"}
    for param in _params(name).values():
        for flag in getattr(param, "opts", []):
            if flag in meaning:
                assert param.name == meaning[flag], (name, flag, param.name)
        if param.name in meaning.values() and isinstance(param, click.Option):
            short = [k for k, v in meaning.items() if v == param.name][0]
            assert short in param.opts, f"{name}: --{param.name} lacks {short}"
