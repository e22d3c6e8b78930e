"""Experiments: ``python -m experiments.train`` / ``experiments.evaluate`` and their configs."""
