"""Which torch device and how many CPUs a process may use; the one place that reads the launcher's env.

Works the same alone, under ``torchrun`` and inside a SLURM allocation, whichever way the GPUs are
handed out:

* ``srun --gpus-per-task 1``: each task sees one GPU (``CUDA_VISIBLE_DEVICES`` is bound per task), so
  every rank uses ``cuda:0``;
* ``--gpus-per-node N`` (or ``torchrun --nproc_per_node N`` on a whole node): every rank sees all N
  GPUs and takes the one of its local rank (``LOCAL_RANK``, else ``SLURM_LOCALID``).

In general rank ``r`` on a node with ``n`` visible GPUs takes ``cuda:(r mod n)``; ranks that must share
a GPU (``r >= n``) get a warning. torch is imported inside the functions, so importing this module
stays cheap.

Examples
--------
>>> local_rank({"SLURM_LOCALID": "3"})
3
>>> cpus_per_process({"SLURM_CPUS_PER_TASK": "6", "LOCAL_WORLD_SIZE": "2"})
3
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hpacell.utils.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["cpus_per_process", "default_workers", "local_rank", "resolve_device"]

log = logging.getLogger(__name__)


def _int(env: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def local_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank on its node: ``LOCAL_RANK`` (torchrun), else ``SLURM_LOCALID`` (srun), else 0."""
    env = os.environ if env is None else env
    found = _int(env, "LOCAL_RANK", "SLURM_LOCALID")
    return 0 if found is None else found


def cpus_per_process(env: Mapping[str, str] | None = None) -> int:
    """CPUs this process may use: the SLURM task's share, else the CPUs this process is allowed to run on.

    ``SLURM_CPUS_PER_TASK`` (set by ``--cpus-per-task``) is split between the ``LOCAL_WORLD_SIZE``
    processes that ``torchrun`` starts inside one task; at least 1.
    """
    env = os.environ if env is None else env
    cpus = _int(env, "SLURM_CPUS_PER_TASK")
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cpus)
    return max(1, cpus // max(1, _int(env, "LOCAL_WORLD_SIZE") or 1))


def default_workers(limit: int = 4, env: Mapping[str, str] | None = None) -> int:
    """DataLoader workers when none are configured: ``min(limit, cpus_per_process())``."""
    return min(limit, cpus_per_process(env))


def resolve_device(
    name: str = "auto", rank: int | None = None, env: Mapping[str, str] | None = None
) -> torch.device:
    """The torch device for ``name``: ``auto`` (CUDA when a GPU is visible, else CPU), ``cpu``, ``cuda[:N]``.

    ``cuda`` without an index picks this process's GPU: ``cuda:(rank mod visible GPUs)`` with ``rank``
    the local rank (default :func:`local_rank` of ``env``). ``cuda`` or ``cuda:N`` that no visible GPU
    can serve raises :class:`~hpacell.utils.errors.InputError`.
    """
    import torch

    kind, _, index = str(name).partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index and (kind != "cuda" or not index.isdigit())):
        raise InputError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")
    if kind == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if count == 0:
        if kind == "auto":
            return torch.device("cpu")
        raise InputError(f"device={name} requested but no CUDA GPU is available")
    if index:
        if int(index) >= count:
            raise InputError(f"device {name!r}: only {count} CUDA GPU(s) visible (cuda:0..cuda:{count - 1})")
        return torch.device("cuda", int(index))
    r = local_rank(env) if rank is None else rank
    if r >= count > 1:
        log.warning("local rank %d shares one of the %d visible GPUs with another rank", r, count)
    return torch.device("cuda", r % count)
