"""Image data: the formats (Fashion-MNIST IDX files, image folders, prepared tfds
datasets, TFRecord shards), deterministic splits, in-memory and streamed
tf.data pipelines with their augmentation, sharding under a strategy.

Layer 1: may import ``core``.
"""
