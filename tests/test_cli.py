"""The binaries' shared parts: the one error base class, the one place it is
caught, and the data flags in --help."""

import ast
import errno
import importlib
import inspect
import os
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


# ----- faults at the error boundary -----------------------------------------------------


def test_an_os_error_without_a_file_says_so_and_a_failed_write_names_its_file(
    tmp_path, monkeypatch
):
    text = cli.describe_os_error(OSError(errno.ENOSPC, "No space left on device"))
    assert text.startswith("No space left on device (the system named no file); free some")
    assert ":;" not in text
    from densenas_tf.core import files

    def full(self, data, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a failed write() raises it

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as caught:
        files.write_text_atomic(tmp_path / "report.json", "{}")
    assert caught.value.filename == str(tmp_path / "report.json")
    assert cli.describe_os_error(caught.value).startswith(
        f"No space left on device: {tmp_path / 'report.json'}; free some disk space"
    )
    assert list(tmp_path.iterdir()) == []


def _tf_error(kind: str, message: str):
    import tensorflow as tf

    return getattr(tf.errors, kind)(None, None, message)


@pytest.mark.parametrize(
    ("kind", "message", "expected"),
    [
        (
            "ResourceExhaustedError",
            "runs/s/ckpt/ckpt-8_temp/part-00000-of-00001.data-00000-of-00001.tempstate1; "
            "No space left on device",
            "error: No space left on device: runs/s/ckpt/ckpt-8_temp/part-00000-of-00001."
            "data-00000-of-00001.tempstate1; free some disk space",
        ),
        (
            "PermissionDeniedError",
            "{{function_node __wrapped__SaveV2_device_/job:localhost/replica:0/task:0/device:"
            "CPU:0}} /exports/model/1/variables; Permission denied [Op:SaveV2]",
            "error: Permission denied: /exports/model/1/variables; pick a directory you may",
        ),
        (
            "NotFoundError",
            "Unsuccessful TensorSliceReader constructor: Failed to find any matching files "
            "for runs/s/ckpt/ckpt-99",
            "error: No such file or directory: runs/s/ckpt/ckpt-99; check the path",
        ),
    ],
)
def test_tensorflows_file_system_errors_are_one_line_naming_the_path(
    kind, message, expected, capsys
):
    def failing(argv):
        raise _tf_error(kind, message)

    assert cli.main(failing)([]) == 1
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err


def test_tensorflow_errors_that_are_no_file_fault_stay_tracebacks():
    for kind, message in [
        ("ResourceExhaustedError", "OOM when allocating tensor with shape[4096,4096]"),
        ("NotFoundError", "Op type not registered 'Foo' in binary"),
    ]:
        error = _tf_error(kind, message)
        with pytest.raises(type(error)):
            cli.main(lambda argv, error=error: (_ for _ in ()).throw(error))([])


def test_a_real_tensorflow_write_into_forbidden_storage_names_the_path(tmp_path, capsys):
    import tensorflow as tf

    if os.geteuid() == 0:
        target = "/proc/densenas_forbidden/x.txt"  # root may write anywhere else
        fragment = "/proc/densenas_forbidden"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = str(locked / "sub" / "x.txt")
        fragment = str(locked)
    status = cli.main(lambda argv: tf.io.write_file(target, "data"))([])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err, err


def test_a_search_checkpoint_that_fails_mid_write_is_removed_and_named(tmp_path, capsys):
    import tensorflow as tf

    from densenas_tf.search.searcher import Searcher

    ckpt = tmp_path / "run" / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "ckpt-4.index").write_text("the last finished checkpoint")
    (ckpt / "ckpt-4.data-00000-of-00001").write_text("its data")

    class FullDisk:
        def save(self, checkpoint_number):
            temp = ckpt / f"ckpt-{checkpoint_number}_temp"
            temp.mkdir()
            (temp / "part-00000-of-00001.data-00000-of-00001").write_text("half")
            raise tf.errors.ResourceExhaustedError(
                None, None, f"{temp}/part-00000-of-00001.tempstate1; No space left on device"
            )

    searcher = Searcher.__new__(Searcher)  # only what _save uses
    searcher.run_dir = tmp_path / "run"
    searcher.manager = FullDisk()
    searcher.global_step = tf.Variable(8, dtype=tf.int64)
    searcher.elapsed_s = tf.Variable(0.0, dtype=tf.float64)
    searcher.open_stats = tf.Variable("")
    searcher._stats, searcher._mark = {}, 0.0
    assert cli.main(lambda argv: searcher._save())([]) == 1
    err = capsys.readouterr().err
    assert err == (
        "error: No space left on device while writing the checkpoint of global step 8 "
        f"(the last finished one was kept): {ckpt}; free some disk space (or pick a run "
        "directory on another disk) and re-run\n"
    )
    assert sorted(p.name for p in ckpt.iterdir()) == ["ckpt-4.data-00000-of-00001", "ckpt-4.index"]


def test_ctrl_c_is_one_line_with_where_the_run_stopped(capsys):
    from densenas_tf.core.runtime import Progress

    def interrupted(argv):
        progress = Progress("epoch 2/4 weight", 8, 2, stream=open(os.devnull, "w"))
        progress.update({})
        raise KeyboardInterrupt

    assert cli.main(interrupted)([]) == cli.INTERRUPTED_EXIT == 130
    assert capsys.readouterr().err == (
        "interrupted in epoch 2/4 weight at step 3/8; re-running the same command resumes it\n"
    )
    assert cli.main(lambda argv: (_ for _ in ()).throw(KeyboardInterrupt()), "no more")([]) == 130
    assert capsys.readouterr().err.endswith("; no more\n")


def test_absl_verbosity_is_the_users_when_given_else_warnings(monkeypatch):
    from absl import flags, logging

    before = logging.get_verbosity()
    try:
        logging.set_verbosity(logging.DEBUG)
        monkeypatch.setattr(flags.FLAGS["verbosity"], "present", 1)
        assert cli.main(lambda argv: logging.get_verbosity())([]) == logging.DEBUG
        monkeypatch.setattr(flags.FLAGS["verbosity"], "present", 0)
        assert cli.main(lambda argv: logging.get_verbosity())([]) == logging.WARNING
    finally:
        logging.set_verbosity(before)
