"""hpacell: workflows."""
