"""Installs densenas_tf with its runtime dependencies (and, with [test], the test tools).

The presets and shipped latency tables of configs/ go into the package as
``densenas_tf/_configs`` (``densenas_tf.space.spaces.CONFIG_DIR`` finds them
there in an installed package, and in configs/ in a checkout), and every binary
is a console script ``densenas-*`` running ``densenas_tf.commands.<name>:run``.
"""

from setuptools import find_packages, setup

# Console script -> command module of densenas_tf.commands (each has run()).
COMMANDS = {
    "densenas-search": "search",
    "densenas-derive": "derive",
    "densenas-train": "train",
    "densenas-evaluate": "evaluate",
    "densenas-export-saved-model": "export_saved_model",
    "densenas-export-tflite": "export_tflite",
    "densenas-make-space": "make_space",
    "densenas-build-lut": "build_lut",
    "densenas-import-lut": "import_lut",
    "densenas-lut-report": "lut_report",
    "densenas-describe": "describe",
    "densenas-main-job": "main_job",
    "densenas-compare": "compare",
    "densenas-rank-check": "rank_check",
    "densenas-stability": "stability",
    "densenas-budget-sweep": "budget_sweep",
    "densenas-time-nets": "time_nets",
    "densenas-write-tfrecords": "write_tfrecords",
}

setup(
    name="densenas-tf",
    version="0.1.0",
    description="DenseNAS (densely connected search space NAS) in TensorFlow 2 / Keras 3",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[*find_packages(include=["densenas_tf", "densenas_tf.*"]), "densenas_tf._configs"],
    package_dir={"densenas_tf._configs": "configs"},
    package_data={"densenas_tf._configs": ["*/*.yaml", "*/*.json"]},
    entry_points={
        "console_scripts": [
            f"{script} = densenas_tf.commands.{module}:run" for script, module in COMMANDS.items()
        ]
    },
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
    # Pinned: a new linter release must not turn CI red. wheel: tests/test_packaging.py
    # builds a wheel offline with the environment's own setuptools (Debian's 66 has no
    # bdist_wheel of its own).
    extras_require={
        "test": ["pytest==9.0.3", "pytest-xdist==3.8.0", "ruff==0.17.6", "wheel==0.45.1"]
    },
)
