"""Image data, offline: Fashion-MNIST IDX files, tfds, image folders, stats, augmentation,
tf.data pipelines. All on real Fashion-MNIST images (Debian's dataset-fashion-mnist)."""

import gzip

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from densenas_tf.data.idx import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    load_fashion_mnist,
    read_idx_images,
    read_idx_labels,
)
from densenas_tf.data.pipelines import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    augment_images,
    channel_stats,
    eval_pipeline,
    train_pipeline,
)
from densenas_tf.data.sources import (
    DataError,
    ImageData,
    load_image_data,
    split_indices,
    split_per_class,
)

tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def fashion() -> ImageData:
    return load_image_data("fashion_mnist")


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


REINSTALL = (
    "reinstall Debian's package with 'apt-get install --reinstall dataset-fashion-mnist', "
    "or replace the file with an intact copy"
)


def _test_split_dir(tmp_path, labels_name: str, labels_bytes: bytes):
    """A data directory with the real test images and the given test-labels file."""
    (tmp_path / "t10k-images-idx3-ubyte.gz").symlink_to(
        FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    )
    (tmp_path / labels_name).write_bytes(labels_bytes)
    return tmp_path / labels_name


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        ("truncated", "Compressed file ended before the end-of-stream marker was reached"),
        ("corrupted", "Error -3 while decompressing data: invalid distance too far back"),
        ("not gzipped", "Not a gzipped file (b'\\x00\\x00')"),
    ],
)
def test_damaged_gzip_file_names_the_file_and_the_fix(tmp_path, damage, cause):
    packed = (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes()
    damaged = {
        "truncated": packed[: len(packed) // 2],
        "corrupted": packed[:100] + bytes(b ^ 0xFF for b in packed[100:200]) + packed[200:],
        "not gzipped": gzip.decompress(packed),
    }[damage]
    path = _test_split_dir(tmp_path, "t10k-labels-idx1-ubyte.gz", damaged)
    with pytest.raises(DataError) as err:
        load_fashion_mnist("test", tmp_path)
    assert str(err.value) == f"{path}: truncated or damaged gzip file ({cause}); {REINSTALL}"


def test_truncated_or_overlong_idx_file_names_the_file_and_the_fix(tmp_path):
    labels = gzip.decompress((FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert len(labels) == 8 + 10000
    path = _test_split_dir(tmp_path, "t10k-labels-idx1-ubyte", labels[:9008])
    with pytest.raises(DataError) as err:
        load_fashion_mnist("test", tmp_path)
    assert str(err.value) == (
        f"{path}: 9000 data bytes for 10000 labels, which need 10000; "
        f"the file is truncated: {REINSTALL}"
    )
    path.write_bytes(labels + b"\x00")
    with pytest.raises(DataError) as err:
        load_fashion_mnist("test", tmp_path)
    assert str(err.value) == (
        f"{path}: 10001 data bytes for 10000 labels, which need 10000; "
        f"the file is damaged (too long): {REINSTALL}"
    )
    path.write_bytes(labels[:5])
    with pytest.raises(DataError) as err:
        load_fashion_mnist("test", tmp_path)
    assert str(err.value) == (
        f"{path}: truncated IDX header (5 of 8 bytes); the file is damaged: {REINSTALL}"
    )


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


# --- load_image_data: Fashion-MNIST ---------------------------------------------------


def test_fashion_mnist_image_data(fashion):
    assert fashion.name == "fashion_mnist"
    assert fashion.train_images.shape == (60000, 28, 28, 1)
    assert fashion.test_images.shape == (10000, 28, 28, 1)
    assert fashion.train_images.dtype == fashion.test_images.dtype == np.uint8
    assert fashion.train_labels.dtype == fashion.test_labels.dtype == np.int32
    assert fashion.input_shape == (28, 28, 1)
    assert fashion.num_classes == 10 and fashion.class_names == FASHION_MNIST_CLASSES
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    assert np.bincount(fashion.test_labels).tolist() == [1000] * 10
    assert np.bincount(fashion.train_labels).tolist() == [6000] * 10


def test_limits_are_a_seeded_choice(fashion):
    a = load_image_data(train_limit=300, test_limit=100, seed=3)
    b = load_image_data(train_limit=300, test_limit=100, seed=3)
    c = load_image_data(train_limit=300, test_limit=100, seed=4)
    assert a.train_images.shape == (300, 28, 28, 1) and a.test_images.shape == (100, 28, 28, 1)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    assert not np.array_equal(a.train_images, c.train_images)
    assert not np.array_equal(a.test_images, c.test_images)
    # A subset of the full data, images still paired with their labels.
    full = {img.tobytes(): label for img, label in zip(fashion.test_images, fashion.test_labels)}
    assert [full[img.tobytes()] for img in a.test_images] == a.test_labels.tolist()
    assert len(set(np.unique(a.train_labels))) > 5  # a shuffle, not the first 300 images


def test_fashion_mnist_resized_and_bad_arguments():
    data = load_image_data(image_size=14, train_limit=20, test_limit=10)
    assert data.input_shape == (14, 14, 1) and data.test_images.dtype == np.uint8
    with pytest.raises(DataError, match=r"unknown dataset 'cifar'.*\['fashion_mnist'\]"):
        load_image_data("cifar")
    with pytest.raises(DataError, match="pass only one data source"):
        load_image_data(tfds_name="mnist", image_folder="/tmp")
    with pytest.raises(DataError, match="train_limit must be a positive integer"):
        load_image_data(train_limit=0)
    with pytest.raises(DataError, match="image_size must be a positive integer"):
        load_image_data(image_size=-3)


@pytest.mark.parametrize("limit", [0, -1, -60000])
@pytest.mark.parametrize("field", ["train_limit", "test_limit"])
def test_limits_of_zero_or_below_are_refused(field, limit):
    with pytest.raises(DataError) as err:
        load_image_data(**{field: limit})
    assert str(err.value) == (
        f"{field} must be a positive integer, got {limit}; pass a number of images, or None for all"
    )


def test_image_data_checks_its_arrays():
    images = np.zeros((4, 8, 8, 1), np.uint8)
    labels = np.array([0, 1, 2, 1], np.int32)
    data = ImageData("toy", images, labels, images[:2], labels[:2], ("a", "b", "c"))
    assert data.num_classes == 3 and data.input_shape == (8, 8, 1)
    with pytest.raises(DataError, match=r"labels span 0..2, outside 0..1"):
        ImageData("toy", images, labels, images, labels, ("a", "b"))
    with pytest.raises(DataError, match="images must be a uint8"):
        ImageData("toy", images.astype(np.float32), labels, images, labels, ("a", "b", "c"))
    with pytest.raises(DataError, match="4 images but 2 labels"):
        ImageData("toy", images, labels[:2], images, labels, ("a", "b", "c"))


# --- load_image_data: tensorflow-datasets ---------------------------------------------


def _write_tfds_metadata(data_dir, name, splits):
    """dataset_info.json + features.json of ``name`` in data_dir, as `tfds build` leaves them."""
    from tensorflow_datasets.core import splits as splits_lib

    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.info.set_splits(
        splits_lib.SplitDict(
            [splits_lib.SplitInfo(name=s, shard_lengths=[n], num_bytes=0) for s, n in splits]
        )
    )
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)


def test_tfds_mock_mnist(tmp_path, no_network):
    _write_tfds_metadata(tmp_path, "mnist", [("train", 60000), ("test", 10000)])
    with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path)):
        data = load_image_data(tfds_name="mnist", tfds_data_dir=tmp_path)
    assert data.name == "mnist"
    assert data.train_images.shape == data.test_images.shape == (12, 28, 28, 1)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int32
    assert data.num_classes == 10 and data.class_names == tuple(str(i) for i in range(10))
    assert 0 <= data.train_labels.min() and data.train_labels.max() < 10
    assert data.train_images.std() > 0  # random mock pixels, not blank


def test_tfds_not_prepared_says_how_to_build_it(tmp_path, no_network):
    with pytest.raises(DataError, match=r"not prepared in .*tfds build mnist --data_dir"):
        load_image_data(tfds_name="mnist", tfds_data_dir=tmp_path)
    assert not any(tmp_path.rglob("*.tfrecord*"))  # nothing downloaded or generated


def test_tfds_unknown_name(tmp_path, no_network):
    with pytest.raises(DataError, match="unknown tensorflow-datasets name 'no_such_dataset_xyz'"):
        load_image_data(tfds_name="no_such_dataset_xyz", tfds_data_dir=tmp_path)


_ORIGINALS = {}


class TinyFashionTrainOnly(tfds.core.GeneratorBasedBuilder):
    """20 real Fashion-MNIST images, a train split only; every 5th cropped to 20x24."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 1)),
                    "label": tfds.features.ClassLabel(names=list(FASHION_MNIST_CLASSES)),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        images, labels = _ORIGINALS["images"], _ORIGINALS["labels"]
        for i in range(20):
            image = images[i] if i % 5 else images[i, :20, :24]
            yield i, {"image": image, "label": int(labels[i])}


def test_tfds_prepared_dataset_without_test_split(tmp_path, fashion, no_network):
    _ORIGINALS.update(images=fashion.test_images[:20], labels=fashion.test_labels[:20])
    builder = tfds.builder("tiny_fashion_train_only", data_dir=str(tmp_path))
    builder.download_and_prepare()
    with pytest.raises(DataError, match=r"is 20x24 pixels but .* is 28x28; pass image_size"):
        load_image_data(tfds_name="tiny_fashion_train_only", tfds_data_dir=tmp_path)
    data = load_image_data(
        tfds_name="tiny_fashion_train_only",
        tfds_data_dir=tmp_path,
        image_size=16,
        test_fraction=0.25,
    )
    # No test split: a seeded quarter of each class is held out, round(n / 4) of a
    # class of n (of these 20 images: one of the four of class 1, one of class 4).
    held = [round(n * 0.25) for n in np.bincount(_ORIGINALS["labels"], minlength=10)]
    assert sum(held) == 2 and np.bincount(data.test_labels, minlength=10).tolist() == held
    assert data.train_images.shape == (18, 16, 16, 1) and data.test_images.shape == (2, 16, 16, 1)
    assert data.class_names == FASHION_MNIST_CLASSES
    # The split divides the 20 examples: together they hold the original labels.
    assert sorted(np.concatenate([data.train_labels, data.test_labels])) == sorted(
        _ORIGINALS["labels"]
    )


class TinyNumberedLabels(tfds.core.GeneratorBasedBuilder):
    """6 real Fashion-MNIST images whose labels are plain integers, no class names."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.Tensor(shape=(), dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(6):
            yield i, {"image": _ORIGINALS["images"][i], "label": i % 3}


def test_tfds_labels_without_names_are_numbered(tmp_path, fashion, no_network):
    from densenas_tf.data.sources import open_tfds

    _ORIGINALS.update(images=fashion.test_images[:6], labels=fashion.test_labels[:6])
    tfds.builder("tiny_numbered_labels", data_dir=str(tmp_path)).download_and_prepare()
    data = load_image_data(
        tfds_name="tiny_numbered_labels", tfds_data_dir=tmp_path, test_fraction=0.5
    )
    assert data.class_names == ("0", "1", "2")
    assert np.bincount(data.test_labels).tolist() == [1, 1, 1]  # half of each class's two
    stream = open_tfds("tiny_numbered_labels", tmp_path, test_fraction=0.5, cache_dir=tmp_path)
    assert stream.class_names == data.class_names and stream.num_test == 3
    pixels = {img.tobytes(): i % 3 for i, img in enumerate(fashion.test_images[:6])}
    held = np.concatenate([data.train_images, data.test_images])
    labels = np.concatenate([data.train_labels, data.test_labels])
    assert {img.tobytes(): int(label) for img, label in zip(held, labels)} == pixels


# --- load_image_data: image folder ----------------------------------------------------


def _write_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(image).numpy())


@pytest.fixture
def folder(tmp_path, fashion):
    """3 classes x 4 real Fashion-MNIST images as PNG; the expected arrays in file order."""
    root = tmp_path / "images"
    expected_images, expected_labels = [], []
    for label, class_name in enumerate(["bag", "coat", "trouser"]):
        source = fashion.test_images[fashion.test_labels == [8, 4, 1][label]][:4]
        for i, image in enumerate(source):
            _write_png(root / class_name / f"{i:02d}.png", image)
            expected_images.append(image)
            expected_labels.append(label)
    return root, np.stack(expected_images), np.array(expected_labels)


def test_image_folder_reads_pixels_exactly(folder):
    root, images, labels = folder
    data = load_image_data(image_folder=root, test_fraction=0.25, seed=5)
    train, test = split_per_class(labels, 0.25, seed=5)  # one of each class's four held out
    assert data.name == "images" and data.class_names == ("bag", "coat", "trouser")
    assert data.train_images.shape == (9, 28, 28, 1) and data.test_images.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(data.train_images, images[train])
    np.testing.assert_array_equal(data.test_images, images[test])
    np.testing.assert_array_equal(data.train_labels, labels[train])
    np.testing.assert_array_equal(data.test_labels, labels[test])


def test_image_folder_converts_rgb_to_the_first_images_gray(folder):
    root, images, labels = folder
    rgb = np.repeat(images[5], 3, axis=-1)  # coat/01.png as an RGB image
    (root / "coat" / "01.png").unlink()
    _write_png(root / "coat" / "01.png", rgb)
    data = load_image_data(image_folder=root, test_fraction=0.25, seed=5)
    train, _ = split_per_class(labels, 0.25, seed=5)
    assert data.input_shape == (28, 28, 1)
    np.testing.assert_array_equal(data.train_images, images[train])


def test_image_folder_sizes(folder):
    root, images, _ = folder
    _write_png(root / "coat" / "09.png", images[4][:20, :20])
    with pytest.raises(DataError, match=r"coat/09.png is 20x20 pixels but .*bag/00.png is 28x28"):
        load_image_data(image_folder=root)
    data = load_image_data(image_folder=root, image_size=16, test_fraction=0.25)
    assert data.train_images.shape == (10, 16, 16, 1) and data.test_images.shape == (3, 16, 16, 1)
    assert data.train_images.dtype == np.uint8


def test_image_folder_errors_name_the_path(folder, tmp_path):
    root, _, _ = folder
    with pytest.raises(DataError, match=f"{tmp_path / 'nowhere'}: no such image folder"):
        load_image_data(image_folder=tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'flat'}: no class sub-folders"):
        load_image_data(image_folder=tmp_path / "flat")
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=f"{root / 'empty'}: class folder holds no images"):
        load_image_data(image_folder=root)


def test_data_of_fewer_than_two_classes_is_refused_naming_the_source(folder, tmp_path):
    from densenas_tf.data.sources import open_image_folder, open_tfrecords, with_test_part
    from densenas_tf.data.stream import Source, Split, check_class_count
    from densenas_tf.data.tfrecords import write_tfrecords

    root, images, _ = folder
    one = tmp_path / "one_class"
    for i in range(4):
        _write_png(one / "shirt" / f"{i}.png", images[i])
    expected = rf"the image folder {one} holds 1 class \('shirt'\); .*at least two classes"
    with pytest.raises(DataError, match=expected):
        load_image_data(image_folder=one)
    with pytest.raises(DataError, match=expected):
        open_image_folder(one, cache_dir=tmp_path)
    # A class list keeping one class of three.
    only_bag = tmp_path / "bag.txt"
    only_bag.write_text("bag\n")
    with pytest.raises(DataError, match=rf"image folder {root} holds 1 class \('bag'\)"):
        open_image_folder(root, class_list=only_bag, cache_dir=tmp_path)
    # TFRecords written from the one-class folder.
    shards = tmp_path / "records"
    write_tfrecords(shards, "train", image_folder=one, log=lambda line: None)
    with pytest.raises(DataError, match=rf"TFRecords in {shards} holds 1 class.*two classes"):
        open_tfrecords(shards, image_size=28, cache_dir=tmp_path)
    # Two names, but the labels use one of them.
    reader = open_image_folder(root, cache_dir=tmp_path).train.reader
    reader.labels = np.zeros_like(reader.labels)
    source = Source(
        "two", ("a", "b"), (28, 28, 1), {"train": Split.whole(reader)}, None, {}, tmp_path
    )
    with pytest.raises(DataError, match=r"'two' holds images of one class only \('a' of 2"):
        with_test_part(source, 0.25, 0)
    with pytest.raises(DataError, match="holds 0 class;"):
        check_class_count((), "the data 'none'")
    # In memory too.
    with pytest.raises(DataError, match=r"the data 'toy' holds 1 class \('a'\)"):
        ImageData(
            "toy",
            images,
            np.zeros(len(images), np.int32),
            images,
            np.zeros(len(images), np.int32),
            ("a",),
        )


def test_tfds_of_one_class_is_refused(tmp_path, fashion, no_network):
    _ORIGINALS.update(images=fashion.test_images[:6], labels=np.zeros(6, np.int64))
    tfds.builder("tiny_one_label", data_dir=str(tmp_path)).download_and_prepare()
    with pytest.raises(DataError, match=r"tfds dataset tiny_one_label.* holds 1 class \('0'\)"):
        load_image_data(tfds_name="tiny_one_label", tfds_data_dir=tmp_path, test_fraction=0.5)


class TinyOneLabel(TinyNumberedLabels):
    """6 real Fashion-MNIST images, all of label 0 (no class names)."""

    def _generate_examples(self):
        for i in range(6):
            yield i, {"image": _ORIGINALS["images"][i], "label": 0}


# --- channel_stats --------------------------------------------------------------------


def test_channel_stats_of_fashion_mnist(fashion):
    mean, std = channel_stats(fashion.train_images)
    assert mean.shape == std.shape == (1,) and mean.dtype == std.dtype == np.float32
    assert abs(mean[0] - FASHION_MNIST_MEAN * 255) < 0.5
    assert abs(std[0] - FASHION_MNIST_STD * 255) < 0.5
    gray_mean, gray_std = channel_stats(fashion.test_images[:100])
    rgb_mean, rgb_std = channel_stats(np.repeat(fashion.test_images[:100], 3, axis=-1))
    assert rgb_mean.shape == (3,)
    np.testing.assert_allclose(rgb_mean, np.repeat(gray_mean, 3), rtol=1e-6)
    np.testing.assert_allclose(rgb_std, np.repeat(gray_std, 3), rtol=1e-6)
    np.testing.assert_allclose(gray_mean, fashion.test_images[:100].mean(), rtol=1e-6)
    np.testing.assert_allclose(gray_std, fashion.test_images[:100].std(), rtol=1e-5)
    with pytest.raises(DataError, match="uint8 numpy array"):
        channel_stats(fashion.test_images[:10].astype(np.float32))


# --- augmentation ---------------------------------------------------------------------


def _shifted_copies(image, pad):
    """Every crop of the zero-padded image back to its size, flipped or not."""
    h, w, _ = image.shape
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)])
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy : dy + h, dx : dx + w]
            yield crop
            yield crop[:, ::-1]


def test_pad_and_crop_of_small_images(fashion):
    images = fashion.test_images[:8].astype(np.float32)
    out = augment_images(images, [1, 2]).numpy()
    assert out.shape == images.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, augment_images(images, [1, 2]).numpy())
    assert not np.array_equal(out, augment_images(images, [1, 3]).numpy())
    # Each output is the input padded by max(2, 28 // 8) = 3, cropped and maybe flipped.
    for source, result in zip(images, out):
        assert any(np.array_equal(result, c) for c in _shifted_copies(source, 3))
    assert sum(not np.array_equal(s, r) for s, r in zip(images, out)) >= 4
    single = augment_images(images[0], tf.constant([7, 7])).numpy()
    assert single.shape == (28, 28, 1)
    assert any(np.array_equal(single, c) for c in _shifted_copies(images[0], 3))


def test_random_resized_crop_of_large_images(fashion):
    crops = tf.image.resize(fashion.test_images[:4, 4:24, 4:24].astype(np.float32), (96, 96))
    out = augment_images(crops, [0, 1]).numpy()
    assert out.shape == (4, 96, 96, 1) and out.dtype == np.float32
    np.testing.assert_array_equal(out, augment_images(crops, [0, 1]).numpy())
    assert not np.array_equal(out, augment_images(crops, [0, 2]).numpy())
    assert not np.array_equal(out, crops.numpy())
    assert out.min() >= 0 and out.max() <= 255.0 + 1e-3


# --- pipelines ------------------------------------------------------------------------


def test_train_pipeline_is_deterministic_per_seed_and_epoch(fashion):
    images, labels = fashion.test_images[:210], fashion.test_labels[:210]
    first = next(iter(train_pipeline(images, labels, 50, seed=1, epoch=0)))
    again = next(iter(train_pipeline(images, labels, 50, seed=1, epoch=0)))
    later = next(iter(train_pipeline(images, labels, 50, seed=1, epoch=1)))
    assert first[0].shape == (50, 28, 28, 1) and first[0].dtype == tf.float32
    assert first[1].dtype == tf.int32
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], later[1])
    assert not np.array_equal(first[1], labels[:50])  # shuffled


def test_train_pipeline_without_augmentation_covers_the_images_once(fashion):
    images, labels = fashion.test_images[:210], fashion.test_labels[:210]
    batches = list(train_pipeline(images, labels, 50, seed=2, augment=False))
    assert len(batches) == 4  # the last 10 images dropped
    seen = np.concatenate([x.numpy() for x, _ in batches])
    seen_labels = np.concatenate([y.numpy() for _, y in batches])
    assert seen.max() > 1.0  # pixel units, not normalised
    source = {img.tobytes(): label for img, label in zip(images, labels)}
    keys = [img.astype(np.uint8).tobytes() for img in seen]
    assert len(set(keys)) == 200 and [source[k] for k in keys] == seen_labels.tolist()
    with pytest.raises(DataError, match="batch_size 500 exceeds the 210 training images"):
        train_pipeline(images, labels, 500, seed=0)


def test_eval_pipeline_keeps_order_and_the_last_batch(fashion):
    images, labels = fashion.test_images[:210], fashion.test_labels[:210]
    batches = list(eval_pipeline(images, labels, 50))
    assert [len(y) for _, y in batches] == [50, 50, 50, 50, 10]
    assert batches[0][0].dtype == tf.float32 and batches[0][1].dtype == tf.int32
    np.testing.assert_array_equal(
        np.concatenate([x for x, _ in batches]), images.astype(np.float32)
    )
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)
