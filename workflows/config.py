"""YAML configuration validated by pydantic; CLI flags override; the resolved config is saved.

Every configurable command has a pydantic model (``extra="forbid"``, so a typo
in a YAML key is an error, not a silent default). :func:`load_config` merges,
in increasing priority: the model defaults, the YAML file, the CLI overrides
(``None`` values are ignored, so unset flags keep the file's value).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from hpacell.utils.errors import HpacellError
from hpacell.utils.options import validation_message

__all__ = [
    "ConfigError",
    "StrictModel",
    "load_config",
    "resolve_run_config",
    "save_config",
    "validation_message",
]

T = TypeVar("T", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConfigError(HpacellError, ValueError):
    """An invalid configuration file or override; the message names the file."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def parse_yaml(text: str, source: str = "YAML") -> Any:
    r"""YAML text as Python objects (safe types only); a key repeated in a mapping is an error.

    Raises
    ------
    ConfigError
        Invalid YAML or a duplicate key, in one line starting with ``source``.

    Examples
    --------
    >>> parse_yaml("a: 1\nb: [2, 3]")
    {'a': 1, 'b': [2, 3]}
    >>> parse_yaml("epochs: 1\nepochs: 2", "run.yaml")
    Traceback (most recent call last):
    ...
    hpacell.workflows.config.ConfigError: run.yaml: invalid YAML: duplicate key 'epochs' (first on line 1) ...
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {' '.join(str(e).split())}") from None


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = v
    return out


def load_config(model: type[T], path: str | os.PathLike | None = None, **overrides: Any) -> T:
    """Build a config from defaults, an optional YAML file and CLI overrides.

    Examples
    --------
    >>> class C(StrictModel):
    ...     epochs: int = 1
    >>> load_config(C, epochs=3).epochs
    3
    >>> load_config(C, epochs=None).epochs
    1
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        loaded = parse_yaml(p.read_text(encoding="utf-8-sig"), source=str(p)) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        data = loaded
    data = _deep_update(data, {k: v for k, v in overrides.items() if v is not None})
    try:
        return model.model_validate(data)
    except ValidationError as e:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}invalid configuration: {validation_message(e)}") from None


def resolve_run_config(
    model: type[T],
    config_path: str | os.PathLike | None,
    out: str | os.PathLike,
    resume: bool,
    flags: dict[str, Any],
    check_new_run: bool = True,
) -> T:
    """The config of a training run: defaults < YAML (``--config``, or the run's saved
    ``config.yaml`` when resuming) < command-line flags.

    With ``check_new_run``, a run folder that already holds ``last.pt`` is refused
    unless ``resume``.
    """
    out = Path(out)
    saved = out / "config.yaml"
    base = config_path if config_path is not None else (saved if resume and saved.is_file() else None)
    cfg = load_config(model, base)
    try:
        cfg = model.model_validate({**cfg.model_dump(), **flags})
    except ValidationError as e:
        raise ConfigError(f"invalid option: {validation_message(e)}") from None
    if check_new_run and (out / "last.pt").exists() and not resume:
        raise ConfigError(f"{out / 'last.pt'} exists: pass --resume or choose another --out")
    return cfg


def save_config(config: BaseModel, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically) beside the outputs."""
    from hpacell.utils.files import atomic_write_bytes

    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    return atomic_write_bytes(path, text.encode())
