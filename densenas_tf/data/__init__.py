"""Image data: the formats (Fashion-MNIST IDX files, image folders, prepared tfds
datasets, TFRecord shards), deterministic splits, in-memory and streamed
tf.data pipelines with their augmentation, sharding under a strategy.

One stack for every format. Each format's module opens its source as the same
``stream.Source`` of ``stream.Split`` objects (one reader per split, knowing
its examples by an index); ``sources`` divides it into train and test parts,
limits it, and holds it in memory as a cache of the same stream:

* ``stream``: the shared objects (``Source``, ``Split``, ``ImageData``,
  ``DataError``), class lists, decoding with errors that name the image;
* ``pipelines``: augmentation, the tf.data pipelines of arrays and of streams
  (``StreamingData``, ``SearchSplit``), channel statistics, sharding;
* ``idx``: Fashion-MNIST's IDX files;
* ``image_folder``: ``root/<class>/<image>`` folders;
* ``prepared_tfds``: tensorflow-datasets datasets prepared on disk (no download);
* ``tfrecords``: TFRecord shards, read and written;
* ``sources``: splits and the entry points (``open_data``, ``load_image_data``,
  ``open_stream``, ``search_splits``, ``SOURCE_KEYS``, ``DataError``...).

Layer 1: may import ``core``.
"""
