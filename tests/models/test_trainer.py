"""The trainer: learning-rate schedules, TSA warm-up, EMA, parameter groups, AMP, losses."""

from __future__ import annotations

import math

import pytest
import torch

from models.edvr import EDVR
from models.schedulers import LRSchedule
from models.trainer import Trainer
from options.parse import Validator
from options.schema import TrainOptions
from tests.builders import TINY_EDVR


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
    net = EDVR(**TINY_EDVR)
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
    net = EDVR(**TINY_EDVR)
    trainer = Trainer(net, train_options(ema_decay=0.9), torch.device("cpu"))
    ema_before = snapshot(trainer.net_ema)
    trainer.train_step(tiny_batch(), 1)
    for name, value in trainer.net_ema.state_dict().items():
        expected = 0.9 * ema_before[name] + 0.1 * net.state_dict()[name]
        torch.testing.assert_close(value, expected)


def test_dcn_learning_rate_multiplier_groups_dcn_parameters():
    net = EDVR(**TINY_EDVR)
    trainer = Trainer(net, train_options(optim={"lr": 1e-3, "dcn_lr_mul": 0.1}), torch.device("cpu"))
    groups = trainer.optimizer.param_groups
    assert [g["base_lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]
    dcn_params = {id(p) for pack in net.dcn_packs for p in pack.parameters()}
    assert {id(p) for p in groups[1]["params"]} == dcn_params
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(net.parameters()))


def test_bf16_autocast_step_runs_on_cpu():
    torch.manual_seed(0)
    net = EDVR(**TINY_EDVR)
    trainer = Trainer(net, train_options(amp="bf16", grad_clip=1.0), torch.device("cpu"))
    before = snapshot(net)
    stats = trainer.train_step(tiny_batch(), 1)
    assert math.isfinite(float(stats.loss)) and changed(before, net)


def test_amp_auto_is_bfloat16_exactly_where_the_cpu_computes_it_natively(caplog):
    from models.restoration.engine import choose_precision

    with caplog.at_level("INFO", logger="models.trainer"):
        trainer = Trainer(EDVR(**TINY_EDVR), train_options(amp="auto"), torch.device("cpu"))
    expected = choose_precision("auto", torch.device("cpu"))
    assert trainer.amp_dtype == expected.dtype and trainer.amp == {"fp32": "none", "bf16": "bf16"}[expected.name]
    assert f"train.amp auto: {trainer.amp} ({expected.reason})" in caplog.text
    assert not trainer.scaler.is_enabled()


def test_channels_last_option_converts_the_network_and_trains():
    torch.manual_seed(0)
    net = EDVR(**TINY_EDVR)
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
        Trainer(EDVR(**TINY_EDVR), train_options(scheduler={"periods": [5], "restart_weights": [1]}),
                 torch.device("cpu"))


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


def test_offset_warmup_freezes_the_offset_predictors_then_trains_them():
    torch.manual_seed(0)
    net = EDVR(**TINY_EDVR)
    trainer = Trainer(net, train_options(offset_warmup_iter=1), torch.device("cpu"))
    before = snapshot(net)
    stats = trainer.train_step(tiny_batch(), 1)
    assert stats.offsets_frozen and not stats.fusion_only
    moved = changed(before, net)
    assert moved and not any(".conv_offset." in k for k in moved)
    assert any(k.startswith("pcd_align.dcn_pack.l1.weight") for k in moved)  # the rest of the pack trains
    before = snapshot(net)
    assert not trainer.train_step(tiny_batch(1), 2).offsets_frozen
    assert any(".conv_offset." in k for k in changed(before, net))


def test_step_reports_every_packs_offset_statistics():
    torch.manual_seed(0)
    net = EDVR(**TINY_EDVR)
    trainer = Trainer(net, train_options(), torch.device("cpu"))
    trainer.train_step(tiny_batch(), 1)
    stats = trainer.train_step(tiny_batch(1), 2)
    assert trainer.pack_names == ["l3", "l2", "l1", "cas_dcnpack"]
    assert stats.offsets == [pack.offset_stats for pack in net.dcn_packs]
    assert all(0 < s.mean_abs <= s.max_abs and 0 < s.mean_mask < 1 for s in stats.offsets)
    assert stats.health.finite and stats.health.loss == stats.loss


def test_guard_learning_rate_scales_apply_on_the_schedule_and_are_saved():
    torch.manual_seed(0)
    opts = train_options(optim={"lr": 1e-3, "dcn_lr_mul": 2.0})
    trainer = Trainer(EDVR(**TINY_EDVR), opts, torch.device("cpu"))
    trainer.scale_learning_rates(0.5, 0.1)
    trainer.train_step(tiny_batch(), 1)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [pytest.approx(5e-4), pytest.approx(1e-4)]
    resumed = Trainer(EDVR(**TINY_EDVR), opts, torch.device("cpu"))
    resumed.load_state_dict(trainer.state_dict())
    assert (resumed.lr_scale, resumed.dcn_lr_scale) == (0.5, 0.1)
    resumed.train_step(tiny_batch(1), 2)
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [pytest.approx(5e-4), pytest.approx(1e-4)]


def test_nonfinite_gradients_with_a_finite_loss_skip_the_step():
    torch.manual_seed(0)
    net = EDVR(**TINY_EDVR)
    trainer = Trainer(net, train_options(ema_decay=0.9), torch.device("cpu"))
    trainer.train_step(tiny_batch(), 1)  # Adam moments exist
    before, ema_before = snapshot(net), snapshot(trainer.net_ema)
    moments = [s["exp_avg"].clone() for s in trainer.optimizer.state.values()]
    hook = net.conv_last.weight.register_hook(lambda grad: grad * float("inf"))
    stats = trainer.train_step(tiny_batch(1), 2)
    hook.remove()
    assert stats.skipped and math.isfinite(stats.loss) and not stats.health.finite
    assert not changed(before, net) and not changed(ema_before, trainer.net_ema)
    assert all(torch.equal(m, s["exp_avg"]) for m, s in zip(moments, trainer.optimizer.state.values()))
    assert not trainer.train_step(tiny_batch(2), 3).skipped and changed(before, net)
