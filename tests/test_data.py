"""Fashion-MNIST from Debian's IDX files: shapes, class counts, header checks, splits."""

import gzip

import numpy as np
import pytest

from densenas_tf.data import (
    DataError,
    load_fashion_mnist,
    read_idx_images,
    read_idx_labels,
    split_indices,
)


def test_test_split_has_a_thousand_images_per_class():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10


def test_corrupt_headers_are_rejected(tmp_path):
    bad_magic = tmp_path / "labels"
    bad_magic.write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 12)
    with pytest.raises(DataError, match="magic number 2051, expected 2049"):
        read_idx_labels(bad_magic)
    truncated = tmp_path / "images.gz"
    with gzip.open(truncated, "wb") as f:
        f.write(b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x1c\x00\x00\x00\x1c" + b"\x00" * 100)
    with pytest.raises(DataError, match="100 data bytes for 2x28x28 images"):
        read_idx_images(truncated)


def test_missing_data_directory_says_how_to_fix_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", tmp_path / "nowhere")


def test_splits_are_deterministic_and_disjoint():
    a1, b1 = split_indices(1000, 0.2, seed=7)
    a2, b2 = split_indices(1000, 0.2, seed=7)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
    assert len(b1) == 200 and not set(a1) & set(b1) and len(a1) + len(b1) == 1000
    assert not np.array_equal(split_indices(1000, 0.2, seed=8)[1], b1)
