"""The search config: every field checked against its type and range, errors naming it."""

import pytest

from densenas_tf.core.errors import DenseNASError
from densenas_tf.search.config import ConfigError, SearchConfig, load_search_config


def _error(overrides, name=None) -> str:
    with pytest.raises(ConfigError) as err:
        load_search_config(name, overrides)
    assert isinstance(err.value, DenseNASError)
    return str(err.value)


@pytest.mark.parametrize("limit", [0, -1])
def test_train_limit_of_zero_or_below_is_refused_and_null_means_all(limit):
    assert _error([f"data.train_limit={limit}"]) == (
        f"defaults with the overrides data.train_limit={limit}: data.train_limit must be "
        f"an integer >= 1, or null (all images), got {limit}"
    )
    assert load_search_config(None).data.train_limit is None
    assert load_search_config(None, ["data.train_limit=null"]).data.train_limit is None
    assert load_search_config(None, ["data.train_limit=100"]).data.train_limit == 100


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        (
            "data.train_limit=ten",
            "data.train_limit must be an integer >= 1, or null (all images), got 'ten'",
        ),
        ("seed=-1", "seed must be an integer in [0, 4294967295], got -1"),
        ("seed=4294967296", "seed must be an integer in [0, 4294967295], got 4294967296"),
        ("batch_size=abc", "batch_size must be an integer >= 1, got 'abc'"),
        ("batch_size=12.5", "batch_size must be an integer >= 1, got 12.5"),
        ("batch_size=true", "batch_size must be an integer >= 1, got True"),
        ("epochs=0", "epochs must be an integer >= 1, got 0"),
        ("weight_lr=NaN", "weight_lr must be a finite number > 0, got nan"),
        ("weight_lr_min=-1e-05", "weight_lr_min must be a finite number >= 0, got -1e-05"),
        ("weight_momentum=1", "weight_momentum must be a finite number in [0, 1), got 1"),
        ("arch_beta2=1.5", "arch_beta2 must be a finite number in [0, 1), got 1.5"),
        (
            "data.arch_fraction=1",
            "data.arch_fraction must be a finite number in (0, 1), got 1",
        ),
        ("data.dataset=cifar", "data.dataset must be one of ['fashion_mnist'], got 'cifar'"),
        ("latency_check=1", "latency_check must be true or false, got 1"),
        ("objective.lam=abc", "objective.lam must be a finite number, got 'abc'"),
        (
            "objective.lamda=1",
            "unknown field 'objective.lamda'; the fields are "
            "['beta', 'gain', 'kind', 'lam', 'lam_max', 'lam_min', 'min_fraction', 'steer', 'target_ms', "
            "'tau_ms']",
        ),
        (
            "data=3",
            "data must be a mapping with the fields "
            "['arch_fraction', 'augment', 'cache_dir', 'class_list', 'data_dir', 'dataset', "
            "'image_folder', 'image_size', 'stats_limit', 'tfds_data_dir', 'tfds_name', "
            "'tfrecord_dir', 'train_limit'], got 3",
        ),
    ],
)
def test_malformed_or_out_of_range_values_name_field_value_and_rule(override, problem):
    assert _error([override]) == f"defaults with the overrides {override}: {problem}"


def test_a_file_names_itself_and_its_overrides(tmp_path):
    preset = load_search_config("fashion_mnist_quick")
    assert preset.data.train_limit == 9600 and preset.seed == 0
    message = _error(["seed=-1"], "fashion_mnist_quick")
    assert message.endswith(
        "fashion_mnist_quick.yaml with the overrides seed=-1: "
        "seed must be an integer in [0, 4294967295], got -1"
    )
    path = tmp_path / "search.yaml"
    path.write_text("weight_lr_min: 1e-5\n")  # YAML 1.1 reads this as the string '1e-5'
    assert _error([], str(path)) == (
        f"{path}: weight_lr_min must be a finite number >= 0, got '1e-5'; write it as a "
        "number, not as text (YAML reads 1e-5 as text: write 1.0e-5)"
    )
    path.write_text("data: {train_limit: 0}\n")
    assert _error([], str(path)) == (
        f"{path}: data.train_limit must be an integer >= 1, or null (all images), got 0"
    )


def test_direct_construction_is_checked_too():
    with pytest.raises(ConfigError) as err:
        SearchConfig(batch_size="abc")
    assert str(err.value) == "batch_size must be an integer >= 1, got 'abc'"
    with pytest.raises(ConfigError) as err:
        SearchConfig(epochs=3, warmup_epochs=4)
    assert str(err.value) == "warmup_epochs must be in [0, epochs=3], got 4"
