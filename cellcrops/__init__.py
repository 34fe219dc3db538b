"""hpacell: cellcrops — label tables, per-cell crops and features, the cell dataset.

``CellDataset`` is imported lazily (it needs torch) so that ``import cellcrops``
stays cheap: ``from cellcrops import CellDataset`` works.
"""

from typing import Any

__all__ = ["CellDataset"]


def __getattr__(name: str) -> Any:
    if name == "CellDataset":
        from cellcrops.dataset import CellDataset

        return CellDataset
    raise AttributeError(f"module 'cellcrops' has no attribute {name!r}")
