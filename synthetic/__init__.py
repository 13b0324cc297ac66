"""Synthetic data for the demo, the tests and the benchmarks (invented women, no real data)."""
