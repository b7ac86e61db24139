"""Property-based fuzzing of option files: any mutation of a preset, and any --set override,
either loads or raises OptionsError with a key path, naming the file or the override; never
another exception, never a traceback from deep inside."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from options import OptionsError, load, load_text
from options.parse import clip

PRESETS = sorted((Path(__file__).resolve().parents[2] / "options").glob("*/*.yml"))
PRESET_DATA = [yaml.safe_load(p.read_text()) for p in PRESETS]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


def paths(node, prefix=()):
    """Every key path of a nested dict/list structure."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, prefix + (index,))


def mutate(data, path, action, value):
    data = copy.deepcopy(data)
    if not path:
        return value if action == "replace" else data
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent[last], dict):
        parent[last]["unknown_key_x"] = value
    elif action == "nest":
        parent[last] = {"deep": parent[last]}
    return data


def assert_loads_or_option_error(text: str) -> None:
    try:
        load_text(text, "fuzz.yml")
    except OptionsError as error:
        assert str(error).startswith("fuzz.yml")
        assert isinstance(error.key_path, str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_presets_load_or_raise_an_options_error(data):
    preset = data.draw(st.sampled_from(PRESET_DATA))
    path = data.draw(st.sampled_from(list(paths(preset))))
    action = data.draw(st.sampled_from(["replace", "delete", "add", "nest"]))
    value = data.draw(values)
    mutated = mutate(preset, path, action, value)
    assert_loads_or_option_error(yaml.safe_dump(mutated, allow_unicode=True))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_overrides_load_or_raise_an_options_error_naming_the_source(data):
    index = data.draw(st.sampled_from(range(len(PRESETS))))
    known = [".".join(str(key) for key in path) for path in paths(PRESET_DATA[index]) if path]
    key = data.draw(st.one_of(st.sampled_from(known), st.text(max_size=20)))
    text = data.draw(st.one_of(st.text(max_size=20), values.map(lambda v: yaml.safe_dump(v, default_flow_style=True))))
    override = data.draw(st.sampled_from([f"{key}={text}", key, text]))
    try:
        load(PRESETS[index], [override])
    except OptionsError as error:
        assert error.source in (str(PRESETS[index]), f"--set {clip(override)}")
        assert len(str(error)) < 1500


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.yml"
    path.write_bytes(raw)
    try:
        load(path)
    except OptionsError as error:
        assert str(path) in str(error)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes(text):
    assert_loads_or_option_error(text)


def test_deeply_nested_yaml_is_an_options_error():
    deep = "name: " + "[" * 5000 + "]" * 5000
    assert_loads_or_option_error(deep)
    deep_map = "network:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(200)) + "  " * 201 + "v: 1\n"
    assert_loads_or_option_error(deep_map)


def test_wrong_types_in_every_section():
    for text in ["name: x\nnetwork: 5", "name: x\nnetwork: {type: EDVR}\ndatasets: 7",
                 "name: x\nnetwork: {type: EDVR}\ntrain: [1, 2]", "name: x\nnetwork: {type: EDVR}\nval: {metrics: 3}",
                 "name: x\nnetwork: {type: [EDVR]}", "name: x\nnetwork: {type: EDVR, num_feat: 1e400}",
                 "name: 2020-01-01\nnetwork: {type: EDVR}", "name: !!binary aGk=\nnetwork: {type: EDVR}",
                 "name: x\nnetwork: {type: EDVR}\nmanual_seed: 99999999999999999999999999",
                 "name: x\nnetwork: {type: EDVR}\nmanual_seed: " + "9" * 5000, "name: 2020-13-45",
                 "name: x\nnetwork: {type: EDVR}\ntrain: {total_iter: 1, optim: {lr: " + "9" * 400 + "}}",
                 "name: x\nnetwork: &n {type: EDVR, x: *n}", "name: x\nnetwork: {type: EDVR}\nname: y"]:
        assert_loads_or_option_error(text)
