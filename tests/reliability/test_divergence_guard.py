"""The divergence guard end to end: a training pushed into exploding DCN offsets (a DCN learning
rate 1000 times the others) rolls back and finishes healthy; a run out of rollbacks stops cleanly
at its last healthy checkpoint; a SIGKILL after a rollback resumes to bit-identical weights; DDP
ranks roll back together; the demo recipe is never touched by the guard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train as train_script
from options import cli
from tests.builders import write_train_options

ROOT = Path(__file__).resolve().parents[2]

# The tiny recipe of tests/builders.py (checkpoints every 3 iterations, 2 TSA warm-up iterations,
# 8x8 LR patches, so the guard's threshold is 8 px) pushed: its offsets pass 8 px within 6
# iterations (they stay under 1 px without the push).
# A rollback for offsets brings the DCN learning rate down to the others' (train.guard.max_dcn_lr_mul 1).
PUSH = ["--set", "train.optim.dcn_lr_mul=1000", "--set", "datasets.val=[]"]


def pushed_options(demo: Path, tmp_path: Path, name: str, total_iter: int = 12) -> Path:
    return write_train_options(tmp_path / f"{name}.yml", demo, tmp_path / name, total_iter=total_iter)


def train_command(options_path: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "-opt", str(options_path), *PUSH, *extra]


def weights(exp: Path, name: str) -> dict:
    return torch.load(exp / "models" / f"net_g_{name}.pth", weights_only=True)


def last_offsets(log: str) -> list[float]:
    """The mean |offset| of every pack on the last 'offsets at iter' line of a train.log."""
    line = [x for x in log.splitlines() if "offsets at iter" in x][-1]
    return [float(part.split()[1]) for part in line.split("): ")[1].split(", ")]


def test_pushed_training_rolls_back_and_finishes_healthy(demo, tmp_path):
    opts = pushed_options(demo, tmp_path, "pushed")
    result = subprocess.run(train_command(opts), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exp = tmp_path / "pushed" / "tiny"
    log = (exp / "logs" / "train.log").read_text()
    assert "guard: offsets at iteration 7: mean |offset| above 8 px (train.guard.offset_threshold 50 capped " \
           "at the 8-pixel training patch) for 3 iterations" in log
    # checkpoint 3 holds the first DCN update (at 1000x): the step on its weights measured 7 px
    assert "checkpoint of iteration 3 is not a rollback target" in log
    assert "rollback 1/4 to the healthy checkpoint of iteration 0" in log and "DCN x0.001" in log
    assert "rollback 2/" not in log and "training done: 12 iterations" in log
    assert max(last_offsets(log)) < 8 / 2  # healthy at the end
    final = weights(exp, "12")
    assert all(torch.isfinite(v).all() for key in ("params", "params_ema") for v in final[key].values())
    state = torch.load(exp / "training_states" / "12.state", weights_only=True)
    assert state["guard"]["rollbacks"] == 1 and state["trainer"]["dcn_lr_scale"] == pytest.approx(0.001)
    assert state["guard"]["history"][0]["cause"] == "offsets"
    assert list((exp / "rolled_back" / "1" / "training_states").iterdir())  # the abandoned branch, kept

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(exp / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for pack in ("l3", "l2", "l1", "cas_dcnpack"):
        assert {f"offsets/{pack}/mean_abs", f"offsets/{pack}/max_abs", f"offsets/{pack}/mean_mask"} <= scalars
    assert {"guard/rollbacks", "guard/rollback", "guard/dcn_lr_scale", "guard/lr_scale"} <= scalars


def test_out_of_rollbacks_stops_cleanly_at_the_last_healthy_checkpoint(demo, tmp_path, capsys):
    opts = pushed_options(demo, tmp_path, "stopped")
    argv = ["-opt", str(opts), *PUSH, "--set", "train.guard.max_rollbacks=0"]
    assert cli.run(train_script.main, argv) == cli.USER_ERROR_STATUS
    err = capsys.readouterr().err
    assert "error: the training diverged at iteration 7: mean |offset| above 8 px" in err
    assert "0 rollback(s) done (train.guard.max_rollbacks), stopping at the last healthy checkpoint, " \
           "iteration 0" in err
    assert "hint: lower train.optim.dcn_lr_mul" in err and "--auto-resume" in err and "Traceback" not in err
    exp = tmp_path / "stopped" / "tiny"
    assert sorted(p.name for p in (exp / "training_states").iterdir()) == ["0.state"]
    assert sorted(p.name for p in (exp / "rolled_back" / "stop" / "training_states").iterdir()) == \
        ["3.state", "6.state"]
    last_good = weights(exp, "0")
    assert weights(exp, "latest")["params"].keys() == last_good["params"].keys()
    assert all(torch.equal(weights(exp, "latest")["params"][k], v) for k, v in last_good["params"].items())
    assert all(torch.isfinite(v).all() for v in last_good["params"].values())

    # what the hint says: continue from it with a gentler recipe
    train_script.main(["-opt", str(opts), "--set", "datasets.val=[]", "--set", "train.optim.dcn_lr_mul=1",
                       "--auto-resume"])
    log = (exp / "logs" / "train.log").read_text()
    assert "resumed from" in log and "0.state at iteration 0" in log and "training done: 12 iterations" in log


@pytest.mark.slow
def test_sigkill_after_a_rollback_resumes_to_bit_identical_weights(demo, tmp_path):
    reference = pushed_options(demo, tmp_path, "reference")
    result = subprocess.run(train_command(reference), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    killed = pushed_options(demo, tmp_path, "killed")
    log_path = tmp_path / "killed" / "tiny" / "logs" / "train.log"
    process = subprocess.Popen(train_command(killed), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not _logged_after_rollback(log_path):
            assert process.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "no rollback seen"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # inside the step after the one logged
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    result = subprocess.run(train_command(killed, "--auto-resume"), cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = log_path.read_text()
    assert "(1 rollback(s) by the guard so far)" in log and log.count("rollback 1/4") == 1  # not replayed

    expected = weights(tmp_path / "reference" / "tiny", "12")
    resumed = weights(tmp_path / "killed" / "tiny", "12")
    for key in ("params", "params_ema"):
        assert all(torch.equal(expected[key][k], resumed[key][k]) for k in expected[key]), key


def _logged_after_rollback(log_path: Path) -> bool:
    """Whether a progress line was logged after the first rollback (its state is written by then)."""
    if not log_path.exists():
        return False
    _, found, after = log_path.read_text().partition("rollback 1/4")
    return bool(found) and "] train: iter " in after


@pytest.mark.slow
def test_ddp_ranks_roll_back_together(demo, tmp_path):
    opts = pushed_options(demo, tmp_path, "ddp")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               *train_command(opts, "--set", "train.guard.offset_threshold=5")[1:]]  # 2 x 2 samples: slower
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (tmp_path / "ddp" / "tiny" / "logs" / "train.log").read_text()
    _, found, after = log.partition("rollback 1/4 to the healthy checkpoint of iteration 0")
    assert found and "all 2 ranks hold identical weights" in after and "training done: 12 iterations" in after


@pytest.mark.slow
def test_the_demo_recipe_is_untouched_by_the_guard(demo, tmp_path):
    """The quickstart's recipe at its defaults (150 of its 1000 iterations, so that the loss window
    is full for 50 of them): nothing triggers and every checkpoint is a rollback target."""
    data = {"dataroot_gt": demo / "train_sharp", "dataroot_lq": demo / "train_sharp_bicubic/X4",
            "meta_info_file": demo / "meta_info_demo_train_GT.txt"}
    overrides = [f"path.experiments_root={tmp_path}", "train.total_iter=150",
                 "logger.save_checkpoint_freq=50", "datasets.val=[]", "logger.use_tb_logger=false",
                 *[f"datasets.train.dataset.{key}={value}" for key, value in data.items()]]
    train_script.main(["-opt", str(ROOT / "options/train/demo.yml"),
                       *[arg for override in overrides for arg in ("--set", override)]])
    exp = tmp_path / "demo_edvr"
    log = (exp / "logs" / "train.log").read_text()
    events = "\n".join(line for line in log.splitlines() if "divergence guard:" not in line)  # not the rules line
    assert "guard:" not in events and "not a rollback target" not in events and "non-finite" not in events
    assert max(last_offsets(log)) < 5
    state = torch.load(exp / "training_states" / "150.state", weights_only=True)
    # every checkpoint is a target once a healthy step ran on its weights: the last one (150) not yet
    assert state["guard"]["ring"] == [0, 50, 100] and state["guard"]["rollbacks"] == 0
    assert len(state["guard"]["losses"]) == 100
