"""Scoring: cell scores and image labels, the Kaggle 2021 submission, RLE masks, evaluation, reports."""

from hpacell.utils.lazy import lazy_exports

_EXPORTS = {
    "PredictConfig": ".predict",
    "run_predict": ".predict",
    "score_cells": ".predict",
    "aggregate": ".predict",
    "label_images": ".predict",
    "build_submission": ".build_submission",
    "prediction_string": ".submission",
    "read_submission": ".submission",
    "write_submission": ".submission",
    "SubmissionError": ".submission",
    "encode_cell": ".rle",
    "decode_mask": ".rle",
    "evaluate": ".evaluate",
    "evaluate_files": ".evaluate",
    "read_truth": ".evaluate",
    "TruthError": ".evaluate",
    "make_report": ".report",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
