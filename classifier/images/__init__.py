"""The image-level classifier (``hpacell train-images`` / ``predict-images``) on the cell model's loop."""

from hpacell.utils.lazy import lazy_exports

_EXPORTS = {
    "ImageTrainConfig": ".data",
    "ImageDataset": ".data",
    "build_image_data": ".data",
    "train_images": ".train",
    "PredictImagesConfig": ".predict",
    "predict_images": ".predict",
    "validation_report": ".predict",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
