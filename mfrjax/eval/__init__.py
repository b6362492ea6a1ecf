"""Evaluation. `identification` and `report` are NumPy only (no JAX): they run on
embeddings saved by any model, e.g. from mfrjax-eval."""
