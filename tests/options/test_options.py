"""Option files: presets load; errors name file, key path, expectation; overrides; docs in sync;
every number has a range."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import typing
from pathlib import Path

import pytest

import options
from models.edvr import EDVR
from options import OptionsError, dump, load, load_text
from options.docs import DOC_PATH, render
from options.parse import Registry, dataclass_fields
from options.schema import Options, edvr_parameter_count

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "options").glob("*/*.yml"))

MINIMAL = """
name: exp
network: {type: EDVR, num_feat: 32, with_tsa: false}
train:
  total_iter: 100
  scheduler: {periods: [100], restart_weights: [1]}
"""


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_preset_loads_and_round_trips(path):
    opts = load(path)
    assert load_text(dump(opts), "dumped") == opts


def test_presets_exist():
    names = {f"{p.parent.name}/{p.name}" for p in PRESETS}
    assert {"train/demo.yml", "test/demo.yml"} <= names


def test_minimal_file_gets_defaults():
    opts = load_text(MINIMAL)
    assert opts.network.kwargs["num_feat"] == 32 and opts.network.kwargs["num_frame"] == 5
    assert opts.train.optim.lr == 4e-4 and opts.train.optim.betas == (0.9, 0.99)
    assert opts.train.pixel_loss.reduction == "sum"
    assert opts.path.experiments_root == "experiments"


@pytest.mark.parametrize(
    "text,path,message",
    [
        ("name: x\nnetwork: {type: EDVR, num_fet: 3}", "network.num_fet", "did you mean 'num_feat'"),
        ("name: x\nnetwork: {type: EDVRR}", "network.type", "unknown type 'EDVRR'; expected one of EDVR"),
        ("name: x\nnetwork: {type: EDVR}\ntrian: {}", "trian", "did you mean 'train'"),
        (MINIMAL + "  optim: {lrr: 1}", "train.optim.lrr", "did you mean 'lr'"),
        (MINIMAL + "  ema_decay: high", "train.ema_decay", "expected a number, got 'high'"),
        (MINIMAL + "  amp: fp8", "train.amp", "expected one of 'none', 'bf16', 'fp16', 'auto', got 'fp8'"),
        (MINIMAL + "  channels_last: 1", "train.channels_last", "expected true or false, got 1"),
        (MINIMAL + "  optim: {betas: [0.9]}", "train.optim.betas", "expected a list of 2 values, got 1"),
        (MINIMAL + "  warmup_iter: -5", "train.warmup_iter", "expected a value >= 0, got -5"),
        ("name: x\nnetwork: {type: EDVR}\ntrain: {optim: {}}", "train.total_iter", "missing required key (expected int)"),
        ("network: {type: EDVR}", "name", "missing required key (expected str)"),
        ("name: x", "network", "missing required key"),
        ("name: x\nnetwork: {num_feat: 3}", "network.type", "missing required key (one of EDVR)"),
        ("name: x\nnetwork: {type: EDVR, num_feat: 6.5}", "network.num_feat", "expected an integer, got 6.5"),
        ("name: x\nnetwork: {type: EDVR}\ndatasets: {val: {name: a}}", "datasets.val", "expected a list"),
        ("name: x\nnetwork: {type: EDVR}\ndatasets: {val: [{name: a, dataset: {type: VideoTestDataset}}]}",
         "datasets.val[0].dataset.dataroot_lq", "missing required key"),
        ("name: x\nnetwork: {type: EDVR}\nval: {metrics: {lpips: {}}}", "val.metrics.lpips",
         "expected one of 'psnr', 'ssim'"),
    ],
)
def test_errors_name_the_key_path(text, path, message):
    with pytest.raises(OptionsError) as info:
        load_text(text, "exp.yml")
    assert info.value.key_path == path
    assert message in str(info.value) and str(info.value).startswith(f"exp.yml: {path}: ")


def test_yaml_style_exponent_is_a_number():
    opts = load_text(MINIMAL + "  optim: {lr: 2e-4}")  # YAML 1.1 reads 2e-4 as a string
    assert opts.train.optim.lr == 2e-4


def test_file_errors(tmp_path):
    with pytest.raises(OptionsError, match="cannot read the option file"):
        load(tmp_path / "missing.yml")
    (tmp_path / "latin1.yml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(OptionsError, match=r"latin1.yml: not UTF-8 text \(byte 9\)"):
        load(tmp_path / "latin1.yml")
    (tmp_path / "broken.yml").write_text("name: x\nnetwork: {type: EDVR\n")
    with pytest.raises(OptionsError, match=r"broken.yml: invalid YAML at line 3"):
        load(tmp_path / "broken.yml")
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    with pytest.raises(OptionsError, match="expected a mapping of option keys at the top level, got list"):
        load(tmp_path / "list.yml")


def test_overrides_are_typed_by_the_schema():
    opts = load_text(MINIMAL, "exp.yml", ["train.optim.lr=2e-4", "train.amp=bf16", "network.num_feat=16",
                                          "train.optim.betas=[0.8, 0.9]", "path.pretrain_network_g=w.pth"])
    assert opts.train.optim.lr == 2e-4 and opts.train.amp == "bf16"
    assert opts.network.kwargs["num_feat"] == 16 and opts.train.optim.betas == (0.8, 0.9)
    assert opts.path.pretrain_network_g == "w.pth"


def test_override_of_a_list_item():
    text = MINIMAL + "datasets:\n  val:\n    - {name: a, dataset: {type: VideoTestDataset, dataroot_lq: lq}}\n"
    opts = load_text(text, "exp.yml", ["datasets.val.0.name=REDS4"])
    assert opts.datasets.val[0].name == "REDS4"


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.optim.lrr=1", r"train.optim.lrr: unknown key .*did you mean 'lr'"),
        ("train.total_iter=many", r"train.total_iter: expected an integer, got 'many'"),
        ("train.optim", r"expected --set key.path=value"),
        ("datasets.val.3.name=x", r"expected a list index in \[0, 0\), got '3'"),
        ("name.first=x", r"cannot set a key inside 'exp'"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(OptionsError, match=message) as info:
        load_text(MINIMAL + "datasets: {val: []}\n", "exp.yml", [override])
    assert info.value.source == f"--set {override}"


def test_options_docs_are_up_to_date():
    assert DOC_PATH.read_text() == render(), "docs/options.md is stale: run python -m options.docs"


def test_dump_is_plain_yaml():
    text = dump(load_text(MINIMAL))
    assert "!!python" not in text and "network:\n  type: EDVR" in text
    assert options.to_plain(load_text(MINIMAL))["train"]["optim"]["betas"] == [0.9, 0.99]


def _registries(cls: type = Options) -> typing.Iterator[Registry]:
    for f in dataclass_fields(cls):
        for tp in _flatten(f.type):
            if isinstance(tp, Registry):
                yield tp
            elif dataclasses.is_dataclass(tp):
                yield from _registries(tp)


def _dataclasses(cls: type = Options) -> typing.Iterator[type]:
    yield cls
    for f in dataclass_fields(cls):
        for tp in _flatten(f.type):
            if dataclasses.is_dataclass(tp):
                yield from _dataclasses(tp)


def _flatten(tp) -> list:
    """The types and Registry markers inside a type hint (unions, lists, dicts, Annotated)."""
    if typing.get_origin(tp) is typing.Annotated:
        return [a for a in typing.get_args(tp)[1:] if isinstance(a, Registry)] or _flatten(typing.get_args(tp)[0])
    args = typing.get_args(tp)
    return [t for a in args for t in _flatten(a)] if args else [tp]


def test_every_number_has_a_range():
    sections = [(cls.__name__, dataclass_fields(cls)) for cls in _dataclasses()]
    sections += [(name, registry.fields(name)) for registry in _registries() for name in registry.classes]
    missing = [f"{section}.{f.name}" for section, fields in sections for f in fields
               if {int, float} & set(_flatten(f.type)) and not f.limits.is_bounded()]
    assert not missing, f"numeric options without both bounds: {missing}"


def test_registry_limits_name_real_arguments():
    for registry in _registries():
        arguments = {name for cls in registry.classes.values() for name in inspect.signature(cls).parameters}
        assert set(registry.limits) <= arguments, set(registry.limits) - arguments


@pytest.mark.parametrize("with_tsa,with_predeblur,hr_in", [(t, p, h) for t, p, h in itertools.product(
    [True, False], repeat=3) if p or not h])
def test_parameter_count_matches_the_network(with_tsa, with_predeblur, hr_in):
    for feat, groups, frames, extract, reconstruct, channels in [(8, 2, 3, 1, 1, 3), (12, 3, 7, 0, 2, 1)]:
        kwargs = {"num_in_ch": channels, "num_out_ch": channels, "num_feat": feat, "num_frame": frames,
                  "deformable_groups": groups, "num_extract_block": extract, "num_reconstruct_block": reconstruct,
                  "with_tsa": with_tsa, "with_predeblur": with_predeblur, "hr_in": hr_in}
        net = EDVR(**kwargs)
        assert edvr_parameter_count(kwargs) == sum(p.numel() for p in net.parameters())


def test_docs_show_ranges_and_rules():
    text = DOC_PATH.read_text()
    assert "| `num_feat` | int | `64` | [1, 1024] |" in text
    assert "| `train.ema_decay` | float | `0.0` | [0, 1) |" in text
    assert "- `num_feat` is a multiple of `deformable_groups`." in text
