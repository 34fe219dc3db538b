"""Run one function over many items in worker processes, recording failures.

Shared by the batch stages (``segment``, ``crop``): a failing item never stops
the run, it comes back as a :class:`JobResult` with ``ok=False`` and the error
text, so the caller can record it and go on.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """Outcome of one item: its value or its error, and the seconds it took."""

    item: Any
    value: Any = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def _call(fn: Callable[[Any], Any], item: Any) -> JobResult:
    t0 = time.perf_counter()
    try:
        value = fn(item)
    except Exception as e:  # noqa: BLE001 - recorded, the batch goes on
        log.debug("item %r failed:\n%s", item, traceback.format_exc())
        return JobResult(item, error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)
    return JobResult(item, value=value, seconds=time.perf_counter() - t0)


def _init_worker() -> None:
    """Each worker process computes on one thread.

    A forked worker inherits torch's OpenMP pool in the state it had in the parent; GNU OpenMP cannot
    run a parallel region in such a child (it hangs for ever), so a worker of a process that already
    ran torch on several threads must stay on one. One thread per worker is also what a pool of
    ``workers`` processes on ``workers`` cores wants.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def run_jobs(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int = 1,
    desc: str | None = None,
    total: int | None = None,
    ordered: bool = False,
) -> Iterator[JobResult]:
    """Apply ``fn`` to each item; yield a :class:`JobResult` per item as it finishes.

    With ``ordered=True`` results come in input order whatever the number of
    workers (finished results wait for slower earlier ones), so outputs that
    depend on the order, such as crop shards, are reproducible.

    Parameters
    ----------
    fn : callable
        A picklable (module-level) function of one argument.
    items : iterable
        Work items; consumed lazily, at most ``2 * workers`` in flight.
    workers : int
        ``<= 1`` runs in this process (no pickling, easy to debug).
    desc : str, optional
        Progress bar label (tqdm, hidden when not a terminal).
    total : int, optional
        Number of items for the progress bar; default ``len(items)`` when it has one (a
        generator has none: pass it).
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]  # sized before iter(), which has no length
    items = iter(items)
    bar = tqdm(total=total, desc=desc, disable=None, unit="img")
    try:
        if workers <= 1:
            for item in items:
                res = _call(fn, item)
                bar.update()
                yield res
            return
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            pending: dict = {}  # future -> input position
            finished: dict[int, JobResult] = {}
            next_out = 0

            def drain(futures) -> Iterator[JobResult]:
                nonlocal next_out
                for fut in futures:
                    bar.update()
                    if not ordered:
                        yield fut.result()
                    else:
                        finished[pending[fut]] = fut.result()
                    del pending[fut]
                while next_out in finished:
                    yield finished.pop(next_out)
                    next_out += 1

            for position, item in enumerate(items):
                pending[pool.submit(_call, fn, item)] = position
                if len(pending) >= 2 * workers:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    yield from drain(done)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                yield from drain(done)
    finally:
        bar.close()
