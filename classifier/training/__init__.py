"""Training the cell classifier: config, data and transforms, samplers, split, losses, loop, LR finder."""

from hpacell.utils.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": ".config",
    "TrainData": ".data",
    "TrainTransform": ".data",
    "build_cell_data": ".data",
    "eval_transform": ".data",
    "image_split": ".split",
    "CellLoss": ".losses",
    "fit": ".train",
    "train_cells": ".train",
    "lr_find": ".lr_finder",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
