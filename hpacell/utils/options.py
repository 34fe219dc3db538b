"""The one style of hpacell's options: pydantic models with unknown keys as errors.

Every set of options a stage takes (``TrainConfig``, ``PredictConfig``, ``CropOptions``,
``SynthOptions``, ``PredictImagesConfig``, the workflow configs) is a pydantic model with
``extra="forbid"``, so a misspelt key is an error, not a silent default. :class:`Options` is the
base of the small frozen ones passed to worker processes: built from keywords, a bad value raises
:class:`OptionsError` (an :class:`~hpacell.utils.errors.InputError`) whose one-line message names
the field, so the command line prints it as ``hpacell CMD: error: ...``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from hpacell.utils.errors import InputError

__all__ = ["Options", "OptionsError", "validation_message"]


class OptionsError(InputError):
    """Invalid option values; the message names each field and its problem."""


def validation_message(error: ValidationError) -> str:
    """A pydantic validation error in one line: ``key: problem; key: problem``."""
    parts = []
    for item in error.errors():
        where = ".".join(str(x) for x in item.get("loc", ())) or "value"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


class Options(BaseModel):
    """Frozen, strict options (hashable, picklable); bad keywords raise :class:`OptionsError`.

    Examples
    --------
    >>> class Demo(Options):
    ...     what: ClassVar[str] = "demo options"
    ...     size: int = 8
    >>> Demo(size=16).size
    16
    >>> Demo(sise=16)
    Traceback (most recent call last):
    ...
    hpacell.utils.options.OptionsError: invalid demo options: sise: Extra inputs are not permitted
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    what: ClassVar[str] = "options"
    """How error messages name these options (e.g. "crop options")."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise OptionsError(f"invalid {self.what}: {validation_message(e)}") from None
