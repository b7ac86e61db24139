"""Weights files that are not what they claim: one clear error naming the file, before any network
is built from what the file says, and hints only where they help."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

import test as test_script
from models.checkpoint import save_network
from models.edvr import EDVR
from options import cli
from tests.builders import real_frames, write_clip_tree

TINY = dict(num_feat=8, deformable_groups=2, num_extract_block=1, num_reconstruct_block=1)


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    write_clip_tree(root, {"clip": [f[:32, :48] for f in real_frames("carphone_pristine.mp4", 40, 5)]})
    return root / "clip"


def tiny_state() -> dict:
    torch.manual_seed(0)
    return EDVR(**TINY).state_dict()


def restore_with(weights: Path, frames: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    argv = ["--model", str(weights), "--input", str(frames), "--output", str(tmp_path / "out"), *extra]
    status = cli.run(test_script.main, argv)
    return status, capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    (torch.zeros(3), "expected a dict of weights, got Tensor"),
    ([torch.zeros(3)], "expected a dict of weights, got list"),
    ({"params": [1, 2]}, r"[params]: expected a state dict, got list"),
    ({"params": {"conv_first.weight": "not a tensor"}}, "entry conv_first.weight is a str"),
    ({"params": {}}, "(it is empty)"),
    ({"weights": 3, "epoch": 4}, "holds neither 'params' nor 'params_ema'"),
    ({"params": "TINY", "network": {"type": "EDVR"}}, "does not match the weights: num_feat=64 but its weights have 8"),
    ({"params": "TINY", "network": "EDVR-M"}, "[network]: expected the architecture as a mapping"),
    ({"params": "TINY", "network": {"type": "EDVR", "num_feat": [8]}}, "[network]: expected the architecture"),
    ({"params": "TINY", "network": {"type": "EDVR", "colour": "red", **TINY}}, "network.colour: unknown key"),
    ({"params": "TINY", "network": {"type": "EDVR", **TINY, "num_feat": 10**9}}, "network.num_feat: expected"),
    ({"params": "TINY", "network": {"type": "EDVR", **TINY, "deformable_groups": 0}},
     "network.deformable_groups: expected"),
    ({"params": "TINY", "network": {"type": "Transformer"}}, "network.type: unknown type 'Transformer'"),
    ({"params": "TINY", "network": {"type": "EDVR", **TINY, "num_reconstruct_block": 3}},
     "recorded architecture does not match the weights: num_reconstruct_block=3 but its weights have 1"),
])
def test_malformed_weights_files_get_one_error_naming_the_file(frames, tmp_path, capsys, content, message):
    if isinstance(content, dict) and content.get("params") == "TINY":
        content = {**content, "params": tiny_state()}
    weights = tmp_path / "w.pth"
    torch.save(content, weights)
    start = time.perf_counter()
    status, err = restore_with(weights, frames, tmp_path, capsys)
    assert status == 2 and time.perf_counter() - start < 10  # nothing huge was built
    first = err.splitlines()[0]
    assert first.startswith(f"error: {weights}") and message in first, err
    assert "Traceback" not in err and len(err.splitlines()) <= 2 and not (tmp_path / "out").exists()


def test_options_that_do_not_fit_a_file_with_its_own_architecture_say_so(frames, tmp_path, capsys):
    weights = tmp_path / "w.pth"
    torch.manual_seed(0)
    save_network(weights, EDVR(**TINY), network={"type": "EDVR", **TINY})
    other = tmp_path / "other.yml"
    other.write_text("name: x\nnetwork: {type: EDVR, num_feat: 16, deformable_groups: 2, num_extract_block: 1, "
                     "num_reconstruct_block: 1}\n")
    status, err = restore_with(weights, frames, tmp_path, capsys, "--opt", str(other))
    lines = err.splitlines()
    assert status == 2 and len(lines) == 2
    assert lines[0].startswith(f"error: {weights} [params] does not fit EDVR: shape mismatch")
    assert lines[1].startswith("hint: the file records the architecture it was trained with: EDVR(num_feat=8,")
    assert "strict_load_g" not in err  # every conv differs: loading the matching part would not help


def test_basicsr_files_without_metadata_are_read_off_their_shapes(frames, tmp_path, capsys):
    torch.save({"params_ema": tiny_state()}, tmp_path / "basicsr.pth")
    status, _ = restore_with(tmp_path / "basicsr.pth", frames, tmp_path, capsys)
    assert status == 0 and len(list((tmp_path / "out").glob("*.png"))) == 5
