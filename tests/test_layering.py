"""Imports flow one way: utils -> segmentation -> cellcrops -> classifier -> workflows.

Inside classifier: model/metrics -> training -> scoring -> images. Checked on the source of every
module (function-level imports included), so a cycle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

ORDER = [
    "hpacell.utils",
    "hpacell.segmentation",
    "hpacell.cellcrops",
    "hpacell.classifier",
    "hpacell.classifier.training",
    "hpacell.classifier.scoring",
    "hpacell.classifier.images",
    "hpacell.workflows",
]


def layer(module: str) -> int:
    """Index in ORDER of the most specific layer that holds ``module``."""
    best = -1
    for k, prefix in enumerate(ORDER):
        if module == prefix or module.startswith(prefix + "."):
            best = k if best < 0 or len(prefix) > len(ORDER[best]) else best
    return best


def _sources() -> list[tuple[str, Path]]:
    out = []
    for stage in ("utils", "segmentation", "cellcrops", "classifier", "workflows"):
        package = importlib.import_module(f"hpacell.{stage}")
        out.append((package.__name__, Path(package.__file__)))
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            spec = importlib.util.find_spec(info.name)
            out.append((info.name, Path(spec.origin)))
    return out


def _imports(module: str, path: Path) -> set[str]:
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return {n for n in names if n.startswith("hpacell.")}


def test_layer_of():
    assert layer("hpacell.classifier.model") == ORDER.index("hpacell.classifier")
    assert layer("hpacell.classifier.scoring.rle") == ORDER.index("hpacell.classifier.scoring")
    assert layer("hpacell.utils.files") == 0


@pytest.mark.parametrize(("module", "path"), _sources(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_imports_flow_one_way(module, path):
    mine = layer(module)
    upward = sorted(n for n in _imports(module, path) if layer(n) > mine)
    # the lazy public API of a package names its own submodules' objects
    if path.name == "__init__.py":
        upward = [n for n in upward if not n.startswith(module + ".")]
    assert not upward, f"{module} imports from a later stage: {upward}"
