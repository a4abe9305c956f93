"""ArchSpec: JSON and block-string round trips, validation, and analytic costs."""

import json

import pytest

from densenas_tf.space.arch_spec import (
    SCHEMA_VERSION,
    ArchSpec,
    ArchSpecError,
    count_costs,
    list_reference_archs,
    load_arch,
)

# Published multiply-adds at 224x224, 1000 classes (SPEC section 6; MobileNetV2 paper).
PUBLISHED_MULT_ADDS_M = {
    "densenas_a": 251,
    "densenas_b": 314,
    "densenas_c": 361,
    "mobilenet_v2": 300,
}


def test_reference_nets_are_shipped():
    assert set(PUBLISHED_MULT_ADDS_M) <= set(list_reference_archs())


@pytest.mark.parametrize("name", sorted(PUBLISHED_MULT_ADDS_M))
def test_reference_mult_adds_match_published_within_one_percent(name):
    cost = count_costs(load_arch(name))
    published = PUBLISHED_MULT_ADDS_M[name] * 1e6
    assert abs(cost.mult_adds - published) / published < 0.01


def test_mobilenet_v2_params_are_exact():
    # keras.applications.MobileNetV2(weights=None).count_params() == 3,538,984;
    # 3,504,872 of them trainable.
    cost = count_costs(load_arch("mobilenet_v2"))
    assert cost.total_params == 3_538_984
    assert cost.params == 3_504_872


def test_densenas_c_matches_spec_rows():
    spec = load_arch("densenas_c")
    assert [(b.in_width, b.width, b.stride) for b in spec.blocks] == [
        (16, 24, 2), (24, 48, 2), (48, 72, 2), (72, 128, 1), (128, 160, 2), (160, 176, 1), (176, 384, 1),
    ]  # fmt: skip
    assert spec.blocks[4].stacking_ops == ("mbconv_k7_e3", "mbconv_k5_e6", "mbconv_k7_e3")
    assert spec.final_conv_width == 1984 and spec.num_classes == 1000


@pytest.mark.parametrize("name", ["densenas_a", "densenas_b", "densenas_c", "mobilenet_v2"])
def test_json_round_trip(name, tmp_path):
    spec = load_arch(name)
    path = tmp_path / "arch.json"
    spec.save(path)
    again = ArchSpec.from_json(path.read_text())
    assert again == spec
    assert again.provenance == spec.provenance
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION


@pytest.mark.parametrize("name", ["densenas_a", "densenas_b", "densenas_c", "mobilenet_v2"])
def test_block_string_round_trip(name):
    spec = load_arch(name)
    text = spec.to_block_string()
    assert "\n" not in text
    again = ArchSpec.from_block_string(text, name=spec.name, provenance=spec.provenance)
    assert again == spec
    assert again.to_block_string() == text


def test_block_string_form():
    text = load_arch("densenas_a").to_block_string()
    assert text.startswith("224x224x3 | stem:c16s2+k3e1>16 | 16>24:k3e3s2 | 24>48:k7e6s2[k7e3]")
    assert text.endswith("176>384:k5e6s1 | final:1984 | classes:1000")


def test_wrong_schema_version_is_refused():
    data = load_arch("densenas_c").to_dict()
    data["schema_version"] = 99
    with pytest.raises(ArchSpecError, match="schema_version 99 is not supported"):
        ArchSpec.from_dict(data)


def test_unknown_op_is_refused():
    data = load_arch("densenas_c").to_dict()
    data.pop("block_string")
    data["blocks"][2]["stacking_ops"][0] = "mbconv_k9_e9"
    with pytest.raises(ArchSpecError, match=r"blocks\[2\].*unknown op 'mbconv_k9_e9'"):
        ArchSpec.from_dict(data)


def test_broken_width_chain_is_refused():
    data = load_arch("densenas_c").to_dict()
    data.pop("block_string")
    data["blocks"][3]["in_width"] = 64
    with pytest.raises(
        ArchSpecError, match=r"blocks\[3\].in_width is 64 but the previous block outputs 72"
    ):
        ArchSpec.from_dict(data)


def test_block_string_disagreeing_with_blocks_is_refused():
    data = load_arch("densenas_c").to_dict()
    data["blocks"][0]["head_op"] = "mbconv_k5_e6"
    with pytest.raises(ArchSpecError, match="block_string disagrees"):
        ArchSpec.from_dict(data)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("224x224 | stem:c16s2+k3e1>16 | final:1984 | classes:1000", "HxWxC"),
        ("224x224x3 | stem:c16s2+k3e1>16 | 16>24:k3e6 | final:1984 | classes:1000", "block"),
        ("224x224x3 | stem:c16s2+k3e1>16 | 16>24:k3e8s2 | final:1984 | classes:1000", "unknown op"),
        ("224x224x3 | final:1984", "parts"),
    ],
)
def test_malformed_block_strings(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        ArchSpec.from_block_string(text)


def test_unknown_arch_names_the_shipped_nets():
    with pytest.raises(ArchSpecError, match="shipped nets are"):
        load_arch("densenas_z")


def test_atomic_save_leaves_no_temp_files(tmp_path):
    spec = load_arch("densenas_a")
    spec.save(tmp_path / "a.json")
    spec.save(tmp_path / "a.json")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
