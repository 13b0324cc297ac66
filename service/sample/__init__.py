"""Synthetic data for tests, demos and benchmarks.

synthetic.py makes mammograms; phi.py plants PHI in every hard-case location.
"""
