"""hpacell: classifier."""
