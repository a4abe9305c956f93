"""The binaries' shared parts: the one error base class, the one place it is
caught, and the data flags in --help."""

import ast
import errno
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from helpers import run_python

import densenas_tf
from densenas_tf import cli
from densenas_tf.core.errors import DenseNASError
from densenas_tf.exporting.export import ExportCheckError
from densenas_tf.search.searcher import SearchDivergedError


def _error_classes():
    for info in pkgutil.walk_packages(densenas_tf.__path__, "densenas_tf."):
        if info.name.startswith("densenas_tf.commands."):
            continue  # a command defines its flags on import: one per process (see below)
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, Exception)
                and value.__module__ == module.__name__
            ):
                yield name, value


def test_every_error_class_of_the_package_derives_from_the_base():
    classes = dict(_error_classes())
    assert {"DataError", "ConfigError", "LatencyTableError", "RunDirError", "TrainError"} <= set(
        classes
    )
    assert [n for n, c in classes.items() if not issubclass(c, DenseNASError)] == []


def test_every_error_class_of_a_command_derives_from_the_base():
    """Read from the command modules' source (importing two would define their
    flags twice): each exception class derives from a library error class or
    from another of its own file's."""
    library = {name for name, cls in _error_classes() if issubclass(cls, DenseNASError)}
    library.add("DenseNASError")
    commands = Path(densenas_tf.__file__).parent / "commands"
    for path in sorted(commands.glob("*.py")):
        own = set()
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [ast.unparse(base).split(".")[-1] for base in node.bases]
            if not any(b.endswith(("Error", "Exception")) for b in bases):
                continue
            assert any(b in library | own for b in bases), f"{path.name}: {node.name} {bases}"
            own.add(node.name)


def test_main_prints_one_line_and_returns_the_error_exit_code(capsys):
    def raising(error):
        return cli.main(lambda argv: (_ for _ in ()).throw(error))

    assert raising(DenseNASError("bad thing; do this"))([]) == 1
    assert capsys.readouterr().err == "error: bad thing; do this\n"
    assert raising(SearchDivergedError("nan"))([]) == 3
    assert raising(ExportCheckError("mismatch"))([]) == 2
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/ckpt")
    assert raising(full)([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "No space left on device: /runs/x/ckpt; free some disk" in err
    assert cli.main(lambda argv: 7)([]) == 7  # a normal return passes through


def test_main_leaves_bugs_alone():
    with pytest.raises(ZeroDivisionError):
        cli.main(lambda argv: 1 / 0)([])


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.EROFS, "pick a writable directory"),
        (errno.EACCES, "fix its permissions"),
        (errno.ENOENT, "check the path"),
    ],
)
def test_os_errors_name_the_file_and_the_fix(code, fix):
    text = cli.describe_os_error(OSError(code, "reason", "/some/file"))
    assert text.startswith("reason: /some/file; ") and fix in text


@pytest.mark.parametrize(
    "binary", ["tools/train.py", "export/export_saved_model.py", "export/export_tflite.py"]
)
def test_help_lists_the_data_flags(binary):
    result = run_python(binary, "--help", timeout=300)
    assert "Try --helpfull" in result.stdout, result.stderr[-2000:]  # absl's --help (exit 1)
    for name in cli.DATA_FLAGS:
        assert f"--{name}" in result.stdout, name


def test_the_atomic_writer_replaces_files_and_directories_and_keeps_them_on_failure(tmp_path):
    from densenas_tf.core.files import replace_atomic

    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with replace_atomic(target) as tmp:
            tmp.mkdir()
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("export failed")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing else left behind
    assert (target / "old.txt").read_text() == "old"
    with replace_atomic(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    model = tmp_path / "model.keras"
    with replace_atomic(model, keep_suffix=True) as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_text("weights")
    assert model.read_text() == "weights"
