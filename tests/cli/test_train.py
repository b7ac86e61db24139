"""train.py and test.py -opt end to end on the demo clips: the experiment folder, exact resume,
LMDB input, evaluation tables with the bicubic baseline, DDP with two CPU processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import test as test_script
import train as train_script
from options import load_text
from tests.builders import write_train_options as write_options

ROOT = Path(__file__).resolve().parents[2]


def final_weights(exp: Path, iteration: int) -> dict:
    return torch.load(exp / "models" / f"net_g_{iteration}.pth", weights_only=True)


def test_train_writes_the_experiment_and_resumes_exactly(demo, tmp_path):
    straight = write_options(tmp_path / "a.yml", demo, tmp_path / "a", val_freq=3)
    train_script.main(["-opt", str(straight)])
    exp = tmp_path / "a" / "tiny"
    for name in ("options.yml", "logs/train.log", "models/net_g_3.pth", "models/net_g_6.pth",
                 "training_states/3.state", "training_states/6.state"):
        assert (exp / name).is_file(), name
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(exp / "tb"))
    events.Reload()
    assert {"train/loss", "train/lr", "val/demo_val/psnr"} <= set(events.Tags()["scalars"])
    assert "val/demo_val" in events.Tags()["images"]
    log = (exp / "logs" / "train.log").read_text()
    assert "iter 2/6" in log and "TSA warm-up: fusion only" in log and "validation demo_val psnr" in log
    assert load_text((exp / "options.yml").read_text()).name == "tiny"

    # the same run interrupted after iteration 3 and resumed continues bit-identically
    interrupted = write_options(tmp_path / "b.yml", demo, tmp_path / "b", val_freq=3)
    train_script.main(["-opt", str(interrupted), "--set", "train.total_iter=3"])
    train_script.main(["-opt", str(interrupted), "--auto-resume"])
    expected, resumed = final_weights(exp, 6), final_weights(tmp_path / "b" / "tiny", 6)
    for key in ("params", "params_ema"):
        assert expected[key].keys() == resumed[key].keys()
        assert all(torch.equal(expected[key][k], resumed[key][k]) for k in expected[key]), key
    assert "resumed from" in (tmp_path / "b" / "tiny" / "logs" / "train.log").read_text()


def test_train_from_lmdb(demo, tmp_path):
    opts = write_options(tmp_path / "lmdb.yml", demo, tmp_path / "exp", total_iter=2, backend="lmdb")
    train_script.main(["-opt", str(opts), "--set", "datasets.val=[]"])
    assert (tmp_path / "exp" / "tiny" / "models" / "net_g_2.pth").is_file()


def test_test_script_writes_tables_with_a_bicubic_baseline(demo, tmp_path, capsys):
    opts_path = write_options(tmp_path / "t.yml", demo, tmp_path / "exp", total_iter=2)
    train_script.main(["-opt", str(opts_path), "--set", "datasets.val=[]"])
    weights = tmp_path / "exp" / "tiny" / "models" / "net_g_2.pth"
    results = test_script.main(["-opt", str(opts_path), "--set", f"path.pretrain_network_g={weights}",
                                "--set", "val.metrics={psnr: {}, ssim: {crop_border: 4}}", "--bicubic"])
    assert [r.name for r in results] == ["demo_val", "demo_val"]
    assert set(results[1].clips) == {"006"} and 20 < results[1].mean("psnr") < 45
    out = capsys.readouterr().out
    assert "| **average over clips** (mean of the 1 clip means) | 6 |" in out and "vs bicubic" in out
    csv = (tmp_path / "exp" / "results" / "tiny" / "demo_val_EDVR.csv").read_text().splitlines()
    assert csv[0] == "clip,frames,psnr,ssim" and csv[-1].startswith("average over clips,6,")
    assert "precision: fp32 (asked for)" in out  # evaluation is float32 unless asked
    bf16 = test_script.main(["-opt", str(opts_path), "--set", f"path.pretrain_network_g={weights}",
                             "--precision", "bf16"])
    assert "precision: bf16 (asked for)" in capsys.readouterr().out
    assert (tmp_path / "exp" / "results" / "tiny" / "demo_val_EDVR_bf16.csv").is_file()
    assert abs(bf16[0].mean("psnr") - results[0].mean("psnr")) < 0.2


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(demo, tmp_path):
    """torchrun with 2 gloo processes: ranks end with identical weights, rank 0 writes one checkpoint."""
    opts = write_options(tmp_path / "ddp.yml", demo, tmp_path / "exp", total_iter=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "train.py"), "-opt", str(opts), "--set", "datasets.val=[]",
               "--set", "logger.save_checkpoint_freq=100"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exp = tmp_path / "exp" / "tiny"
    models = sorted(p.name for p in (exp / "models").iterdir())
    assert models == ["net_g_0.pth", "net_g_4.pth", "net_g_latest.pth"]  # 0: the initial weights (guard)
    log = (exp / "logs" / "train.log").read_text()
    assert "x 2 process(es)" in log and "all 2 ranks hold identical weights" in log
