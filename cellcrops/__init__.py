"""hpacell: cellcrops."""
