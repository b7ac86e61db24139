"""Training pieces (schedule, sampling, trainer) and train.py / test.py end to end on real footage."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import test as test_script
import train as train_script
from data.sampling import SeededDataset
from models.edvr import EDVR
from models.trainer import Trainer
from models.schedulers import LRSchedule
from options import load_text
from options.schema import TrainOptions
from options.parse import Validator
from tests.data.builders import demo_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY_NET = dict(num_feat=8, deformable_groups=2, num_extract_block=1, num_reconstruct_block=1)


# ---- learning-rate schedule ------------------------------------------------------------------


def test_cosine_restart_schedule_matches_the_closed_form():
    schedule = LRSchedule("CosineAnnealingRestartLR", (10, 20), (1.0, 0.5), eta_min=1e-7)
    base, eta = 1e-3, 1e-7

    def closed_form(step):
        if step < 10:
            return eta + 0.5 * (base - eta) * (1 + math.cos(math.pi * step / 10))
        return eta + 0.5 * 0.5 * (base - eta) * (1 + math.cos(math.pi * (step - 10) / 20))

    for step in range(30):
        assert schedule.lr_at(base, step) == pytest.approx(closed_form(step), rel=1e-12)
    assert schedule.lr_at(base, 0) == base and schedule.lr_at(base, 10) == pytest.approx(0.5 * base, rel=1e-3)
    with pytest.raises(ValueError, match="past the last period"):
        schedule.lr_at(base, 30)


def test_warmup_and_constant_schedule():
    schedule = LRSchedule("constant", warmup_iter=4)
    assert [schedule.lr_at(1.0, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs,message",
    [(dict(periods=()), "scheduler.periods"), (dict(periods=(5,), restart_weights=(1, 1)), "one weight per period")],
)
def test_bad_schedules(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LRSchedule("CosineAnnealingRestartLR", **kwargs)


# ---- reproducible sampling -------------------------------------------------------------------


def test_seeded_dataset_reproduces_items_and_restores_generators():
    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return (random.random(), float(np.random.rand()), float(torch.rand(1)))

    dataset = SeededDataset(Noise())
    random.seed(1)
    before = random.random()
    random.seed(1)
    first = dataset[(0, 42)]
    assert random.random() == before  # the caller's generator is untouched
    assert dataset[(2, 42)] == first and dataset[(0, 43)] != first


# ---- trainer: TSA warm-up, EMA, parameter groups, AMP ---------------------------------------


def train_options(**overrides) -> TrainOptions:
    raw = {"total_iter": 10, "scheduler": {"type": "constant"}, "optim": {"lr": 1e-3}, **overrides}
    return Validator("test").parse(TrainOptions, raw, "train")


def tiny_batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"lq": torch.rand(2, 5, 3, 8, 8, generator=generator), "gt": torch.rand(2, 3, 32, 32, generator=generator)}


def snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def changed(before, net) -> set[str]:
    return {k for k, v in net.state_dict().items() if not torch.equal(before[k], v)}


def test_tsa_warmup_trains_only_fusion_and_holds_after_resume():
    torch.manual_seed(0)
    net = EDVR(**TINY_NET)
    trainer = Trainer(net, train_options(tsa_iter=2), torch.device("cpu"))
    before = snapshot(net)
    assert trainer.train_step(tiny_batch(), 1).fusion_only
    assert changed(before, net) and all(k.startswith("fusion.") for k in changed(before, net))

    # a fresh trainer (as after a resume) at iteration 2 is still inside the warm-up
    resumed = Trainer(net, train_options(tsa_iter=2), torch.device("cpu"))
    resumed.load_state_dict(trainer.state_dict())
    before = snapshot(net)
    assert resumed.train_step(tiny_batch(1), 2).fusion_only
    assert all(k.startswith("fusion.") for k in changed(before, net))

    before = snapshot(net)
    assert not resumed.train_step(tiny_batch(2), 3).fusion_only
    assert any(k.startswith("pcd_align.") for k in changed(before, net))
    assert all(p.requires_grad for p in net.parameters())


def test_ema_follows_the_weights():
    torch.manual_seed(0)
    net = EDVR(**TINY_NET)
    trainer = Trainer(net, train_options(ema_decay=0.9), torch.device("cpu"))
    ema_before = snapshot(trainer.net_ema)
    trainer.train_step(tiny_batch(), 1)
    for name, value in trainer.net_ema.state_dict().items():
        expected = 0.9 * ema_before[name] + 0.1 * net.state_dict()[name]
        torch.testing.assert_close(value, expected)


def test_dcn_learning_rate_multiplier_groups_dcn_parameters():
    net = EDVR(**TINY_NET)
    trainer = Trainer(net, train_options(optim={"lr": 1e-3, "dcn_lr_mul": 0.1}), torch.device("cpu"))
    groups = trainer.optimizer.param_groups
    assert [g["base_lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]
    dcn_params = {id(p) for pack in net.dcn_packs for p in pack.parameters()}
    assert {id(p) for p in groups[1]["params"]} == dcn_params
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(net.parameters()))


def test_bf16_autocast_step_runs_on_cpu():
    torch.manual_seed(0)
    net = EDVR(**TINY_NET)
    trainer = Trainer(net, train_options(amp="bf16", grad_clip=1.0), torch.device("cpu"))
    before = snapshot(net)
    stats = trainer.train_step(tiny_batch(), 1)
    assert math.isfinite(float(stats.loss)) and changed(before, net)


def test_channels_last_option_converts_the_network_and_trains():
    torch.manual_seed(0)
    net = EDVR(**TINY_NET)
    batch = tiny_batch()
    with torch.no_grad():
        expected = net(batch["lq"])
    trainer = Trainer(net, train_options(channels_last=True), torch.device("cpu"))
    assert net.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(net(batch["lq"]), expected, rtol=1e-4, atol=1e-5)  # same function
    before = snapshot(net)
    assert math.isfinite(float(trainer.train_step(batch, 1).loss)) and changed(before, net)


def test_schedule_must_cover_total_iter():
    with pytest.raises(ValueError, match="periods sum to 5 < train.total_iter 10"):
        Trainer(EDVR(**TINY_NET), train_options(scheduler={"periods": [5], "restart_weights": [1]}),
                 torch.device("cpu"))


# ---- train.py and test.py end to end ---------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_dataset(tmp_path_factory)


def write_options(path: Path, demo: Path, experiments: Path, total_iter: int = 6, val_freq: int = 100,
                  backend: str = "disk") -> Path:
    gt, lq = {"disk": ("train_sharp", "train_sharp_bicubic/X4"),
              "lmdb": ("train_sharp.lmdb", "train_sharp_bicubic_X4.lmdb")}[backend]
    net = ", ".join(f"{k}: {v}" for k, v in TINY_NET.items())
    path.write_text(f"""
name: tiny
manual_seed: 7
network: {{type: EDVR, {net}, with_tsa: true}}
datasets:
  train:
    dataset: {{type: REDSDataset, dataroot_gt: {demo / gt}, dataroot_lq: {demo / lq},
              meta_info_file: {demo / 'meta_info_demo_train_GT.txt'}, val_partition: null, gt_size: 32}}
    batch_size_per_gpu: 2
    num_worker_per_gpu: 0
  val:
    - name: demo_val
      dataset: {{type: VideoTestDataset, dataroot_lq: {demo / 'train_sharp_bicubic/X4'},
                dataroot_gt: {demo / 'train_sharp'}, clips: ['007']}}
      num_worker: 0
  test:
    - name: demo_val
      dataset: {{type: VideoTestDataset, dataroot_lq: {demo / 'train_sharp_bicubic/X4'},
                dataroot_gt: {demo / 'train_sharp'}, clips: ['007']}}
      num_worker: 0
train:
  total_iter: {total_iter}
  scheduler: {{periods: [6], restart_weights: [1], eta_min: 1.0e-6}}
  optim: {{lr: 1.0e-3}}
  tsa_iter: 2
  ema_decay: 0.9
val: {{val_freq: {val_freq}, metrics: {{psnr: {{crop_border: 0}}}}}}
logger: {{print_freq: 2, save_checkpoint_freq: 3, use_tb_logger: true}}
path: {{experiments_root: {experiments}, results_root: {experiments / 'results'}}}
""")
    return path


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
    assert set(results[1].clips) == {"007"} and 20 < results[1].mean("psnr") < 45
    out = capsys.readouterr().out
    assert "| **average over clips** (mean of the 1 clip means) | 6 |" in out and "vs bicubic" in out
    csv = (tmp_path / "exp" / "results" / "tiny" / "demo_val_EDVR.csv").read_text().splitlines()
    assert csv[0] == "clip,frames,psnr,ssim" and csv[-1].startswith("average over clips,6,")


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(demo, tmp_path):
    """torchrun with 2 gloo processes: ranks end with identical weights, rank 0 writes one checkpoint."""
    opts = write_options(tmp_path / "ddp.yml", demo, tmp_path / "exp", total_iter=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "train.py"), "-opt", str(opts), "--set", "datasets.val=[]",
               "--set", "logger.save_checkpoint_freq=100"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exp = tmp_path / "exp" / "tiny"
    assert sorted(p.name for p in (exp / "models").iterdir()) == ["net_g_4.pth", "net_g_latest.pth"]
    log = (exp / "logs" / "train.log").read_text()
    assert "x 2 process(es)" in log and "all 2 ranks hold identical weights" in log


def test_pixel_losses_against_hand_computed_values():
    from models.losses import PixelLoss

    pred, target = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert PixelLoss("CharbonnierLoss", reduction="sum", eps=0.0)(pred, target).item() == pytest.approx(9.0)
    assert PixelLoss("CharbonnierLoss", reduction="mean", eps=1.0)(pred, target).item() == pytest.approx(
        (1 + math.sqrt(5) + math.sqrt(10) + math.sqrt(17)) / 4)
    assert PixelLoss("L1Loss", loss_weight=2.0, reduction="mean")(pred, target).item() == pytest.approx(4.5)
    assert PixelLoss("MSELoss", reduction="sum")(pred, target).item() == pytest.approx(29.0)
    with pytest.raises(ValueError, match="pixel_loss.type"):
        PixelLoss("SSIMLoss")
