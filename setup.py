"""Installs densenas_tf with its runtime dependencies (and, with [test], the test tools)."""

from setuptools import find_packages, setup

setup(
    name="densenas-tf",
    version="0.1.0",
    description="DenseNAS (densely connected search space NAS) in TensorFlow 2 / Keras 3",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["densenas_tf", "densenas_tf.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "tensorflow-datasets>=4.9",
        "keras-tuner>=1.4",
        "numpy>=1.26",
        "absl-py>=2.1",
        "tensorboard>=2.21,<2.22",
        "tensorflow-serving-api>=2.21,<2.22",  # PredictionLog protos of the warm-up records
        "ai-edge-litert==2.3.0",  # pinned: the tested TFLite runtime
        "matplotlib>=3.8",
        "pyyaml>=6.0",
    ],
    # Pinned: a new linter release must not turn CI red.
    extras_require={"test": ["pytest==9.0.3", "pytest-xdist==3.8.0", "ruff==0.17.6"]},
)
