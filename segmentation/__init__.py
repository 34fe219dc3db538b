"""hpacell: segmentation."""
