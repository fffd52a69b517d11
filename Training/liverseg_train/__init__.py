"""Offline training for liverseg: prepare -> train -> evaluate -> export.

Reuses the engine's networks, preprocessing, orientation, metrics and model-file format, so a trained model
sees the same inputs at inference as in training.
"""
