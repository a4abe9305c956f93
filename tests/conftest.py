"""Shared fixtures: the test suite runs offline on the CPU."""

import copy
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest

from densenas_tf.space.spaces import SPACES_DIR, load_space, read_config_file


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
    images (tested on 1,000): (run_dir, metrics, data)."""
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
