"""Weights files: BasicSR formats, strict mismatch reports, safe loading, atomic saving."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from models import checkpoint as ckpt
from models.checkpoint import CheckpointError, load_network, save_network
from models.edvr import EDVR

TINY = dict(num_feat=16, deformable_groups=4, num_extract_block=1, num_reconstruct_block=1)


def tiny(seed: int, **kwargs) -> EDVR:
    torch.manual_seed(seed)
    return EDVR(**TINY, **kwargs)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_with_params_and_ema(tmp_path):
    net, ema = tiny(1), tiny(2)
    save_network(tmp_path / "net_g_100.pth", net, ema)
    raw = torch.load(tmp_path / "net_g_100.pth", weights_only=True)
    assert set(raw) == {"params", "params_ema"}
    for key, source in (("params", net), ("params_ema", ema), ("auto", ema)):
        target = tiny(3)
        used = load_network(target, tmp_path / "net_g_100.pth", key=key)
        assert used == (key if key != "auto" else "params_ema")
        assert same_weights(target, source)


@pytest.mark.parametrize("layout", ["params", "params_ema", "bare", "module_prefix", "compiled_prefix"])
def test_loads_basicsr_layouts(tmp_path, layout):
    source = tiny(1)
    sd = source.state_dict()
    content = {
        "params": {"params": sd},
        "params_ema": {"params_ema": sd},
        "bare": sd,
        "module_prefix": {"params": {f"module.{k}": v for k, v in sd.items()}},
        "compiled_prefix": {"params": {f"_orig_mod.module.{k}": v for k, v in sd.items()}},
    }[layout]
    torch.save(content, tmp_path / "w.pth")
    target = tiny(2)
    load_network(target, tmp_path / "w.pth")
    assert same_weights(target, source)


def test_saves_plain_keys_from_wrapped_networks(tmp_path):
    net = tiny(1)
    save_network(tmp_path / "w.pth", torch.compile(net))
    keys = list(torch.load(tmp_path / "w.pth", weights_only=True)["params"])
    assert keys == list(net.state_dict())
    target = torch.compile(tiny(2))
    load_network(target, tmp_path / "w.pth", key="params")
    assert same_weights(target._orig_mod, net)


def test_mismatch_lists_missing_unexpected_and_shape_keys(tmp_path):
    sd = tiny(1).state_dict()
    sd.pop("conv_last.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["conv_hr.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save({"params": sd}, tmp_path / "w.pth")
    target = tiny(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_network(target, tmp_path / "w.pth")
    message = str(info.value)
    assert "\n" not in message  # one line, however many keys differ
    assert "missing (1): conv_last.bias" in message
    assert "unexpected (1): extra.weight" in message
    assert "shape mismatch (1): conv_hr.weight: file (64, 64, 1, 1) vs network (64, 64, 3, 3)" in message
    assert "strict_load_g" not in info.value.hint  # a shape differs: loading the rest would not help
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing loaded


def test_non_strict_loads_only_matching_keys(tmp_path, caplog):
    source = tiny(1)
    sd = source.state_dict()
    sd["conv_hr.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save({"params": sd}, tmp_path / "w.pth")
    target = tiny(2)
    old_conv_hr = target.conv_hr.weight.clone()
    load_network(target, tmp_path / "w.pth", strict=False)
    assert torch.equal(target.conv_hr.weight, old_conv_hr)
    assert torch.equal(target.conv_last.weight, source.conv_last.weight)
    assert "shape mismatch (1): conv_hr.weight" in caplog.text


def test_architecture_mismatch_error_names_the_options(tmp_path):
    save_network(tmp_path / "w.pth", tiny(1))
    with pytest.raises(CheckpointError, match=r"w.pth \[params\] does not fit EDVR") as info:
        load_network(EDVR(**{**TINY, "num_feat": 8}), tmp_path / "w.pth")
    assert "num_feat, num_frame, with_tsa" in info.value.hint


def test_stage_one_weights_into_a_tsa_network_suggest_strict_false(tmp_path):
    save_network(tmp_path / "w.pth", tiny(1, with_tsa=False))
    with pytest.raises(CheckpointError) as info:
        load_network(tiny(1, with_tsa=True), tmp_path / "w.pth")
    assert "strict_load_g: false" in info.value.hint


def test_mismatch_with_recorded_architecture_prints_it(tmp_path):
    save_network(tmp_path / "w.pth", tiny(1, with_tsa=True), network={"type": "EDVR", "num_feat": 8, "with_tsa": True})
    with pytest.raises(CheckpointError) as info:
        load_network(tiny(1, with_tsa=False), tmp_path / "w.pth")
    assert "records the architecture it was trained with: EDVR(num_feat=8, with_tsa=True)" in info.value.hint


def test_strict_false_is_suggested_only_when_most_keys_match(tmp_path):
    sd = tiny(1).state_dict()
    sd.pop("conv_last.bias")
    torch.save({"params": sd}, tmp_path / "w.pth")
    with pytest.raises(CheckpointError) as info:
        load_network(tiny(2), tmp_path / "w.pth")
    assert "strict_load_g: false" in info.value.hint


@pytest.mark.parametrize(
    "content,key,message",
    [
        ({"params": {"w": torch.zeros(1)}}, "params_ema", r"has no 'params_ema' entry; its top-level keys: params"),
        ({"params": {}}, "params", r"\[params\]: expected a mapping of parameter names to tensors \(it is empty\)"),
        ({"params": {"w": [1]}}, "params", r"\[params\]: .*tensors \(entry w is a list\)"),
        (torch.zeros(3), "auto", r"expected a dict of weights, got Tensor"),
        ({"params": {"w": torch.zeros(1)}, "network": "EDVR"}, "auto", r"\[network\]: expected the architecture"),
        ({"params": {"w": torch.zeros(1)}, "network": {"num_feat": [64]}}, "auto", r"\[network\]: expected"),
        ({1: torch.zeros(1)}, "auto", r"expected string keys"),
        ({"net": 1, "iter": 5}, "auto", r"holds neither 'params' nor 'params_ema'.*top-level keys: net, iter"),
        ([1, 2, 3], "auto", r"expected a dict of weights, got list"),
        ({"params": [1, 2]}, "params", r"\[params\]: expected a state dict, got list"),
    ],
)
def test_unusable_files_raise(tmp_path, content, key, message):
    torch.save(content, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=message):
        load_network(tiny(1), tmp_path / "w.pth", key=key)


def test_missing_corrupt_and_bad_key(tmp_path):
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_network(tiny(1), tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk.pth: not a PyTorch weights file \(it starts with b'this'"):
        load_network(tiny(1), tmp_path / "junk.pth")
    save_network(tmp_path / "cut.pth", tiny(1))
    (tmp_path / "cut.pth").write_bytes((tmp_path / "cut.pth").read_bytes()[:3000])  # truncated: a killed copy
    with pytest.raises(CheckpointError, match="cut.pth: cannot be loaded safely"):
        load_network(tiny(1), tmp_path / "cut.pth")
    with pytest.raises(ValueError, match="key: expected 'auto', 'params' or 'params_ema', got 'ema'"):
        load_network(tiny(1), tmp_path / "junk.pth", key="ema")


class RunsACommand:
    """A pickle payload that would run a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"params": tiny(1).state_dict(), "payload": RunsACommand(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_network(tiny(1), tmp_path / "evil.pth")
    assert not marker.exists()


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "net_g_latest.pth"
    first = tiny(1)
    save_network(path, first)
    previous = path.read_bytes()

    def disk_full(obj, handle):
        handle.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_network(path, tiny(2))
    assert path.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_save_creates_folders_and_moves_tensors_to_cpu(tmp_path):
    net = tiny(1)
    save_network(tmp_path / "a" / "b" / "w.pth", net.state_dict())
    loaded = torch.load(tmp_path / "a" / "b" / "w.pth", weights_only=True)["params"]
    assert all(v.device.type == "cpu" for v in loaded.values())
