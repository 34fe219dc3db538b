"""Output folders of commands that torchrun/srun start once per rank."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hpacell.utils.errors import InputError


def claim_for_launch(folder: str | os.PathLike, command: str, timeout: float = 600.0, **kw: Any) -> Path:
    """:func:`~hpacell.utils.outputs.claim_folder` by rank 0 only; the other ranks wait for its marker.

    Ranks claiming one folder at once would race: a rank that looks while rank 0 is writing the
    marker sees a non-empty, unmarked folder and refuses it. One process (no launch) claims itself.
    """
    from hpacell.classifier.training.train import launch_info
    from hpacell.utils.files import wait_until
    from hpacell.utils.outputs import claim_folder, folder_owner

    if launch_info().is_main:
        return claim_folder(folder, command, **kw)
    folder = Path(folder)
    if not wait_until(
        lambda: folder.is_dir() and folder_owner(folder) == command, "rank 0's claim", timeout, 0.2
    ):
        raise InputError(f"{folder}: rank 0 did not claim it for 'hpacell {command}' in {timeout:.0f} s")
    return folder
