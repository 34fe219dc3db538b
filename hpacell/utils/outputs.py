"""Output folders that are never overwritten or reused by mistake.

Two rules, shared by every command:

* **A command writes only into a folder it created or that carries its marker.**
  :func:`claim_folder` creates the folder (or accepts an empty one) and writes a
  small marker file ``.hpacell.json`` naming the command; a non-empty folder
  without that marker, or with another command's marker, is refused.
* **A rerun reuses outputs only when the inputs and options that made them are
  the same.** :func:`check_stamp` compares a small JSON fingerprint stored beside
  the outputs (:func:`write_stamp`) with the new one; a difference is refused
  with the keys that differ (or, with ``overwrite=True``, reported so the caller
  recomputes).

Paths written into metadata are relative to the folder of the file that records
them (:func:`record_path`) and are resolved from there (:func:`resolve_path`),
so an output folder can be moved, or read from another working directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hpacell.utils.errors import InputError
from hpacell.utils.files import write_json

__all__ = [
    "MARKER",
    "claim_folder",
    "file_digest",
    "fingerprint",
    "folder_owner",
    "check_stamp",
    "read_stamp",
    "record_path",
    "resolve_path",
    "write_stamp",
]

MARKER = ".hpacell.json"


def folder_owner(folder: str | os.PathLike) -> str | None:
    """The command named by ``folder``'s marker, or ``None`` when it has none (or it is unreadable)."""
    path = Path(folder) / MARKER
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("command")
    except (OSError, ValueError, AttributeError):
        return None


def claim_folder(
    folder: str | os.PathLike,
    command: str,
    *,
    accept: Iterable[str] = (),
    ignore: Iterable[str] = (),
    legacy: Iterable[str] = (),
) -> Path:
    """Create ``folder`` for ``command``, or accept it if it is empty or already ``command``'s.

    Parameters
    ----------
    folder : path
        The output folder.
    command : str
        The owner written into the marker (e.g. ``"crop"``).
    accept : iterable of str
        Other owners whose folders ``command`` may also write into (e.g. a
        ``demo`` folder holding a ``predict`` sub-folder).
    ignore : iterable of str
        Entry names that do not make a folder "non-empty" (e.g. ``.DS_Store``).
    legacy : iterable of str
        Entry names that all show that an unmarked folder was written by
        ``command`` before markers existed (e.g. ``synth.json``); such a folder
        is marked and accepted.

    Raises
    ------
    InputError
        ``folder`` is a file, or a non-empty folder without ``command``'s marker.

    Examples
    --------
    >>> import tempfile
    >>> out = claim_folder(Path(tempfile.mkdtemp()) / "run", "crop")
    >>> folder_owner(out)
    'crop'
    >>> claim_folder(out, "crop") == out
    True
    >>> _ = (out / "x.txt").write_text("x")
    >>> claim_folder(out, "predict")
    Traceback (most recent call last):
    ...
    hpacell.utils.errors.InputError: ... was made by 'hpacell crop', not 'hpacell predict'; ...
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: is a file, not an output folder")
    owner = folder_owner(folder) if folder.is_dir() else None
    if owner is not None:
        if owner == command or owner in set(accept):
            return folder
        if _is_empty(folder, ignore=set(ignore) | {MARKER}):
            write_json(folder / MARKER, {"command": command})
            return folder
        raise InputError(
            f"{folder}: was made by 'hpacell {owner}', not 'hpacell {command}'; choose another output folder"
        )
    legacy = list(legacy)
    if folder.is_dir() and legacy and all((folder / name).exists() for name in legacy):
        write_json(folder / MARKER, {"command": command})
        return folder
    if folder.is_dir() and not _is_empty(folder, ignore=set(ignore)):
        raise InputError(
            f"{folder}: exists, is not empty and was not made by 'hpacell {command}' "
            f"(no {MARKER} marker); choose a new or empty output folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / MARKER, {"command": command})
    return folder


def _is_empty(folder: Path, ignore: set[str]) -> bool:
    return not any(p.name not in ignore for p in folder.iterdir())


def record_path(path: str | os.PathLike, folder: str | os.PathLike) -> str:
    """``path`` as recorded in a metadata file in ``folder``: relative to ``folder`` (POSIX slashes).

    Examples
    --------
    >>> record_path("/data/run/masks", "/data/run/cells")
    '../masks'
    """
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()


def resolve_path(recorded: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """A path recorded in a metadata file in ``folder`` (relative to it, or absolute), resolved.

    Examples
    --------
    >>> resolve_path("../masks", "/data/run/cells").as_posix()
    '/data/run/masks'
    """
    return Path(os.path.normpath(Path(os.path.abspath(folder)) / recorded))


def fingerprint(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (key order does not matter).

    Examples
    --------
    >>> fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    True
    >>> len(fingerprint({"a": 1}))
    16
    """
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 (first 16 hex digits) of a file's content: identifies a checkpoint or a table."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def read_stamp(path: str | os.PathLike) -> dict | None:
    """The stamp stored at ``path``, or ``None`` when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(f"{path}: not a readable hpacell stamp ({e}); remove it or use --overwrite") from e
    return data if isinstance(data, dict) else None


def write_stamp(path: str | os.PathLike, stamp: Mapping[str, Any]) -> Path:
    """Store ``stamp`` (the inputs and options that made some outputs) at ``path``, atomically."""
    return write_json(path, json.loads(json.dumps(dict(stamp), sort_keys=True, default=str)))


def check_stamp(
    path: str | os.PathLike,
    stamp: Mapping[str, Any],
    *,
    overwrite: bool = False,
    what: str = "outputs",
    folder: str | os.PathLike | None = None,
) -> bool:
    """Whether outputs stamped at ``path`` were made by the same ``stamp`` and may be reused.

    Returns ``True`` when the stored stamp equals ``stamp``, ``False`` when there
    is no stamp, or when they differ and ``overwrite`` is true (the caller then
    recomputes and calls :func:`write_stamp`).

    ``what`` and ``folder`` (default: the stamp's folder) name the outputs in the message.

    Raises
    ------
    InputError
        The stamps differ and ``overwrite`` is false; the message names the keys.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "stamp.json"
    >>> check_stamp(p, {"lr": 0.1})
    False
    >>> _ = write_stamp(p, {"lr": 0.1})
    >>> check_stamp(p, {"lr": 0.1})
    True
    >>> check_stamp(p, {"lr": 0.2})
    Traceback (most recent call last):
    ...
    hpacell.utils.errors.InputError: ...: outputs were made with other inputs or options (lr: 0.1 -> 0.2); ...
    >>> check_stamp(p, {"lr": 0.2}, overwrite=True)
    False
    """
    old = read_stamp(path)
    if old is None:
        return False
    new = json.loads(json.dumps(dict(stamp), sort_keys=True, default=str))
    if old == new:
        return True
    if overwrite:
        return False
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys if old.get(k) != new.get(k)]
    where = Path(folder) if folder is not None else Path(path).parent
    raise InputError(
        f"{where}: {what} were made with other inputs or options ({'; '.join(diffs)}); "
        "use --overwrite to recompute, or another output folder"
    )


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."
