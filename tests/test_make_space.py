"""A space made for the data (densenas_tf.space.make) and its binary, tools/make_space.py."""

import numpy as np
import pytest
import yaml
from helpers import run_tool

from densenas_tf.space.make import (
    MakeSpaceError,
    halvings,
    make_space_config,
    space_yaml,
    write_space,
)
from densenas_tf.space.spaces import SearchSpace, load_space


def _without_name(config):
    return {k: v for k, v in config.items() if k != "name"}


@pytest.mark.parametrize(
    ("size", "like"), [(28, "fashion_mnist"), (224, "imagenet_mbv2"), (16, "tiny")]
)
def test_the_presets_own_size_gives_the_preset_itself(size, like):
    preset = load_space(like)
    made = make_space_config(size, preset.input_shape[2], preset.num_classes, like)
    assert _without_name(made) == _without_name(preset.to_config())


@pytest.mark.parametrize(
    ("size", "stem_stride", "sizes"),
    [
        (40, 1, [40, 20, 10, 5]),
        (64, 1, [64, 32, 16, 8, 4]),
        (96, 1, [96, 48, 24, 12, 6]),
        (224, 2, [112, 56, 28, 14, 7]),
        (12, 1, [12, 6]),
    ],
)
def test_resolutions_and_down_sampling_fit_the_image_size(size, stem_stride, sizes):
    config = make_space_config(size, 3, 5, "fashion_mnist")
    space = SearchSpace.from_config(config)
    assert space.input_shape == (size, size, 3) and space.num_classes == 5
    assert space.stem.stride == stem_stride
    assert sorted({b.feature_map_size for b in space.blocks}, reverse=True) == sizes
    assert halvings(size) == len(sizes) - 1 + (stem_stride == 2)
    # One stage per resolution after the stem's, two at the last; the preset's ops.
    assert space.num_stages == len(sizes) + 1
    fashion = load_space("fashion_mnist")
    assert (space.head_ops, space.stacking_ops) == (fashion.head_ops, fashion.stacking_ops)
    assert space.final_conv_width == fashion.final_conv_width
    widths = [b.width for b in space.blocks]
    assert widths == sorted(set(widths)) and widths[0] == 8 and widths[-1] == 72


def test_a_larger_like_keeps_its_widths_stem_and_connections():
    space = SearchSpace.from_config(make_space_config(64, 3, 20, "imagenet_mbv2"))
    imagenet = load_space("imagenet_mbv2")
    assert space.blocks[0].width == 16 and space.blocks[-1].width == 384
    assert space.final_conv_width == 1984 and set(space.connections_per_stage) == {4}
    assert space.stem.conv_width == imagenet.stem.conv_width
    assert space.blocks[-1].stacking_layers == 0  # as imagenet's last stage


def test_a_small_like_gets_as_many_blocks_per_stage_as_it_has():
    space = SearchSpace.from_config(make_space_config(40, 1, 5, "tiny"))
    # tiny: 5 searchable blocks over 3 stages -> 2 a stage; 40 -> 20 -> 10 -> 5.
    assert [b.stage for b in space.blocks] == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [b.feature_map_size for b in space.blocks] == [40, 20, 20, 10, 10, 5, 5, 5, 5]
    assert [b.width for b in space.blocks] == [8, 12, 16, 20, 24, 28, 32, 36, 40]
    assert space.final_conv_width == load_space("tiny").final_conv_width


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((28, 1, 1), "1 class.*at least two classes"),
        ((28, 1, 0), "0 class.*at least two classes"),
        ((7, 1, 3), r"7x7 pixels are too small or odd to down-sample.*--input_size=16"),
        ((27, 3, 3), r"27x27 pixels are too small or odd.*--input_size=28 .*--image_size=28"),
        ((6, 1, 3), "too small"),
        ((28, 2, 3), "channels must be 1 .* or 3"),
    ],
)
def test_bad_requests_are_refused_in_one_line(args, message):
    with pytest.raises(MakeSpaceError, match=message) as err:
        make_space_config(*args)
    assert "\n" not in str(err.value)


def test_the_file_is_written_in_the_presets_layout_and_not_overwritten(tmp_path):
    config = make_space_config(40, 1, 5, "fashion_mnist", name="mine")
    path = tmp_path / "mine.yaml"
    space = write_space(path, config, comment="made for a test")
    text = path.read_text()
    assert text.startswith("# made for a test\nname: mine\n")
    assert "  feature_map_sizes: [40, 20, 20, 20, 10" in text
    assert yaml.safe_load(text) == config and space.to_config() == config
    assert space_yaml(config, "made for a test") == text
    with pytest.raises(MakeSpaceError, match="exists; pick another file or pass --overwrite"):
        write_space(path, make_space_config(32, 1, 5), overwrite=False)
    assert path.read_text() == text
    write_space(path, make_space_config(32, 1, 5, name="mine"), overwrite=True)
    assert load_space(path).input_shape == (32, 32, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.yaml"]  # no temporary left
    with pytest.raises(MakeSpaceError, match=r"must end in \.yaml"):
        write_space(tmp_path / "mine.txt", config)


def _write_folder(root, classes, size, mode="RGB", count=2):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for name in classes:
        for i in range(count):
            image = rng.integers(0, 256, (*size, 3 if mode == "RGB" else 1), dtype=np.uint8)
            path = root / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tf.io.encode_png(image).numpy())
    return root


@pytest.mark.slow
def test_the_binary_makes_a_space_for_an_image_folder(tmp_path):
    folder = _write_folder(tmp_path / "photos", ["cat", "dog", "fox"], (64, 64))
    out = tmp_path / "photos.yaml"
    result = run_tool(
        "make_space", "--like=fashion_mnist", f"--image_folder={folder}", f"--out={out}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    space = load_space(out)
    assert space.name == "photos" and space.input_shape == (64, 64, 3)
    assert space.num_classes == 3 and space.blocks[-1].feature_map_size == 4
    assert "(cat, dog, fox)" in out.read_text()
    assert result.stdout.startswith(f"wrote {out}: space 'photos', 64x64x3 images, 3 classes\n")
    assert "feature maps 64 -> 32 -> 16 -> 8 -> 4" in result.stdout
    # An existing file is refused (before any image is read); --overwrite replaces it,
    # here with the images resized to 32 and an explicit class count.
    again = run_tool("make_space", f"--image_folder={folder}", f"--out={out}")
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1] == (
        f"error: {out} exists; pick another file or pass --overwrite to replace it"
    )
    resized = run_tool(
        "make_space",
        f"--image_folder={folder}",
        "--input_size=32",
        "--like=imagenet_mbv2",
        f"--out={out}",
        "--overwrite",
    )
    assert resized.returncode == 0, resized.stderr[-2000:]
    assert load_space(out).input_shape == (32, 32, 3)
    assert f"--image_folder={folder} --image_size=32" in resized.stdout
    # Without a folder: the shape and classes from flags.
    explicit = tmp_path / "explicit.yaml"
    result = run_tool(
        "make_space",
        "--input_size=96",
        "--channels=1",
        "--num_classes=12",
        f"--out={explicit}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_space(explicit).input_shape == (96, 96, 1)
    assert load_space(explicit).num_classes == 12


@pytest.mark.slow
def test_the_binary_refuses_one_class_small_images_and_missing_shape(tmp_path):
    one = _write_folder(tmp_path / "one", ["cat"], (32, 32))
    result = run_tool("make_space", f"--image_folder={one}", f"--out={tmp_path / 'a.yaml'}")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the image folder {one} holds 1 class ('cat')")
    assert "at least two classes" in last
    small = _write_folder(tmp_path / "small", ["a", "b"], (7, 7), mode="L")
    result = run_tool("make_space", f"--image_folder={small}", f"--out={tmp_path / 'b.yaml'}")
    assert result.returncode == 1
    assert "7x7 pixels are too small or odd to down-sample" in result.stderr.splitlines()[-1]
    tall = _write_folder(tmp_path / "tall", ["a", "b"], (40, 32))
    result = run_tool("make_space", f"--image_folder={tall}", f"--out={tmp_path / 'c.yaml'}")
    assert result.returncode == 1
    assert "are 40x32 pixels; a space takes square images" in result.stderr
    result = run_tool("make_space", "--input_size=32", f"--out={tmp_path / 'd.yaml'}")
    assert result.returncode != 0 and "--channels --num_classes" in result.stderr
    assert not list(tmp_path.glob("*.yaml"))
