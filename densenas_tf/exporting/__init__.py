"""Serving artefacts of a trained model: SavedModel with its signatures, float32,
float16 and int8 TFLite, each export verified against the Keras model.

Layer 2: may import ``core``, ``space`` and ``data``.
"""
