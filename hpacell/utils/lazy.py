"""Package attributes that import their module on first use.

hpacell's package ``__init__`` files name their public API this way, so
``import hpacell`` (and ``hpacell --help``) does not import torch, pandas or
scikit-image until a name that needs them is used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list]]:
    """``(__getattr__, __dir__)`` for a package whose names live in its submodules.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : mapping
        Public name -> module (absolute, or relative to ``package`` with a
        leading dot) that defines it under the same name.

    Examples
    --------
    >>> getattr_, dir_ = lazy_exports("hpacell.utils", {"write_json": ".files"})
    >>> getattr_("write_json").__name__
    'write_json'
    """

    def __getattr__(name: str) -> Any:
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
