"""Files that are never half written: temp name in the same folder, then a rename.

Every stage writes its outputs through these helpers, so a killed run leaves at
most a hidden ``.<name>.*.tmp`` file (removed by :func:`clean_stale_temps` on the
next run), never a truncated output.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["atomic_file", "atomic_path", "atomic_write_bytes", "clean_stale_temps", "write_json"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename.

    A process killed mid-write leaves at most a ``.tmp`` file, never a half
    ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_path(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(tmp, final)`` paths for a writer that needs a file name (e.g. Parquet).

    Write to ``tmp`` then call ``os.replace(tmp, final)``. The temp name keeps
    the extension so libraries that dispatch on it still work.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp{final.suffix}")
    return tmp, final


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager: a temp path beside ``path``, renamed to ``path`` when the block succeeds.

    On an exception the temp file is removed and ``path`` is untouched. The
    temp name keeps the extension, for writers that dispatch on it.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "table.csv"
    >>> with atomic_file(target) as tmp:
    ...     _ = tmp.write_text("a,b\\n")
    >>> target.read_text()
    'a,b\\n'
    """
    tmp, final = atomic_path(path)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def clean_stale_temps(folder: str | os.PathLike, patterns: Iterable[str] = (".*.tmp", ".*.tmp.*")) -> int:
    """Remove temp files left by killed runs in ``folder``; returns how many."""
    n = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for pat in patterns:
        for p in folder.glob(pat):
            p.unlink(missing_ok=True)
            n += 1
    return n


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, trailing newline), atomically.

    Examples
    --------
    >>> import tempfile
    >>> p = write_json(Path(tempfile.mkdtemp()) / "a.json", {"x": 1}, indent=None)
    >>> p.read_text()
    '{"x": 1}\\n'
    """
    return atomic_write_bytes(path, (json.dumps(obj, indent=indent) + "\n").encode())


def wait_until(ready: Callable[[], bool], what: str, timeout: float | None = None, poll: float = 2.0) -> bool:
    """Block until ``ready()`` holds (another process's output, e.g. rank 0's file); logs every minute.

    Returns ``False`` when ``timeout`` seconds passed first (``None``: wait for good).

    Examples
    --------
    >>> wait_until(lambda: True, "nothing")
    True
    >>> wait_until(lambda: False, "never", timeout=0.05, poll=0.01)
    False
    """
    t0 = last = time.monotonic()
    while not ready():
        now = time.monotonic()
        if timeout is not None and now - t0 > timeout:
            return False
        if now - last > 60:
            log.info("waiting %.0f s for %s", now - t0, what)
            last = now
        time.sleep(poll)
    return True
