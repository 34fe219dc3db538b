"""The cell classifier: model, training, scoring, and the optional image-level model.

* :mod:`.model`, :mod:`.metrics`: the timm-backed 4-channel model and the metrics every part shares;
* :mod:`.training`: data, samplers, losses and the training loop (``hpacell train-cells``);
* :mod:`.scoring`: predict, the Kaggle submission, RLE, evaluate and report (``predict``, ``evaluate``);
* :mod:`.images`: the whole-image model (``train-images``, ``predict-images``).
"""

from hpacell.utils.lazy import lazy_exports

_EXPORTS = {
    "CellClassifier": ".model",
    "create_model": ".model",
    "load_checkpoint": ".model",
    "TrainConfig": ".training.config",
    "build_cell_data": ".training.data",
    "fit": ".training.train",
    "train_cells": ".training.train",
    "PredictConfig": ".scoring.predict",
    "run_predict": ".scoring.predict",
    "build_submission": ".scoring.build_submission",
    "read_submission": ".scoring.submission",
    "write_submission": ".scoring.submission",
    "evaluate": ".scoring.evaluate",
    "evaluate_files": ".scoring.evaluate",
    "read_truth": ".scoring.evaluate",
    "ImageTrainConfig": ".images.data",
    "train_images": ".images.train",
    "predict_images": ".images.predict",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
