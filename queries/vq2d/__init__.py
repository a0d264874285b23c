"""Ego4D VQ2D: the official file formats and metrics, the benchmark runner, DAVIS-built episodes."""
