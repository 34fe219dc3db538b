"""The cell dataset (``hpacell crop``): label tables, per-cell crops and features, shards, synthetic data.

:func:`build_cell_dataset` writes ``.npy`` crop shards and the Parquet cell
table; :class:`CellDataset` reads them by memory map (it needs torch, imported
on first use like every name here).
"""

from hpacell.utils.lazy import lazy_exports

_EXPORTS = {
    "CellDataset": ".dataset",
    "multi_hot": ".dataset",
    "recorded_source": ".shards",
    "CropOptions": ".shards",
    "build_cell_dataset": ".shards",
    "merge_cell_datasets": ".merge",
    "crop_cells": ".crop",
    "cell_features": ".features",
    "HPA2018": ".labels",
    "HPA2021": ".labels",
    "LabelError": ".labels",
    "LabelTable": ".labels",
    "Taxonomy": ".labels",
    "get_taxonomy": ".labels",
    "read_labels": ".labels",
    "write_labels": ".labels",
    "SynthOptions": ".synth",
    "make_synth_dataset": ".synth",
    "synth_image": ".synth",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
