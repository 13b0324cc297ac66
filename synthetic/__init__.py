"""Synthetic data made on the spot (no downloads): mammograms, PHI planting, lesions for the demo
model. Used by the demo, the tests and the benchmarks; never by the clinical path."""
