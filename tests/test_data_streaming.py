"""Streamed data: image folders, TFRecords and tfds read lazily; class lists, per-class
splits from the index alone; sharding across input pipelines and workers; streamed
channel statistics; the search and training reading streams; the input benchmark.

Every image is a real Fashion-MNIST test image (28x28, PNG, lossless), so a
streamed pixel can be compared with the file it came from.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import free_ports

from densenas_tf.data import image_folder, sources, tfrecords
from densenas_tf.data.idx import load_fashion_mnist
from densenas_tf.data.image_folder import FolderReader
from densenas_tf.data.pipelines import channel_stats
from densenas_tf.data.sources import (
    DataError,
    ImageData,
    SearchSplit,
    StreamingData,
    load_image_data,
    open_data,
    open_image_folder,
    open_tfds,
    open_tfrecords,
    split_per_class,
)
from densenas_tf.data.tfrecords import write_tfrecords

ROOT = Path(__file__).resolve().parent.parent
CLASSES = {"bag": 8, "coat": 4, "trouser": 1}  # folder name -> Fashion-MNIST label
PER_CLASS = 8


def _context(count: int, index: int):
    return tf.distribute.InputContext(
        num_input_pipelines=count, input_pipeline_id=index, num_replicas_in_sync=count
    )


def _key(image) -> bytes:
    return np.asarray(image, np.uint8).tobytes()


def _digest(image) -> str:
    """A short name of an image's pixels (float 0..255 or uint8)."""
    return hashlib.sha1(_key(np.round(image))).hexdigest()


@pytest.fixture
def decoded(monkeypatch):
    """The example ids an image folder's pipelines decode, one entry per decode."""
    ids = []
    decode = FolderReader.decode

    def counting(self, encoded, example_id):
        def note(i):
            ids.append(int(i))
            return i

        noted = tf.py_function(note, [example_id], tf.int64)
        with tf.control_dependencies([noted]):
            return tf.identity(decode(self, encoded, example_id))

    monkeypatch.setattr(FolderReader, "decode", counting)
    return ids


@pytest.fixture(scope="module")
def fashion():
    images, labels = load_fashion_mnist("test")
    return images, labels


@pytest.fixture(scope="module")
def folder(tmp_path_factory, fashion):
    """3 classes x 8 real images as PNG; {pixels: label} of every file."""
    images, labels = fashion
    root = tmp_path_factory.mktemp("stream") / "images"
    expected = {}
    for label, (name, fashion_label) in enumerate(CLASSES.items()):
        for i, image in enumerate(images[labels == fashion_label][:PER_CLASS]):
            path = root / name / f"{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tf.io.encode_png(image).numpy())
            expected[_key(image)] = label
    return root, expected


@pytest.fixture(scope="module")
def records(folder, tmp_path_factory):
    root, _ = folder
    out = tmp_path_factory.mktemp("records") / "shards"
    lines = []
    write_tfrecords(out, "train", image_folder=root, records_per_shard=5, log=lines.append)
    return out, lines


def _read_all(data, split, batch=5):
    """{pixels: label} of every image of a split, read unaugmented in index order."""
    seen = {}
    for x, y in data.images(split, batch, drop_remainder=False):
        for image, label in zip(np.round(x.numpy()), y.numpy()):
            key = _key(image)
            assert key not in seen  # each image once
            seen[key] = int(label)
    return seen


# --- sources ----------------------------------------------------------------------------


def test_image_folder_streams_the_files_pixels(folder, tmp_path):
    root, expected = folder
    data = open_image_folder(root, test_fraction=0.25, seed=3, cache_dir=tmp_path)
    assert data.input_shape == (28, 28, 1) and data.class_names == tuple(CLASSES)
    assert (data.num_train, data.num_test) == (18, 6)  # 2 of each class's 8 held out
    seen = {**_read_all(data, data.train), **_read_all(data, data.test)}
    assert seen == expected


def test_tfrecords_hold_the_same_examples_and_the_writer_reports_progress(records, folder):
    out, lines = records
    _, expected = folder
    description = json.loads((out / "dataset.json").read_text())
    assert [s["count"] for s in description["splits"]["train"]["shards"]] == [5, 5, 5, 5, 4]
    assert any(line.startswith("wrote 24 train records in 5 shards") for line in lines)
    data = open_tfrecords(out, image_size=28, test_fraction=0.25, seed=3)
    assert data.class_names == tuple(CLASSES) and (data.num_train, data.num_test) == (18, 6)
    assert {**_read_all(data, data.train), **_read_all(data, data.test)} == expected


def test_rewriting_a_split_leaves_the_old_one_readable_until_the_new_one_is_complete(
    folder, tmp_path, monkeypatch
):
    root, expected = folder
    out = tmp_path / "shards"
    write_tfrecords(out, "train", image_folder=root, records_per_shard=5, log=lambda line: None)
    old_files = sorted(p.name for p in out.iterdir())
    old_description = (out / "dataset.json").read_text()

    def reads_completely() -> bool:
        data = open_tfrecords(out, 28, test_fraction=0.0)
        return _read_all(data, data.train) == expected

    def rewrite():
        write_tfrecords(
            out, "train", image_folder=root, records_per_shard=3, seed=1, log=lambda line: None
        )

    # The writer fails after 7 of the 24 records: the old split is untouched.
    example, calls = tfrecords._example, itertools.count()

    def failing(*args):
        if next(calls) == 7:
            raise RuntimeError("disk gone")
        return example(*args)

    monkeypatch.setattr(tfrecords, "_example", failing)
    with pytest.raises(RuntimeError, match="disk gone"):
        rewrite()
    monkeypatch.setattr(tfrecords, "_example", example)
    assert sorted(p.name for p in out.iterdir()) == old_files  # no staging folder left
    assert (out / "dataset.json").read_text() == old_description
    assert reads_completely()
    # Every new shard written and moved in, but the switch (dataset.json's rename)
    # fails: still the old split, and the new shards are gone again.
    write_text = tfrecords.write_text_atomic

    def no_space(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tfrecords, "write_text_atomic", no_space)
    with pytest.raises(OSError, match="No space left"):
        rewrite()
    monkeypatch.setattr(tfrecords, "write_text_atomic", write_text)
    assert sorted(p.name for p in out.iterdir()) == old_files
    assert reads_completely()
    # What a killed writer leaves (a staging folder, a shard moved in but never
    # listed) does not disturb reading, and the next complete write clears it.
    (out / ".train-staging-dead").mkdir()
    (out / ".train-staging-dead" / "train-dead-00000-of-00002.tfrecord").write_bytes(b"x")
    (out / "train-dead-00001-of-00002.tfrecord").write_bytes(b"x")
    assert reads_completely()
    rewrite()
    description = json.loads((out / "dataset.json").read_text())
    shards = description["splits"]["train"]["shards"]
    assert [s["count"] for s in shards] == [3] * 8
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["dataset.json"] + [s["file"] for s in shards]
    )
    assert not set(old_files) & {s["file"] for s in shards}
    assert reads_completely()


def test_class_list_selects_and_renumbers_classes_or_names_the_missing_one(
    folder, records, tmp_path
):
    root, expected = folder
    class_list = tmp_path / "classes.txt"
    class_list.write_text("# two of the three\ntrouser\nbag\n")
    for data in (
        open_image_folder(root, class_list=class_list, test_fraction=0.25),
        open_tfrecords(records[0], 28, class_list=class_list, test_fraction=0.25),
    ):
        assert data.class_names == ("trouser", "bag") and data.num_train + data.num_test == 16
        seen = {**_read_all(data, data.train), **_read_all(data, data.test)}
        renumber = {2: 0, 0: 1}  # trouser was 2, bag 0
        assert seen == {k: renumber[v] for k, v in expected.items() if v in renumber}
    class_list.write_text("trouser\nsandal\n")
    with pytest.raises(DataError, match=r"class 'sandal' of the class list is not in .*fix"):
        open_image_folder(root, class_list=class_list)
    with pytest.raises(DataError, match=r"class 'sandal' of the class list is not in the TFRec"):
        open_tfrecords(records[0], 28, class_list=class_list)


def test_clear_errors_for_bad_sources(folder, tmp_path):
    root, _ = folder
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        open_image_folder(tmp_path / "flat")
    (tmp_path / "flat" / "empty").mkdir()
    (tmp_path / "flat" / "full").mkdir()
    (tmp_path / "flat" / "full" / "a.png").write_bytes((root / "bag" / "00.png").read_bytes())
    with pytest.raises(DataError, match=r"flat/empty: class folder holds no images"):
        open_image_folder(tmp_path / "flat")
    # A file named like an image that is none: refused when it is the one probed for the
    # size, else it stops the pipeline; either way the error names it.
    (tmp_path / "flat" / "empty" / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match=r"notes.png: not a readable image"):
        open_image_folder(tmp_path / "flat")
    data = open_image_folder(tmp_path / "flat", 28, test_fraction=0.0, channels=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"notes.png: not an image"):
        _read_all(data, data.train)
    with pytest.raises(DataError, match=r"nowhere: no such TFRecord directory.*write_tfrecords"):
        open_tfrecords(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no dataset.json .*write the shards again"):
        open_tfrecords(tmp_path / "flat")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(DataError, match="the class list is empty"):
        open_image_folder(root, class_list=tmp_path / "empty.txt")


def test_memory_and_stream_list_an_image_folder_alike(folder, tmp_path):
    """One listing (image_folder.list_image_folder) for both: classes sorted by name,
    image extensions in any case, hidden files and folders skipped."""
    from densenas_tf.data.image_folder import list_image_folder

    source = folder[0]
    root = tmp_path / "mixed"
    layout = {"b": ["00.png"], "a": ["01.PNG", "00.png"], ".cache": ["00.png"]}
    images = iter(sorted((source / "coat").glob("*.png")))  # a different image each
    for name, files in layout.items():
        (root / name).mkdir(parents=True)
        for file in files:
            (root / name / file).write_bytes(next(images).read_bytes())
    (root / "a" / "._00.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (root / "a" / "notes.txt").write_text("not an image")
    names, files = list_image_folder(root)
    assert names == ["a", "b"]
    assert [[p.name for p in found] for found in files] == [["00.png", "01.PNG"], ["00.png"]]
    memory = load_image_data(image_folder=root, test_fraction=0.5)
    stream = open_image_folder(root, test_fraction=0.0)
    assert list(stream.train.reader.paths) == [str(p) for found in files for p in found]
    assert memory.class_names == stream.class_names == ("a", "b")
    in_memory = {
        _key(image): int(label)
        for image, label in zip(
            np.concatenate([memory.train_images, memory.test_images]),
            np.concatenate([memory.train_labels, memory.test_labels]),
        )
    }
    assert in_memory == _read_all(stream, stream.train) and len(in_memory) == 3


def _jpeg_folder(root: Path, fashion) -> Path:
    """3 classes x 6 real images as JPEG files."""
    images, labels = fashion
    for name, fashion_label in CLASSES.items():
        for i, image in enumerate(images[labels == fashion_label][:6]):
            path = root / name / f"{i:02d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tf.io.encode_jpeg(image, quality=95).numpy())
    return root


def test_an_undecodable_image_met_mid_run_is_a_one_line_data_error(fashion, tmp_path, capsys):
    from densenas_tf import cli
    from densenas_tf.space.arch_spec import ArchSpec
    from densenas_tf.train.trainer import TrainConfig, train

    root = _jpeg_folder(tmp_path / "images", fashion)
    cache = tmp_path / "cache"
    data = open_image_folder(root, test_fraction=0.25, cache_dir=cache)
    mean, std = data.channel_stats()  # cached while every file was good
    # Then a training file is damaged: its JPEG header stays (so it passes for a
    # JPEG), the rest is garbage, cut short.
    bad = Path(data.train.reader.paths[data.train._positions()[7]])
    bad.write_bytes(bad.read_bytes()[:20] + b"\x00garbage" * 8)
    expected = (
        f"{bad}: not a readable image (it could not be decoded); remove the file or "
        "re-encode it (e.g. as PNG), then run again"
    )
    # The search's pass: its iterator raises the DataError, one line naming the file.
    part = SearchSplit(data, data.train, mean, std)
    with pytest.raises(DataError) as raised:
        for _ in part.distribute(tf.distribute.get_strategy(), 6, shuffle_seed=1):
            pass
    assert str(raised.value) == expected
    # Reading into memory (to_image_data, the exporters' sample) says the same.
    with pytest.raises(DataError) as raised:
        sources.to_image_data(data)
    assert str(raised.value) == expected
    # Training (inside Keras's fit; the statistics come from the cache): the binary's
    # one "error:" line, exit 1.
    spec = ArchSpec.from_block_string(
        "28x28x1 | stem:c8s2+k3e1>8 | 8>16:k3e3s2 | final:32 | classes:3", name="small"
    )
    config = TrainConfig(epochs=1, batch_size=6, lr=0.05)

    def run(argv):
        train(spec, data, tmp_path / "run", config, log=lambda line: None)

    capsys.readouterr()
    assert cli.main(run)([]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {expected}"]
    # The same damaged image copied into TFRecords (no --image_size: no re-encoding)
    # is named by its record.
    shards = tmp_path / "shards"
    write_tfrecords(shards, "train", image_folder=root, log=lambda line: None)
    records = open_tfrecords(shards, 28, test_fraction=0.0)
    with pytest.raises(DataError, match=r"^.*shards \(train split\): record \d+: not a readable"):
        sources.to_image_data(records)


# --- splits without pixels ---------------------------------------------------------------


def test_per_class_split_is_deterministic_by_seed_and_reads_no_pixels(folder, monkeypatch):
    root, _ = folder

    def refuse(*args, **kwargs):
        raise AssertionError("pixels read")

    monkeypatch.setattr(FolderReader, "records", refuse)
    monkeypatch.setattr(image_folder, "_probe_image", refuse)
    data = open_image_folder(root, image_size=28, channels=1, test_fraction=0.0)
    labels = data.train.labels()
    weight, arch = split_per_class(labels, 0.25, seed=7)
    again = split_per_class(labels, 0.25, seed=7)
    other = split_per_class(labels, 0.25, seed=8)
    np.testing.assert_array_equal(weight, again[0])
    np.testing.assert_array_equal(arch, again[1])
    assert not np.array_equal(arch, other[1])
    assert np.bincount(labels[arch]).tolist() == [2, 2, 2]  # round(8 * 0.25) per class
    assert sorted(np.concatenate([weight, arch])) == list(range(24))


# --- sharding ----------------------------------------------------------------------------


def test_one_pipeline_feeding_two_replicas_yields_a_batch_per_replica_per_step(folder):
    """MirroredStrategy on one machine: one input pipeline, two replicas. Each global
    step takes two per-replica batches from it, so an epoch is 2 x steps batches and
    every example is read once."""
    data = open_image_folder(folder[0], test_fraction=0.0)
    context = tf.distribute.InputContext(
        num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2
    )
    batches = list(data.train_dataset(8, seed=0, augment=False, input_context=context))
    assert len(batches) == 2 * (24 // 8)  # 3 global steps of 2 replicas' batches of 4
    assert all(x.shape == (4, 28, 28, 1) for x, _ in batches)
    seen = sorted(_key(x[i]) for x, _ in batches for i in range(4))
    everything = sorted(
        _key(x[i]) for x, _ in data.train_dataset(24, seed=0, augment=False) for i in range(24)
    )
    assert seen == everything  # each example once


@pytest.mark.parametrize("kind", ["folder", "tfrecords, 2 pipelines", "tfrecords, 8 pipelines"])
def test_each_pipeline_reads_its_own_share_and_a_replicas_batch(folder, records, kind):
    if kind == "folder":
        data = open_image_folder(folder[0], test_fraction=0.0)
    else:
        data = open_tfrecords(records[0], 28, test_fraction=0.0)
    # 5 shards of 5, 5, 5, 5 and 4 records: 2 pipelines share one of them, 8
    # pipelines read 3 records each from one or two shards.
    count = 2 if kind != "tfrecords, 8 pipelines" else 8
    ids = [[int(i) for _, _, i in data.train.records(5, _context(count, k))] for k in range(count)]
    # Every example once across the pipelines.
    assert sorted(i for share in ids for i in share) == list(range(24))
    per_replica = 4 if count == 2 else 1
    global_batch = per_replica * count
    steps = 24 // global_batch
    for k in sorted({0, count - 1}):  # the first and the last pipeline
        batches = list(data.train_dataset(global_batch, seed=0, input_context=_context(count, k)))
        assert len(batches) == steps  # every pipeline yields every step
        assert all(
            x.shape == (per_replica, 28, 28, 1) and len(y) == per_replica for x, y in batches
        )


def _weight_part(data) -> SearchSplit:
    """The search's weight part (3/4 of each class) of the data, not normalised."""
    weight, _ = split_per_class(data.train.labels(), 0.25, seed=1)
    zero, one = np.zeros(1, np.float32), np.ones(1, np.float32)
    return SearchSplit(data, data.train.subset(weight), zero, one)


@pytest.mark.parametrize("kind", ["tfrecords", "tfds"])
def test_two_workers_on_localhost_see_every_example_once(records, tfds_shards, kind, tmp_path):
    """MultiWorkerMirroredStrategy, one replica in each of two processes, on shards
    of unequal sizes (TFRecords of 5, 5, 5, 5 and 4 records, or a prepared tfds
    dataset in 5 shards): per epoch, the training dataset and the search's pass
    that the workers consume together hold every example once."""
    source = str(records[0] if kind == "tfrecords" else tfds_shards)
    data = _open_source(kind, source)
    lengths = data.train.reader.counts if kind == "tfrecords" else _tfds_shard_lengths(data)
    assert len(lengths) == 5 and sum(lengths) == 24 and len(set(lengths)) > 1
    workers = [f"localhost:{port}" for port in free_ports(2)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    processes = []
    try:
        for index in range(2):
            config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            command = [sys.executable, __file__, kind, source, str(tmp_path / f"{index}.json")]
            processes.append(
                subprocess.Popen(
                    command,
                    env={**env, "TF_CONFIG": json.dumps(config)},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for process in processes:
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    first, second = (json.loads((tmp_path / f"{k}.json").read_text()) for k in (0, 1))
    assert first["replicas"] == second["replicas"] == 2
    every_id = sorted(int(i) for _, _, i in data.train.records(None, None))
    assert len(set(every_id)) == 24
    assert sorted(first["ids"] + second["ids"]) == every_id
    every = sorted(_digest(im) for x, _ in data.images(data.train, 24) for im in x.numpy())
    # Training (global batch 8, 24 images: 3 steps): each epoch, each example once.
    for epoch in range(2):
        mine, theirs = first["train"][epoch], second["train"][epoch]
        assert mine["shapes"] == theirs["shapes"] == [[4, 28, 28, 1]] * 3
        assert sorted(mine["images"] + theirs["images"]) == every
    assert first["train"][0]["images"] != first["train"][1]["images"]  # reshuffled per epoch
    # The search's weight part (18 images, global batch 4: 4 steps): none twice, and
    # only the remainder of fewer than a global batch (2 images) left out.
    weight = _weight_part(data)
    part = [_digest(im) for x, _ in weight.dataset(18) for im in x.numpy()]
    for seed in range(2):
        mine, theirs = first["search"][seed], second["search"][seed]
        assert mine["shapes"] == theirs["shapes"] == [[2, 28, 28, 1]] * 4
        seen = mine["images"] + theirs["images"]
        assert len(set(seen)) == len(seen) == 16 and set(seen) <= set(part)
        assert len(set(part) - set(seen)) == 18 % 4 < 4


def _open_source(kind: str, source: str):
    """The 24 training images of the two-worker test, as TFRecords or as tfds."""
    if kind == "tfrecords":
        return open_tfrecords(source, 28, test_fraction=0.0)
    return open_tfds(
        "tiny_fashion_shards", source, test_fraction=0.0, cache_dir=Path(source) / "cache"
    )


def _tfds_shard_lengths(data) -> list[int]:
    reader = data.train.reader
    return [int(n) for n in reader.builder.info.splits[reader.split].shard_lengths]


def _worker(kind: str, source: str, out: str) -> None:
    """One worker of the test above (run as a script, TF_CONFIG set)."""
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    data = _open_source(kind, source)
    ids = strategy.distribute_datasets_from_function(
        lambda context: data.train.records(None, context).map(lambda e, y, i: i).batch(64)
    )
    mine = [int(i) for batch in ids for t in strategy.experimental_local_results(batch) for i in t]

    def local(batches) -> dict:
        """What this worker's pipeline yields in one pass: image digests, batch shapes."""
        images, shapes = [], []
        for x, _ in batches:
            for t in strategy.experimental_local_results(x):
                shapes.append(list(t.shape))
                images += [_digest(image) for image in t.numpy()]
        return {"images": images, "shapes": shapes}

    # What tools/train.py's fit consumes: train.py's per-pipeline dataset.
    train = [
        local(
            strategy.distribute_datasets_from_function(
                lambda context, epoch=epoch: data.train_dataset(
                    8, seed=0, augment=False, epoch=epoch, input_context=context
                )
            )
        )
        for epoch in range(2)
    ]
    # What the Searcher's weight steps consume (SearchSplit.distribute), two passes.
    weight = _weight_part(data)
    search = [local(weight.distribute(strategy, 4, shuffle_seed)) for shuffle_seed in (3, 4)]
    result = {
        "replicas": strategy.num_replicas_in_sync,
        "ids": mine,
        "train": train,
        "search": search,
    }
    Path(out).write_text(json.dumps(result))


# --- tfds ------------------------------------------------------------------------------


def _prepare_tfds(name: str, data_dir: Path, splits: dict, num_shards: int | None = None):
    """Prepares a tfds dataset ``name`` (a builder class made here) in data_dir from
    {split: (uint8 images [N, 28, 28, 1], labels in CLASSES order)}."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()

    def info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(names=list(CLASSES)),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def generate(self, images, labels):
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image, "label": int(label)}

    def split_generators(self, dl_manager):
        return {split: self._generate_examples(*pair) for split, pair in splits.items()}

    class_name = "".join(part.title() for part in name.split("_"))
    builder_class = type(
        class_name,
        (tfds.core.GeneratorBasedBuilder,),
        {
            "__doc__": f"{name}: real Fashion-MNIST images.",
            "__module__": __name__,
            "VERSION": tfds.core.Version("1.0.0"),
            "_info": info,
            "_split_generators": split_generators,
            "_generate_examples": generate,
        },
    )
    builder = builder_class(data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=num_shards)
    )
    return builder


@pytest.fixture(scope="module")
def tfds_shards(folder, tmp_path_factory):
    """The folder's 24 images as a prepared tfds dataset (train only) in 5 shards."""
    _, expected = folder
    data_dir = tmp_path_factory.mktemp("tfds_shards")
    images = np.stack([np.frombuffer(k, np.uint8).reshape(28, 28, 1) for k in expected])
    labels = np.array(list(expected.values()))
    _prepare_tfds("tiny_fashion_shards", data_dir, {"train": (images, labels)}, num_shards=5)
    return data_dir


def test_tfds_streams_with_class_lists_shards_and_a_cached_index(fashion, tmp_path, no_network):
    images, labels = fashion
    picked = np.concatenate([np.flatnonzero(labels == f)[:6] for f in CLASSES.values()])
    picked = np.random.default_rng(0).permutation(picked)
    to_label = {fashion_label: k for k, fashion_label in enumerate(CLASSES.values())}
    examples = {
        "images": images[picked],
        "labels": np.array([to_label[v] for v in labels[picked]]),
    }
    whole = (examples["images"], examples["labels"])
    splits = {"train": tuple(a[:12] for a in whole), "test": tuple(a[12:] for a in whole)}
    _prepare_tfds("tiny_fashion_stream", tmp_path / "tfds", splits)
    with pytest.raises(DataError, match=r"not prepared in .*tfds build tiny_fashion_stream"):
        open_tfds("tiny_fashion_stream", tmp_path / "elsewhere")
    cache = tmp_path / "cache"
    data = open_tfds("tiny_fashion_stream", tmp_path / "tfds", cache_dir=cache)
    assert data.input_shape == (28, 28, 1) and (data.num_train, data.num_test) == (12, 6)
    expected = {_key(im): int(lb) for im, lb in zip(examples["images"], examples["labels"])}
    assert {**_read_all(data, data.train), **_read_all(data, data.test)} == expected
    # The exporters' sample of a whole tfds split: its first images, no index built.
    sample = sources.sample_image_data(data, 5, 4)
    assert (len(sample.train_images), len(sample.test_images)) == (5, 4)
    assert all(expected[_key(im)] == lb for im, lb in zip(sample.test_images, sample.test_labels))
    assert not list(cache.glob("tfds_index_*.json"))
    # One shard, two pipelines: divided by record, every example once
    # (the split's index is built for it).
    halves = [list(data.images(data.train, 2, input_context=_context(2, k))) for k in (0, 1)]
    got = [_key(np.round(im)) for half in halves for x, _ in half for im in x.numpy()]
    assert sorted(got) == sorted(_key(im) for im in examples["images"][:12])
    assert len(list(cache.glob("tfds_index_*.json"))) == 1
    # More pipelines than examples: the last ones get an empty share and read nothing.
    shares = [list(data.train.records(None, _context(16, k))) for k in (0, 15)]
    assert [len(share) for share in shares] == [1, 0]
    class_list = tmp_path / "classes.txt"
    class_list.write_text("coat\nbag\n")  # two of the three, renumbered
    coats = open_tfds(
        "tiny_fashion_stream", tmp_path / "tfds", class_list=class_list, cache_dir=cache
    )
    assert coats.num_train + coats.num_test == 12 and set(coats.train.labels()) == {0, 1}
    assert set(_read_all(coats, coats.train).values()) == {0, 1}
    assert len(list(cache.glob("tfds_index_*.json"))) == 2  # train and test indexed once
    # TFRecords written from the prepared dataset hold its examples (PNGs copied as they are).
    shards = tmp_path / "shards"
    for split in ("train", "test"):
        write_tfrecords(
            shards,
            split,
            tfds_name="tiny_fashion_stream",
            tfds_data_dir=tmp_path / "tfds",
            class_list=class_list,
            log=lambda line: None,
        )
    written = open_tfrecords(shards, 28)
    assert written.class_names == ("coat", "bag") and (written.num_train, written.num_test) == (
        coats.num_train,
        coats.num_test,
    )
    assert _read_all(written, written.train) == _read_all(coats, coats.train)


# --- statistics ---------------------------------------------------------------------------


def test_channel_stats_are_streamed_and_cached(folder, tmp_path, monkeypatch):
    root, expected = folder
    data = open_image_folder(root, test_fraction=0.25, seed=3, cache_dir=tmp_path)
    mean, std = data.channel_stats()
    arrays = np.stack([np.frombuffer(k, np.uint8).reshape(28, 28, 1) for k in expected])
    train_keys = set(_read_all(data, data.train))
    want = channel_stats(np.stack([a for a in arrays if _key(a) in train_keys]))
    np.testing.assert_allclose(mean, want[0], rtol=1e-5)
    np.testing.assert_allclose(std, want[1], rtol=1e-5)
    assert len(list(tmp_path.glob("channel_stats_*.json"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("statistics recomputed")

    monkeypatch.setattr(StreamingData, "_stream_stats", refuse)
    again = open_image_folder(root, test_fraction=0.25, seed=3, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.channel_stats()[0], mean)


# --- in memory: a cache of the same stream -----------------------------------------------


def _streamed_arrays(data, split, batch=5) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, labels) a split's unaugmented pipeline yields, rounded, in order."""
    batches = list(data.images(split, batch, drop_remainder=False))
    images = np.concatenate([np.clip(np.round(x.numpy()), 0, 255) for x, _ in batches])
    return images.astype(np.uint8), np.concatenate([y.numpy() for _, y in batches])


def _unaugmented_reference(images: np.ndarray, size: int) -> np.ndarray:
    """Images resized as evaluation sees them, computed here: above 64 pixels, the
    central 87.5 % first (the streamed evaluation's crop), then bilinear."""
    x = tf.constant(images, tf.float32)
    if size > 64:
        x = tf.image.central_crop(x, 0.875)
    resized = tf.image.resize(x, (size, size), "bilinear").numpy()
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("image_size", [None, 16, 96])
def test_an_image_folder_in_memory_holds_what_its_stream_yields(folder, tmp_path, image_size):
    """load_image_data and the stream of the same folder agree: the same per-class
    test part, the same pixels (resized as evaluation sees them), labels and order;
    limits keep the same examples (memory holds them in the order drawn)."""
    root, expected = folder
    memory = load_image_data(image_folder=root, image_size=image_size, test_fraction=0.25, seed=3)
    stream = open_image_folder(root, image_size, test_fraction=0.25, seed=3, cache_dir=tmp_path)
    assert (len(memory.train_images), len(memory.test_images)) == (18, 6)
    assert memory.input_shape == stream.input_shape == (image_size or 28, image_size or 28, 1)
    for images, labels, split in (
        (memory.train_images, memory.train_labels, stream.train),
        (memory.test_images, memory.test_labels, stream.test),
    ):
        streamed_images, streamed_labels = _streamed_arrays(stream, split)
        np.testing.assert_array_equal(images, streamed_images)
        np.testing.assert_array_equal(labels, streamed_labels)
    files = np.stack([np.frombuffer(k, np.uint8).reshape(28, 28, 1) for k in expected])
    if image_size is None:
        assert {_key(im) for im in memory.train_images} <= set(expected)
    else:
        reference = {_key(im) for im in _unaugmented_reference(files, image_size)}
        assert {_key(im) for im in memory.train_images} <= reference
    limited = load_image_data(
        image_folder=root,
        image_size=image_size,
        test_fraction=0.25,
        seed=3,
        train_limit=7,
        test_limit=2,
    )
    kept = sources.open_stream(
        image_folder=root,
        image_size=image_size,
        test_fraction=0.25,
        seed=3,
        train_limit=7,
        test_limit=2,
        cache_dir=tmp_path,
    )
    for images, split in ((limited.train_images, kept.train), (limited.test_images, kept.test)):
        assert sorted(_key(im) for im in images) == sorted(
            _key(im) for im in _streamed_arrays(kept, split)[0]
        )
    assert (len(limited.train_images), len(limited.test_images)) == (7, 2)


@pytest.mark.parametrize("image_size", [None, 14, 96])
def test_fashion_mnist_in_memory_holds_what_its_stream_yields(image_size):
    """Fashion-MNIST's IDX reader serves its arrays: held in memory straight from them
    (resized in chunks), they are what its pipeline yields image by image."""
    stream = sources.open_fashion_mnist(image_size=image_size)
    assert (stream.num_train, stream.num_test) == (60000, 10000)
    part = stream.test.subset(np.arange(0, 10000, 250))  # 40 images
    held_images, held_labels = stream.arrays(part)
    streamed_images, streamed_labels = _streamed_arrays(stream, part, 16)
    np.testing.assert_array_equal(held_images, streamed_images)
    np.testing.assert_array_equal(held_labels, streamed_labels)
    images, labels = load_fashion_mnist("test")
    size = image_size or 28
    expected = images[::250] if image_size is None else _unaugmented_reference(images[::250], size)
    np.testing.assert_array_equal(held_images, expected)
    np.testing.assert_array_equal(held_labels, labels[::250])
    memory = load_image_data(image_size=image_size, train_limit=8, test_limit=40, seed=2)
    draw = np.random.default_rng([2, 1]).permutation(10000)[:40]  # the order drawn
    np.testing.assert_array_equal(memory.test_labels, labels[draw])
    np.testing.assert_array_equal(
        memory.test_images,
        stream.arrays(stream.test.subset(draw))[0][np.searchsorted(np.sort(draw), draw)],
    )


def test_a_prepared_tfds_dataset_in_memory_holds_what_its_stream_yields(
    folder, tmp_path, no_network
):
    """A tfds dataset without a test split: memory and stream hold out the same
    per-class part and yield the same pixels in the same (file) order."""
    _, expected = folder
    images = np.stack([np.frombuffer(k, np.uint8).reshape(28, 28, 1) for k in expected])
    labels = np.array(list(expected.values()))
    _prepare_tfds("tiny_fashion_memory", tmp_path / "tfds", {"train": (images, labels)})
    memory = load_image_data(
        tfds_name="tiny_fashion_memory", tfds_data_dir=tmp_path / "tfds", test_fraction=0.25
    )
    stream = open_tfds(
        "tiny_fashion_memory", tmp_path / "tfds", test_fraction=0.25, cache_dir=tmp_path / "c"
    )
    assert memory.class_names == stream.class_names == tuple(CLASSES)
    assert np.bincount(memory.test_labels).tolist() == [2, 2, 2]  # a quarter of each class
    for held, split in ((memory.train_images, stream.train), (memory.test_images, stream.test)):
        np.testing.assert_array_equal(held, _streamed_arrays(stream, split)[0])


def test_without_image_size_every_image_has_the_first_ones_size(folder, tmp_path):
    """Opened without image_size, a folder's images take the first image's size
    (square or not), and memory and stream alike refuse an image of another size,
    naming both files."""
    source, _ = folder
    root = tmp_path / "images"
    shutil.copytree(source, root)
    odd = root / "coat" / "03.png"
    odd.write_bytes(tf.io.encode_png(tf.io.decode_png(odd.read_bytes())[:20, :20]).numpy())
    message = rf"{odd} is 20x20 pixels but .*bag/00.png is 28x28; pass image_size"
    with pytest.raises(DataError, match=message):
        load_image_data(image_folder=root)
    stream = open_image_folder(root, test_fraction=0.0, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match=message):
        sources.to_image_data(stream)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"03.png is 20x20 pixels but"):
        _read_all(stream, stream.train)
    resized = open_image_folder(root, 28, test_fraction=0.0)
    assert len(_read_all(resized, resized.train)) == 24
    # Images of one size that is not square: both take it.
    wide = tmp_path / "wide"
    for path in sorted(source.rglob("*.png"))[::4]:  # 2 of each class
        target = wide / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tf.io.encode_png(tf.io.decode_png(path.read_bytes())[:20]).numpy())
    memory = load_image_data(image_folder=wide, test_fraction=0.5)
    streamed = open_image_folder(wide, test_fraction=0.5)
    assert memory.input_shape == streamed.input_shape == (20, 28, 1)
    np.testing.assert_array_equal(memory.test_images, _streamed_arrays(streamed, streamed.test)[0])


# --- the library picks; the search and training read streams ----------------------------


def test_open_data_picks_memory_or_stream(folder, records, tmp_path):
    root, _ = folder
    small = open_data({"image_folder": str(root), "test_fraction": 0.25})
    assert isinstance(small, ImageData)
    assert isinstance(open_data({"image_folder": str(root)}, stream=True), StreamingData)
    assert isinstance(open_data({"tfrecord_dir": str(records[0]), "image_size": 28}), StreamingData)
    assert isinstance(
        open_data({"dataset": "fashion_mnist", "train_limit": 8, "test_limit": 8}), ImageData
    )
    # TFRecords held in memory on request: the same examples as the stream.
    cached = open_data(
        {"tfrecord_dir": str(records[0]), "image_size": 28, "test_fraction": 0.25}, stream=False
    )
    assert isinstance(cached, ImageData) and cached.train_images.shape == (18, 28, 28, 1)
    pairs = zip(
        np.concatenate([cached.train_images, cached.test_images]),
        np.concatenate([cached.train_labels, cached.test_labels]),
    )
    assert {_key(image): int(label) for image, label in pairs} == folder[1]
    with pytest.raises(DataError, match="class lists need tfds_name, image_folder or tfrecord_dir"):
        open_data({"dataset": "fashion_mnist", "class_list": str(tmp_path / "x.txt")})


def test_open_data_holds_in_memory_only_a_source_that_fits_whole(folder, monkeypatch):
    """The choice is made on the whole source, so that the limits never change where
    the data are held: 24 images (18,816 bytes) over the limit stream even when
    train_limit and test_limit leave 8 (6,272 bytes)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the source held in memory")

    monkeypatch.setattr(sources, "IN_MEMORY_LIMIT_BYTES", 10_000)
    monkeypatch.setattr(sources, "hold_in_memory", refuse)
    data = open_data({"image_folder": str(folder[0]), "train_limit": 4, "test_limit": 4})
    assert isinstance(data, StreamingData)
    assert (data.num_train, data.num_test) == (4, 4)


def test_exporters_take_a_bounded_sample_of_a_streamed_source(
    folder, records, monkeypatch, decoded
):
    from densenas_tf import cli

    root, expected = folder
    # Any source training would stream (here: one counted as over the in-memory
    # limit) gives the exporters EXPORT_IMAGES images of each split and no more.
    monkeypatch.setattr(sources, "IN_MEMORY_LIMIT_BYTES", 1000)
    monkeypatch.setattr(cli, "EXPORT_IMAGES", 5)
    load, hold = sources.load_image_data, sources.hold_in_memory

    def refuse(*args, **kwargs):
        raise AssertionError("the whole source read into memory")

    monkeypatch.setattr(sources, "hold_in_memory", refuse)
    data = cli.load_data({"image_folder": str(root), "test_fraction": 0.25})
    assert isinstance(data, ImageData)
    assert (len(data.train_images), len(data.test_images)) == (5, 5)
    assert len(decoded) == 10  # the 10 images sampled, decoded once each
    pairs = zip(
        np.concatenate([data.train_images, data.test_images]),
        np.concatenate([data.train_labels, data.test_labels]),
    )
    sampled = {_key(image): int(label) for image, label in pairs}
    assert len(sampled) == 10 and all(expected[k] == v for k, v in sampled.items())
    # The test images are the test split's (the 6 training held out).
    held_out = open_image_folder(root, test_fraction=0.25)
    assert {_key(im) for im in data.test_images} <= set(_read_all(held_out, held_out.test))
    # Given limits are taken as they are; TFRecords are sampled from the stream too.
    limited = cli.load_data({"image_folder": str(root), "train_limit": 3, "test_limit": 2})
    assert (len(limited.train_images), len(limited.test_images)) == (3, 2)
    shards = cli.load_data({"tfrecord_dir": str(records[0]), "image_size": 28})
    assert (len(shards.train_images), len(shards.test_images)) == (5, 5)
    # A source that training holds in memory is read as training reads it.
    monkeypatch.setattr(sources, "IN_MEMORY_LIMIT_BYTES", 2 << 30)
    monkeypatch.setattr(sources, "hold_in_memory", hold)
    small = cli.load_data({"image_folder": str(root), "test_fraction": 0.25})
    reference = load(image_folder=root, test_fraction=0.25)
    np.testing.assert_array_equal(small.test_images, reference.test_images)


def test_search_reads_a_streamed_folder_split_per_class(folder, tmp_path):
    from types import SimpleNamespace

    from densenas_tf.search.config import SearchConfig
    from densenas_tf.search.run import check_search_data, load_search_data
    from densenas_tf.search.searcher import Searcher
    from densenas_tf.space.spaces import load_space

    config = SearchConfig.from_dict(
        {
            "space": "fashion_mnist",
            "batch_size": 4,
            "seed": 2,
            "data": {
                "image_folder": str(folder[0]),
                "arch_fraction": 0.25,
                "cache_dir": str(tmp_path),
            },
        }
    )
    weight, arch = load_search_data(config)
    # 24 images: the 6 that tools/train.py tests on by default (test_fraction 0.2,
    # data seed 0) are left out; the other 18 divided per class, 2 of 6 each to arch.
    assert (weight.num_examples, arch.num_examples) == (12, 6)
    assert np.bincount(arch.split.labels()).tolist() == [2, 2, 2]
    held_out = set(open_image_folder(folder[0], test_fraction=0.2, seed=0).test._positions())
    searched = set(weight.split._positions()) | set(arch.split._positions())
    assert len(held_out) == 6 and not held_out & searched and len(searched) == 18
    with pytest.raises(
        DataError,
        match=r"are 28x28x1 images in 3 classes; make a space for them: densenas-make-space",
    ):
        check_search_data(load_space("fashion_mnist"), config, weight)
    # The Searcher's passes: shuffled by its seed, normalised, skip resumes mid-pass.
    host = SimpleNamespace(config=config, strategy=tf.distribute.get_strategy())
    host.shuffle_seed = lambda epoch, phase: Searcher.shuffle_seed(host, epoch, phase)
    first = [y.numpy().tolist() for _, y in Searcher._batches(host, weight, 0, 1, 0)]
    again = [y.numpy().tolist() for _, y in Searcher._batches(host, weight, 0, 1, 0)]
    resumed = [y.numpy().tolist() for _, y in Searcher._batches(host, weight, 0, 1, 2)]
    assert len(first) == 3 and first == again and resumed == first[2:]  # 12 images, batch 4
    x, _ = next(Searcher._batches(host, arch, None, 0, 0))
    assert abs(float(tf.reduce_mean(x))) < 1.0  # normalised by the streamed statistics


def test_training_reads_a_stream(folder, tmp_path, decoded):
    from densenas_tf.exporting.export import load_trained_model
    from densenas_tf.space.arch_spec import ArchSpec
    from densenas_tf.train.trainer import TrainConfig, train

    data = open_image_folder(folder[0], test_fraction=0.25, cache_dir=tmp_path / "cache")
    spec = ArchSpec.from_block_string(
        "28x28x1 | stem:c8s2+k3e1>8 | 8>16:k3e3s2 | final:32 | classes:3", name="small"
    )
    config = TrainConfig(epochs=2, batch_size=6, lr=0.05)
    metrics = train(spec, data, tmp_path / "run", config, log=lambda line: None)
    assert (metrics["train_images"], metrics["test_images"]) == (18, 6)
    history = metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(set(h) == {"epoch", "loss", "train_acc", "lr", "time_s"} for h in history)
    assert all(np.isfinite(h["loss"]) and 0.0 <= h["train_acc"] <= 1.0 for h in history)
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    # The stream was read, and read as much as the run needs: every training image
    # once for the channel statistics and once per epoch (2 epochs of 3 steps of 6),
    # every test image once for the evaluation; nothing else.
    train_ids, test_ids = data.train._positions(), data.test._positions()
    assert collections.Counter(decoded) == {
        **{int(i): 3 for i in train_ids},
        **{int(i): 1 for i in test_ids},
    }
    assert len(list((tmp_path / "cache").glob("channel_stats_*.json"))) == 1
    # The saved model classifies the stream's images into the 3 classes.
    model = load_trained_model(metrics["model"])
    x, y = next(iter(data.eval_dataset(6)))
    logits = model(x, training=False).numpy()
    assert logits.shape == (6, 3) and np.all(np.isfinite(logits))
    hits = int(np.sum(np.argmax(logits, -1) == y.numpy()))
    assert metrics["test_accuracy"] == pytest.approx(hits / 6)


def test_recipes_and_search_config_keys():
    from densenas_tf.search.config import ConfigError, load_search_config
    from densenas_tf.train.recipe import load_train_recipe

    train, data = load_train_recipe("imagenet")
    assert (train["epochs"], train["batch_size"], train["lr"], train["label_smoothing"]) == (
        240,
        1024,
        0.5,
        0.1,
    )
    assert data["tfds_name"] == "imagenet2012" and data["stream"] is True
    config = load_search_config("imagenet100")
    assert (config.batch_size, config.epochs, config.warmup_epochs) == (352, 150, 50)
    assert (config.weight_lr, config.alpha_lr, config.data.arch_fraction) == (0.2, 3e-4, 0.2)
    assert config.data.streamed and config.data.class_list
    # Configs without streaming keys keep the form older runs recorded.
    assert set(load_search_config("fashion_mnist").to_dict()["data"]) == {
        "dataset",
        "data_dir",
        "train_limit",
        "arch_fraction",
    }
    with pytest.raises(
        ConfigError, match=r"data\.image_folder and data\.tfrecord_dir are both set"
    ):
        load_search_config(None, ["data.image_folder=a", "data.tfrecord_dir=b"])
    with pytest.raises(ConfigError, match=r"data\.class_list applies to streaming sources only"):
        load_search_config(None, ["data.class_list=a.txt"])


def test_bench_input_on_tiny_jpegs_with_an_injected_clock(tmp_path, fashion):
    from densenas_tf.experiments.bench_input import bench_input, format_table

    ticks = iter(range(0, 1000, 2))  # every clock read 2 s after the last
    step = {"space": "imagenet_mbv2", "batch_size": 8}
    step.update(weight_step_s=2.0, weight_step_images_per_s=4.0)
    step.update(arch_step_s=2.5, arch_step_images_per_s=3.2)
    rows = bench_input(
        tmp_path,
        images=12,
        image_size=16,
        batch_size=4,
        epochs=1,
        clock=lambda: float(next(ticks)),
        step_figures=step,
        step_source="bench.json",
    )
    assert [r["batches"] for r in rows[:2]] == [3, 3]  # 12 images, batch 4, one timed epoch
    assert all(r["images_per_s"] == pytest.approx(12 / 2) for r in rows[:2])
    assert [r["images_per_s"] for r in rows[2:]] == [4.0, 3.2]
    assert "search weight step (imagenet_mbv2, batch 8, from bench.json)" in rows[2]["input"]
    table = format_table(rows)
    assert "image folder (JPEG), 16x16" in table and "TFRecords (JPEG)" in table
    # The JPEGs are upscaled Fashion-MNIST images, not noise.
    first = sorted((tmp_path / "jpeg").rglob("*.jpg"))[0]
    pixels = tf.io.decode_jpeg(first.read_bytes(), channels=1).numpy()[..., 0].astype(float)
    images, _ = fashion
    small = tf.image.resize(images[..., :1].astype(np.float32), (16, 16)).numpy()[..., 0]
    assert np.min(np.abs(small - pixels).mean(axis=(1, 2))) < 8.0


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], sys.argv[3])
