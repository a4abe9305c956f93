"""Shared fixtures: the test suite runs offline on the CPU."""

import copy
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# As the binaries run (densenas_tf.commands.prepare_binary): in-process tests and the
# binaries they start use the same kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest

from densenas_tf.space.spaces import SPACES_DIR, load_space, read_config_file

# ----- the fast tier: pytest -m "not slow" -n 2 tests -------------------------------
# A test over about 2 s (training, searches, subprocess binaries, localhost
# workers) carries the ``slow`` mark (pytest.ini), written where the test is
# (@pytest.mark.slow, or a module's pytestmark), except for the two kinds the
# hook below marks:
#  - every user of a fixture that costs tens of seconds once per test worker
#    (training a net, measuring a latency table), whatever its own time: one
#    such test in the fast tier would pay the whole setup;
#  - the slow tests of files whose owners mark them later, by test name (all of
#    its parametrisations), or "*" for a whole file.
SLOW_FIXTURES = ("trained_small_net", "micro")
SLOW_ELSEWHERE = {  # over 3 s each in a fast-tier run on 2 busy cores
    "test_train.py": {  # training runs, killed and resumed; the binary
        "test_an_interrupted_run_resumes_after_its_last_epoch",
        "test_train_binary_names_an_unknown_op",
        "test_a_killed_training_resumes_to_the_uninterrupted_weights_step_and_lr",
        "test_data_without_test_images_is_refused_before_training",
        "test_a_run_dir_of_another_config_is_replaced_if_it_finished_no_epoch_else_overwritten",
        "test_a_corrupt_latest_checkpoint_resumes_from_the_epoch_before",
        "test_checkpoints_of_which_none_is_readable_are_refused_and_kept",
        "test_a_finished_run_without_its_checkpoints_is_never_deleted_without_overwrite",
    },
    "test_run_dir.py": {  # lock holders in other processes, a search, a training
        "test_a_held_run_dir_refuses_the_search_and_the_training_even_with_overwrite",
        "test_a_folder_that_is_no_run_is_never_emptied_and_overwrite_is_never_offered",
        "test_a_finished_search_is_its_own_and_overwrite_deletes_only_what_it_wrote",
    },
    "test_data_streaming.py": {  # localhost workers, a training, tfds shards
        "test_two_workers_on_localhost_see_every_example_once",
        "test_an_undecodable_image_met_mid_run_is_a_one_line_data_error",
        "test_training_reads_a_stream",
        "test_tfds_streams_with_class_lists_shards_and_a_cached_index",
        "test_exporters_take_a_bounded_sample_of_a_streamed_source",
    },
    "test_data.py": {  # tfds datasets prepared here
        "test_tfds_mock_mnist",
        "test_tfds_prepared_dataset_without_test_split",
    },
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by the marks
def pytest_collection_modifyitems(config, items):
    modules = {}
    for item in items:
        listed = SLOW_ELSEWHERE.get(item.path.name)
        if listed is not None:
            modules[item.path.name] = item.module
            if "*" in listed or item.originalname in listed:
                item.add_marker(pytest.mark.slow)
                continue
        if any(f in item.fixturenames for f in SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)
    # A listed name its file no longer defines is stale: say so.
    for name, module in modules.items():
        stale = sorted(t for t in SLOW_ELSEWHERE[name] - {"*"} if not hasattr(module, t))
        if stale:
            message = f"conftest.SLOW_ELSEWHERE: {name} has no {stale}"
            warnings.warn(message, pytest.PytestWarning, stacklevel=1)


@pytest.fixture
def smooth_relu6(monkeypatch):
    """ReLU6 replaced, for one test, by a smooth clip to [0, 6]
    (softplus(x) - softplus(x - 6)) wherever the package calls ``tf.nn.relu6``.

    For the tests that compare the gradients of two paths computing one function
    in different float orders. ReLU6's gradient jumps at 0 and 6: a
    pre-activation within the paths' rounding difference (about 1e-6) of a kink
    lands on either side now and then, and that single element moves a gradient
    far beyond float noise. Measured on the micro search space after one weight
    step: the paths' alpha gradients 0.6 % apart (beta's 3 % of its largest), and
    one op's input gradient 1 % apart for half of the 1e-6 input perturbations
    tried, 3e-7 for the rest; with the smooth clip, 1e-6 for all. Returns the
    list of calls, so a test can check that the smooth clip was the one run."""
    import tensorflow as tf

    calls = []

    def smooth(features, name=None):
        calls.append(name)
        x = tf.convert_to_tensor(features)
        return tf.nn.softplus(x) - tf.nn.softplus(x - tf.constant(6.0, x.dtype))

    monkeypatch.setattr(tf.nn, "relu6", smooth)
    return calls


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Any attempt to open a network connection fails the test; the label indexes
    that tfds sources cache by default go to the test's own directory."""
    import socket

    from densenas_tf.data import prepared_tfds

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(prepared_tfds, "DEFAULT_CACHE_DIR", tmp_path / "default_cache")


@pytest.fixture
def tiny_config():
    """A fresh, mutable copy of the tiny preset's config."""
    return copy.deepcopy(read_config_file(SPACES_DIR / "tiny.yaml"))


@pytest.fixture(scope="session")
def tiny_space():
    return load_space("tiny")


@pytest.fixture(scope="session")
def fashion_space():
    return load_space("fashion_mnist")


@pytest.fixture(scope="session")
def imagenet_space():
    return load_space("imagenet_mbv2")


# A small net of the fashion_mnist space's kind (widths 8 -> 24 -> 48), for the
# training and export tests.
SMALL_FASHION_NET = (
    "28x28x1 | stem:c16s1+k3e1>8 | 8>24:k3e3s2 | 24>48:k5e3s2[k3e6] | final:192 | classes:10"
)


@pytest.fixture(scope="session")
def trained_small_net(tmp_path_factory):
    """SMALL_FASHION_NET trained for 3 epochs on 4,000 real Fashion-MNIST
    images (tested on 1,000): (run_dir, metrics, data). A minute: its users
    are in the slow tier (SLOW_FIXTURES)."""
    from densenas_tf.data.sources import load_image_data
    from densenas_tf.space.arch_spec import ArchSpec
    from densenas_tf.train.trainer import TrainConfig, train

    spec = ArchSpec.from_block_string(SMALL_FASHION_NET, name="small")
    source = {"dataset": "fashion_mnist", "train_limit": 4000, "test_limit": 1000}
    data = load_image_data(**source)
    run_dir = tmp_path_factory.mktemp("train") / "run"
    config = TrainConfig(epochs=3, batch_size=64, lr=0.1)
    metrics = train(spec, data, run_dir, config, data_source=source, log=lambda line: None)
    return run_dir, metrics, data


def read_events(directory):
    """(tag -> {step: value}) of the scalars, and tag -> (description, kind, shapes)."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(
        str(directory), size_guidance={k: 0 for k in ("scalars", "tensors", "images")}
    )
    acc.Reload()
    scalars, meta = {}, {}
    for tag in acc.Tags()["tensors"]:
        if tag == "custom_scalars__config__":  # the layout page, tested on its own
            continue
        events = acc.Tensors(tag)
        metadata = acc.SummaryMetadata(tag)
        plugin = metadata.plugin_data.plugin_name
        meta[tag] = (metadata.summary_description, plugin)
        if plugin == "scalars":
            scalars[tag] = {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events}
        elif plugin == "images":
            meta[tag] += (
                [tf.io.decode_png(tf.make_ndarray(e.tensor_proto)[2]).numpy() for e in events],
            )
        elif plugin == "text":
            meta[tag] += ([tf.make_ndarray(e.tensor_proto).item().decode() for e in events],)
    return scalars, meta


def free_ports(count):
    """``count`` localhost ports free a moment ago (for localhost workers)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
