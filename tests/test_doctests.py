"""Every docstring example of the installed hpacell package runs and gives what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

STAGES = ("utils", "segmentation", "cellcrops", "classifier", "workflows")


def _modules() -> list[str]:
    # Each stage is its own folder (an editable install maps them), so walk them one by one.
    names = ["hpacell"]
    for stage in STAGES:
        package = importlib.import_module(f"hpacell.{stage}")
        names.append(package.__name__)
        names += [info.name for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
    return sorted(names)


MODULES = _modules()


def test_every_stage_is_found():
    for stage in ("segmentation", "cellcrops", "classifier.scoring", "classifier.training", "workflows"):
        assert any(m.startswith(f"hpacell.{stage}.") for m in MODULES), stage


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, globs={**vars(module)}):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (output above)"
