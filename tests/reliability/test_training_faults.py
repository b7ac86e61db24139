"""Training faults: corrupt checkpoints, failed writes, non-finite losses, hostile state files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

import train as train_script
from models import checkpoint as checkpoint_module
from models.checkpoint import CheckpointError
from models.guard import NonFiniteLossError
from scripts.chaos_resume import write_options



def run(options_path: Path, *extra: str) -> None:
    train_script.main(["-opt", str(options_path), *extra])


def experiment(tmp_path: Path) -> Path:
    return tmp_path / "exp" / "chaos"


def test_corrupt_newest_state_is_skipped_with_a_warning(demo, tmp_path, caplog):
    opts = write_options(tmp_path / "o.yml", demo, tmp_path / "exp", iters=6)
    run(opts, "--set", "train.total_iter=4")
    exp = experiment(tmp_path)
    (exp / "training_states" / "4.state").write_bytes(b"\x00" * 100)  # a damaged disk
    (exp / "models" / ".net_g_5.pth.123.tmp").write_bytes(b"half")  # a write killed midway
    run(opts, "--auto-resume")
    log = (exp / "logs" / "train.log").read_text()
    assert "cannot resume from" in log and "4.state" in log and "resumed from" in log and "3.state" in log
    assert not (exp / "models" / ".net_g_5.pth.123.tmp").exists()
    assert (exp / "models" / "net_g_6.pth").is_file()


def test_no_loadable_state_is_an_error_not_a_fresh_start(demo, tmp_path):
    opts = write_options(tmp_path / "o.yml", demo, tmp_path / "exp", iters=2)
    run(opts)
    for state in (experiment(tmp_path) / "training_states").iterdir():
        state.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="none of the 3 training states can be loaded"):
        run(opts, "--auto-resume")


def test_failed_checkpoint_write_keeps_the_previous_one(demo, tmp_path, monkeypatch):
    opts = write_options(tmp_path / "o.yml", demo, tmp_path / "exp", iters=4)
    real_save = torch.save
    calls = {"n": 0}

    def disk_full_after_two_checkpoints(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 6:  # weights + state of iterations 0 (the initial weights), 1 and 2 succeed
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full_after_two_checkpoints)
    with pytest.raises(CheckpointError, match=r"iteration 3 \(No space left on device\).*previous checkpoints are intact"):
        run(opts)
    exp = experiment(tmp_path)
    assert sorted(p.name for p in (exp / "models").iterdir()) == ["net_g_0.pth", "net_g_1.pth", "net_g_2.pth",
                                                                  "net_g_latest.pth"]
    assert (exp / "models" / "net_g_latest.pth").read_bytes() == (exp / "models" / "net_g_2.pth").read_bytes()
    assert sorted(p.name for p in (exp / "training_states").iterdir()) == ["0.state", "1.state", "2.state"]
    monkeypatch.undo()
    run(opts, "--auto-resume")  # the intact checkpoint resumes
    assert "resumed from" in (exp / "logs" / "train.log").read_text()


def test_nonfinite_losses_are_skipped_then_stop_the_run_without_the_guard(demo, tmp_path, monkeypatch):
    from models import trainer as trainer_module

    opts = write_options(tmp_path / "o.yml", demo, tmp_path / "exp", iters=8)
    real_forward = trainer_module.PixelLoss.forward
    bad_iterations = {3, 5, 6, 7}
    state = {"calls": 0}

    def sometimes_nan(self, pred, target):
        state["calls"] += 1
        loss = real_forward(self, pred, target)
        return loss * float("nan") if state["calls"] in bad_iterations else loss

    monkeypatch.setattr(trainer_module.PixelLoss, "forward", sometimes_nan)
    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite losses up to iteration 7"):
        run(opts, "--set", "train.max_nonfinite_steps=3", "--set", "train.guard.enabled=false")
    log = (experiment(tmp_path) / "logs" / "train.log").read_text()
    assert "iteration 3: non-finite loss or gradients" in log and "batch keys:" in log
    weights = torch.load(experiment(tmp_path) / "models" / "net_g_4.pth", weights_only=True)["params"]
    assert all(torch.isfinite(v).all() for v in weights.values())  # nothing corrupted was saved


class RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_training_state_is_refused(demo, tmp_path):
    opts = write_options(tmp_path / "o.yml", demo, tmp_path / "exp", iters=2)
    run(opts)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.state"
    torch.save({"iteration": 2, "payload": RunsACommand(marker)}, evil)
    with pytest.raises(CheckpointError, match="cannot load the training state safely"):
        run(opts, "--set", f"path.resume_state={evil}")
    assert not marker.exists()
