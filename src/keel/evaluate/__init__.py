"""Evaluation: metrics, slices, gates."""
