"""Experiments are never overwritten; a resume says what changed and refuses what it cannot honour;
the latest and the best weights are kept under fixed names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import train as train_script
from options.cli import UsageError
from scripts.chaos_resume import write_options



def run(options_path: Path, *extra: str) -> None:
    train_script.main(["-opt", str(options_path), *extra])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_a_fresh_start_over_an_existing_experiment_is_refused_untouched(demo, tmp_path):
    opts = write_options(tmp_path / "o.yml", demo, tmp_path / "exp", iters=2)
    run(opts)
    exp = tmp_path / "exp" / "chaos"
    before = snapshot(exp)
    with pytest.raises(UsageError, match=r"holds an earlier training of this experiment \(trained to iteration 2\)") \
            as info:
        run(opts, "--set", "logger.print_freq=2")
    assert "--auto-resume" in info.value.hint and "--set name=" in info.value.hint
    assert snapshot(exp) == before  # not a byte changed, the log included


def test_resume_applies_the_learning_rate_and_refuses_the_architecture(demo, tmp_path):
    opts = write_options(tmp_path / "o.yml", demo, tmp_path / "exp", iters=4)
    run(opts, "--set", "train.total_iter=2")
    exp = tmp_path / "exp" / "chaos"
    before = snapshot(exp)
    with pytest.raises(UsageError, match=r"cannot resume .* with other network.num_feat: 8 -> 16"):
        run(opts, "--auto-resume", "--set", "network.num_feat=16")
    with pytest.raises(UsageError, match=r"datasets.train.batch_size_per_gpu: 2 -> 1"):
        run(opts, "--auto-resume", "--set", "datasets.train.batch_size_per_gpu=1")
    assert snapshot(exp) == before

    run(opts, "--auto-resume", "--set", "train.scheduler.type=constant", "--set", "train.optim.lr=2.0e-4",
        "--set", "train.optim.dcn_lr_mul=0.5")
    log = (exp / "logs" / "train.log").read_text()
    assert "resume: train.optim.lr changed from 0.001 to 0.0002" in log
    assert "resume: train.optim.dcn_lr_mul changed from 1.0 to 0.5" in log
    assert "iter 3/4 epoch" in log and "lr 2.000e-04" in log  # the new rate is the one in use
    state = torch.load(exp / "training_states" / "4.state", weights_only=True)
    assert [g["lr"] for g in state["trainer"]["optimizer"]["param_groups"]] == [2e-4, 1e-4]
    assert "lr: 0.0002" in (exp / "options.yml").read_text()  # the options now in effect


def test_latest_and_best_weights(demo, tmp_path):
    opts = write_options(tmp_path / "o.yml", demo, tmp_path / "exp", iters=4)
    val = (f"{{name: v, dataset: {{type: VideoTestDataset, dataroot_lq: {demo / 'train_sharp_bicubic/X4'}, "
           f"dataroot_gt: {demo / 'train_sharp'}, clips: ['006']}}, num_worker: 0}}")
    run(opts, "--set", f"datasets.val=[{val}]", "--set", "val.val_freq=1")
    models = tmp_path / "exp" / "chaos" / "models"
    latest, last = weights(models / "net_g_latest.pth"), weights(models / "net_g_4.pth")
    assert all(torch.equal(latest["params"][k], last["params"][k]) for k in last["params"])
    log = (tmp_path / "exp" / "chaos" / "logs" / "train.log").read_text()
    best_iteration = int(log.rsplit("(best ", 1)[1].split("@ iter ")[1].split(")")[0])
    best, at_best = weights(models / "net_g_best.pth"), weights(models / f"net_g_{best_iteration}.pth")
    assert best["network"]["num_feat"] == 8
    for key in ("params", "params_ema"):
        assert all(torch.equal(best[key][k], at_best[key][k]) for k in at_best[key])
