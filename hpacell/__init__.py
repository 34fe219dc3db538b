"""hpacell: where a protein sits in each single cell of Human Protein Atlas images.

The pipeline's main calls, one per stage (each is what the ``hpacell`` command of
the same stage runs)::

    import hpacell

    hpacell.segment_folder("data/images", "run/seg")                       # masks
    hpacell.build_cell_dataset("data/images", "run/seg/masks", "run/cells",
                               labels="data/train.csv")                     # crops + cell table
    hpacell.train_cells("run/cells", "run/cls", hpacell.TrainConfig(model="resnet50"))
    hpacell.run_predict("run/cls/best.pt", "run/test-cells", "run/pred", hpacell.PredictConfig())
    hpacell.evaluate_files("run/pred/submission.csv", "truth/")

Stages live in :mod:`hpacell.segmentation`, :mod:`hpacell.cellcrops`,
:mod:`hpacell.classifier` and :mod:`hpacell.workflows` (imports flow that way),
shared plumbing in :mod:`hpacell.utils`. Names are imported on first use, so
``import hpacell`` is cheap.
"""

from importlib.metadata import PackageNotFoundError, version

from hpacell.utils.lazy import lazy_exports

try:
    __version__ = version("hpacell")
except PackageNotFoundError:  # not installed (a source tree on sys.path)
    __version__ = "0+unknown"

_EXPORTS = {
    "segment_folder": "hpacell.segmentation.batch",
    "read_image_set": "hpacell.segmentation.io",
    "build_cell_dataset": "hpacell.cellcrops.shards",
    "CropOptions": "hpacell.cellcrops.shards",
    "CellDataset": "hpacell.cellcrops.dataset",
    "make_synth_dataset": "hpacell.cellcrops.synth",
    "TrainConfig": "hpacell.classifier.training.config",
    "train_cells": "hpacell.classifier.training.train",
    "create_model": "hpacell.classifier.model",
    "load_checkpoint": "hpacell.classifier.model",
    "PredictConfig": "hpacell.classifier.scoring.predict",
    "run_predict": "hpacell.classifier.scoring.predict",
    "evaluate_files": "hpacell.classifier.scoring.evaluate",
    "HpacellError": "hpacell.utils.errors",
}
__all__ = sorted([*_EXPORTS, "__version__"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
