"""The search space: presets, the dense graph, and the rules a config must keep."""

import json

import pytest

from densenas_tf.space.spaces import SearchSpace, SearchSpaceError, list_presets, load_space


def test_imagenet_graph_matches_the_paper(imagenet_space):
    space = imagenet_space
    assert len(space.edges) == 54
    assert space.out_degrees() == (1, 3, 4, 4, 3, 4, 4, 3, 4, 4, 3, 4, 4, 3, 3, 2, 1)
    assert [b.width for b in space.blocks] == [
        16, 24, 32, 40, 48, 56, 64, 72, 96, 112, 128, 160, 176, 192, 320, 352, 384,
    ]  # fmt: skip
    # Only blocks 14-16 feed the final 1x1 conv.
    assert [e.src for e in space.final_edges] == [14, 15, 16]
    assert len(space.head_edges) == 51
    assert len(space.stacking_layers) == 13 * 3
    strides = {(e.src, e.dst): e.stride for e in space.edges}
    assert strides[(0, 1)] == 2 and strides[(1, 2)] == 2 and strides[(2, 3)] == 1
    assert strides[(7, 8)] == 1 and strides[(10, 11)] == 2 and strides[(13, 14)] == 1


def test_every_path_visits_each_stage(imagenet_space):
    for path in imagenet_space.enumerate_paths()[:500]:
        stages = {imagenet_space.blocks[i].stage for i in path[:-1]}
        assert stages == set(range(imagenet_space.num_stages))


def test_fixed_block_space_is_a_chain():
    space = load_space("fixed_block_mbv2")
    assert [b.width for b in space.blocks] == [16, 24, 32, 64, 96, 160, 320]
    assert space.out_degrees() == (1,) * 7
    assert len(space.enumerate_paths()) == 1
    fashion = load_space("fixed_block_fashion")
    assert fashion.out_degrees() == (1,) * 6 and len(fashion.enumerate_paths()) == 1
    dense = load_space("fashion_mnist")
    assert (fashion.stem, fashion.head_ops, fashion.stacking_ops) == (
        dense.stem,
        dense.head_ops,
        dense.stacking_ops,
    )


def test_presets_are_listed_and_load():
    presets = list_presets()
    for name in (
        "imagenet_mbv2",
        "fashion_mnist",
        "fixed_block_mbv2",
        "fixed_block_fashion",
        "tiny",
    ):
        assert name in presets
        assert load_space(name).name == name


def test_fashion_space_is_dense(fashion_space):
    assert fashion_space.input_shape == (28, 28, 1)
    assert fashion_space.num_classes == 10
    assert len(fashion_space.enumerate_paths()) > 100
    assert max(fashion_space.out_degrees()) >= 3


def test_config_round_trips_and_fingerprint_is_stable(tiny_space):
    again = SearchSpace.from_config(json.loads(json.dumps(tiny_space.to_config())))
    assert again == tiny_space
    assert again.fingerprint() == tiny_space.fingerprint()
    changed = tiny_space.to_config()
    changed["final_conv_width"] += 1
    assert SearchSpace.from_config(changed).fingerprint() != tiny_space.fingerprint()


def test_space_is_immutable(tiny_space):
    with pytest.raises(AttributeError):
        tiny_space.num_classes = 3


def test_unknown_preset_names_the_presets():
    with pytest.raises(SearchSpaceError, match="presets are"):
        load_space("no_such_space")


# ----- bad configs: each names the field and the rule -----------------------------
def _reject(config, *fragments):
    with pytest.raises(SearchSpaceError) as info:
        SearchSpace.from_config(config)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_unknown_op_name(tiny_config):
    tiny_config["stacking_ops"] = ["mbconv_k3_e3", "mbconv_k9_e6"]
    _reject(tiny_config, "stacking_ops", "unknown op 'mbconv_k9_e6'", "known ops")


def test_unknown_stem_op(tiny_config):
    tiny_config["stem"]["op"] = "conv_k3"
    _reject(tiny_config, "stem.op", "unknown op 'conv_k3'")


def test_empty_op_set(tiny_config):
    tiny_config["head_ops"] = []
    _reject(tiny_config, "head_ops", "is empty")


def test_skip_is_not_a_head_op(tiny_config):
    tiny_config["head_ops"] = ["mbconv_k3_e3", "skip"]
    _reject(tiny_config, "head_ops", "cannot hold 'skip'")


def test_m_below_one(tiny_config):
    tiny_config["connections_per_stage"] = [2, 0, 2, 2]
    _reject(tiny_config, "connections_per_stage", "stage 1 has m = 0", "at least 1")


def test_m_list_must_cover_every_stage(tiny_config):
    tiny_config["connections_per_stage"] = [2, 2]
    _reject(tiny_config, "connections_per_stage", "one m per stage")


def test_feature_map_ratio_other_than_one_or_two(tiny_config):
    tiny_config["blocks"]["feature_map_sizes"] = [16, 8, 8, 2, 2, 2]
    _reject(tiny_config, "blocks.feature_map_sizes", "feature-map ratio is 4", "must be 1 or 2")


def test_sizes_within_a_stage_must_agree(tiny_config):
    tiny_config["blocks"]["feature_map_sizes"] = [16, 8, 8, 8, 4, 4]
    _reject(tiny_config, "blocks.feature_map_sizes", "blocks 3 and 4 share stage 2")


def test_block_that_no_path_reaches(tiny_config):
    # Stage numbers jump from 1 to 3: block 3 cannot be fed by any earlier block.
    tiny_config["blocks"]["stages"] = [0, 1, 1, 3, 3, 4]
    tiny_config["connections_per_stage"] = [2, 2, 2, 2, 2]
    _reject(
        tiny_config, "blocks.stages", "no path reaches block 3", "number the stages without gaps"
    )


def test_final_node_that_no_path_reaches(tiny_config):
    # The gap sits before the last stage: nothing reaches the final node.
    tiny_config["blocks"]["stages"] = [0, 1, 1, 2, 2, 4]
    tiny_config["connections_per_stage"] = [2, 2, 2, 2, 2]
    _reject(tiny_config, "unreachable: block 5, final node")


def test_list_lengths_disagree(tiny_config):
    tiny_config["blocks"]["stacking_layers"] = [0, 1, 1]
    _reject(tiny_config, "blocks", "list lengths disagree")


def test_negative_layer_count(tiny_config):
    tiny_config["blocks"]["stacking_layers"] = [0, 1, -1, 1, 1, 0]
    _reject(tiny_config, "blocks.stacking_layers", "block 2 has -1 layers", "cannot be negative")


def test_stem_block_has_no_stacking_layers(tiny_config):
    tiny_config["blocks"]["stacking_layers"] = [2, 1, 1, 1, 1, 0]
    _reject(tiny_config, "blocks.stacking_layers", "block 0")


def test_input_size_inconsistent_with_feature_maps(tiny_config):
    tiny_config["input_shape"] = [32, 32, 1]
    _reject(
        tiny_config,
        "blocks.feature_map_sizes",
        "must be 32 for input size 32",
        "got 16",
        "inconsistent",
    )


def test_duplicate_width(tiny_config):
    tiny_config["blocks"]["widths"] = [8, 12, 16, 16, 32, 40]
    _reject(tiny_config, "blocks.widths", "width 16 is duplicated", "unique")


def test_non_positive_width(tiny_config):
    tiny_config["blocks"]["widths"] = [8, 12, 0, 24, 32, 40]
    _reject(tiny_config, "blocks.widths", "block 2 has width 0", "positive")


def test_unknown_field(tiny_config):
    tiny_config["widths"] = [1]
    _reject(tiny_config, "widths", "unknown field")


def test_missing_field(tiny_config):
    del tiny_config["num_classes"]
    _reject(tiny_config, "num_classes", "is missing")


def test_bad_config_file_names_the_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("name: x\ninput_shape: [28, 28, 1\n")
    with pytest.raises(SearchSpaceError, match=r"space\.yaml: cannot parse"):
        load_space(path)
