"""Segmentation backends, chosen by name.

A backend turns one image set into instance masks::

    cells, nuclei = backend.segment(image)   # image: (4, H, W) uint8/uint16, channels r, g, b, y

``cells`` and ``nuclei`` are ``(H, W)`` integer label images at full resolution
(uint16 or uint32, 0 = background, a nucleus carries its cell's id).
``segment_batch`` takes a list of images (backends on a GPU batch them; the
default loops). Backends are imported lazily, so optional dependencies of one
(e.g. the hpacellseg models) never affect the others.

Examples
--------
>>> sorted(BACKENDS)
['builtin', 'hpacellseg']
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hpacell.utils.errors import InputError


@runtime_checkable
class Backend(Protocol):
    """What every segmentation backend provides."""

    name: str

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(cell_labels, nuclei_labels)`` of one ``(4, H, W)`` image set."""
        ...

    def segment_batch(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Segment several image sets (same contract as :meth:`segment`)."""
        ...


BACKENDS: dict[str, str] = {
    "builtin": "hpacell.segmentation.backends.builtin:BuiltinBackend",
    "hpacellseg": "hpacell.segmentation.backends.hpacellseg:HpaCellSegBackend",
}


def get_backend(name: str, **options: Any) -> Backend:
    """Instantiate the backend called ``name`` with its options.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).
    """
    try:
        target = BACKENDS[name]
    except KeyError:
        raise InputError(f"unknown segmentation backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    module, cls = target.split(":")
    factory = getattr(importlib.import_module(module), cls)
    check_options(factory, name, options)
    return factory(**options)


_KINDS: dict[type, tuple[tuple[type, ...], str]] = {
    float: ((int, float), "a number"),
    int: ((int,), "an integer"),
    bool: ((bool,), "true or false"),
    dict: ((dict,), "a mapping, e.g. {key: value}"),
    str: ((str,), "a string"),
}


def check_options(factory: Any, name: str, options: dict[str, Any]) -> None:
    """Refuse options the backend does not take, or of the wrong kind, in one line naming the option.

    Examples
    --------
    >>> class B:
    ...     def __init__(self, pixel_scale: float = 1.0) -> None: ...
    >>> check_options(B, "b", {"pixel_scale": 0.5})
    >>> check_options(B, "b", {"pixel_scale": "abc"})
    Traceback (most recent call last):
    ...
    hpacell.utils.errors.InputError: segmentation option pixel_scale='abc' (backend b): expected a number
    """
    params = dict(inspect.signature(factory).parameters)
    params.pop("self", None)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # noqa: BLE001 - unresolvable annotations: check the names only
        hints = {}
    for key, value in options.items():
        if key not in params:
            raise InputError(
                f"unknown segmentation option {key!r} for backend {name!r}; it takes {sorted(params)}"
            )
        hint = hints.get(key)
        kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if value is None and type(None) in kinds:
            continue
        kinds = tuple(k for k in kinds if k is not type(None))
        if not kinds or not all(k in _KINDS for k in kinds):
            continue  # unannotated, or a type not checked here (e.g. a path)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = any(isinstance(value, _KINDS[k][0]) for k in kinds)
        if not ok:
            raise InputError(
                f"segmentation option {key}={value!r} (backend {name}): expected {_KINDS[kinds[0]][1]}"
            )
