"""tools/describe.py: one JSON object on stdout, errors on stderr with a non-zero exit."""

import json

import pytest
from helpers import run_tool

from densenas_tf.space.describe import supernet_weight_params
from densenas_tf.space.spaces import load_space


def _keras_mult_adds(model) -> int:
    """Multiply-adds per image of a built model's convolutions and dense layers:
    each output pixel of a conv costs its kernel's size (a depthwise kernel is
    k x k x C x 1), a dense layer its kernel's size."""
    import numpy as np

    total = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        pixels = int(np.prod(layer.output.shape[1:-1]))  # 1 for a dense layer on vectors
        total += pixels * int(np.prod(kernel.shape))
    return total


def test_describe_space():
    result = run_tool("describe", "--space=imagenet_mbv2")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["num_edges"] == 54 and len(data["edges"]) == 54
    assert [0, 1, 2] in data["edges"] and [16, 17, 1] in data["edges"]
    assert data["arch_params"] == 51 * 6 + 39 * 7 + 54


@pytest.mark.slow
def test_describe_space_counts_the_supernet_keras_builds(tiny_space):
    import numpy as np

    from densenas_tf.nn.supernet import SuperNet

    result = run_tool("describe", "--space=tiny")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    net = SuperNet.from_space(tiny_space)

    def size(variables):
        return sum(int(np.prod(v.shape)) for v in variables)

    assert data["weight_params"] == size(net.weight_variables)
    assert data["arch_params"] == size(net.arch_variables)
    assert data["num_edges"] == net.beta.shape[0] == len(data["edges"])


@pytest.mark.slow
def test_describe_arch_with_overrides():
    import dataclasses

    import keras

    from densenas_tf.nn.models import build_model
    from densenas_tf.space.arch_spec import load_arch

    result = run_tool("describe", "--arch=densenas_c", "--input_size=32", "--num_classes=10")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["input_shape"] == [32, 32, 3]
    spec = dataclasses.replace(load_arch("densenas_c"), input_shape=(32, 32, 3), num_classes=10)
    assert data["block_string"] == spec.to_block_string()
    assert data["block_string"].startswith("32x32x3 | ")
    assert data["block_string"].endswith("classes:10")
    model = build_model(spec)
    assert model.output_shape == (None, 10)
    trainable = sum(int(keras.ops.size(v)) for v in model.trainable_weights)
    assert (data["params"], data["total_params"]) == (trainable, model.count_params())
    assert data["mult_adds"] == _keras_mult_adds(model)


def test_describe_errors_go_to_stderr():
    result = run_tool("describe", "--arch=no_such_net")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "unknown architecture 'no_such_net'" in result.stderr
    result = run_tool("describe")
    assert result.returncode != 0 and "exactly one of --space or --arch" in result.stderr


@pytest.mark.slow
def test_supernet_weight_params_match_keras(tiny_space):
    import numpy as np

    from densenas_tf.nn.supernet import SuperNet

    net = SuperNet.from_space(tiny_space)
    counted = sum(int(np.prod(v.shape)) for v in net.weight_variables)
    assert counted == supernet_weight_params(tiny_space)


def test_uniform_sampled_mult_adds_equals_the_net_when_there_is_one_choice():
    from densenas_tf.space.arch_spec import count_costs
    from densenas_tf.space.derive import arch_from_path
    from densenas_tf.space.describe import uniform_sampled_mult_adds
    from densenas_tf.space.spaces import SearchSpace

    config = load_space("fixed_block_mbv2").to_config()
    config["head_ops"] = ["mbconv_k5_e6"]
    config["stacking_ops"] = ["mbconv_k3_e3"]
    space = SearchSpace.from_config(config)
    (path,) = space.enumerate_paths()
    spec = arch_from_path(
        space,
        path,
        {row: 0 for row in range(len(space.head_edges))},
        {row: 0 for row in range(len(space.stacking_layers))},
    )
    assert uniform_sampled_mult_adds(space) == count_costs(spec).mult_adds
