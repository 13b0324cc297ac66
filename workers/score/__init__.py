"""Triage scoring: model cards, mammography preprocessing, model loading, inference, training.

Import rule: ``card``, ``preprocess`` and ``aggregate`` import neither torch nor MONAI (the API and
the web UI load them); ``models``, ``infer``, ``train`` and ``ddp`` do.
The synthetic demo model lives in ``synthetic/demo_model.py``: workers never import synthetic data.
"""
