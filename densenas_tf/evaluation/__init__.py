"""Evaluating an exported model on a dataset: accuracy (top-1, top-5, per
class, the confusion matrix) of a SavedModel or a .tflite file, and the
latency of a .tflite file.

Layer 4: may import ``core``, ``space``, ``data``, ``nn``, ``exporting`` and
``latency``.
"""
