"""Shared fixtures: the test suite runs offline on the CPU."""

import copy
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest

from densenas_tf.search_space import SPACES_DIR, load_space, read_config_file


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
