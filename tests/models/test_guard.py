"""The divergence guard's decisions: conditions, patience, healthy checkpoints, rollback targets, state."""

from __future__ import annotations

import math

import pytest

from models.guard import (LOSS_SPIKE, MASKS, NON_FINITE, OFFSETS, DivergenceGuard, NonFiniteLossError,
                          StepHealth, TrainingDiverged)
from ops.dcn.modules import OffsetStats
from options.parse import Validator
from options.schema import GuardOptions

PACKS = ["l3", "l2", "l1", "cas_dcnpack"]


def guard(max_nonfinite_steps: int = 3, patch_size: int | None = None, **overrides) -> DivergenceGuard:
    opts = Validator("test").parse(GuardOptions, {"loss_window": 5, **overrides}, "train.guard")
    return DivergenceGuard(opts, max_nonfinite_steps, PACKS, patch_size)


def health(loss: float = 1.0, offset: float = 1.0, finite: bool = True, pack: int = 2,
           mask: float = 0.5) -> StepHealth:
    offsets = [OffsetStats(offset if i == pack else 1.0, 3 * offset, mask if i == pack else 0.5)
               for i in range(len(PACKS))]
    return StepHealth(loss, finite, offsets)


def run(g: DivergenceGuard, steps, start: int = 1):
    """Observe ``steps`` (StepHealth) from iteration ``start``; the first trigger, or None."""
    for iteration, step in enumerate(steps, start):
        trigger = g.observe(iteration, step)
        if trigger is not None:
            return trigger
    return None


def test_offsets_above_the_threshold_for_patience_iterations_trigger():
    g = guard(patience=3)
    assert run(g, [health(offset=60), health(offset=60), health(offset=10), health(offset=60)]) is None
    trigger = run(g, [health(offset=60), health(offset=70)], start=5)
    assert trigger is not None and trigger.iteration == 6 and trigger.cause == OFFSETS
    assert "l1 70.0 px" in trigger.detail and "above 50 px for 3 iterations" in trigger.detail
    assert run(guard(patience=1), [health(offset=math.nan)]).cause == OFFSETS  # NaN offsets are not healthy


def test_offset_threshold_is_capped_at_the_training_patch():
    g = guard(patience=1, patch_size=16)
    assert g.observe(1, health(offset=15)) is None
    trigger = g.observe(2, health(offset=17))
    assert "above 16 px (train.guard.offset_threshold 50 capped at the 16-pixel training patch)" in \
        trigger.detail
    assert guard(patch_size=64).offset_threshold == 50 and guard(patch_size=64).threshold_text == "50 px"


def test_offset_threshold_null_watches_no_offsets():
    assert run(guard(offset_threshold=None, patience=1), [health(offset=1e4)] * 5) is None


def test_a_collapsed_mask_for_patience_iterations_triggers():
    g = guard(patience=2)  # min_mask_mean 0.05 by default
    assert run(g, [health(mask=0.01), health(mask=0.2), health(mask=0.04)]) is None
    trigger = run(g, [health(mask=0.002)], start=4)
    assert trigger is not None and trigger.iteration == 4 and trigger.cause == MASKS
    assert trigger.detail == "mean mask below 0.05 (train.guard.min_mask_mean) for 2 iterations (l1 0.002)"
    assert run(guard(patience=1), [health(mask=math.nan)]).cause == MASKS  # NaN masks are not healthy
    assert run(guard(patience=1, min_mask_mean=None), [health(mask=0.0)] * 5) is None


def test_a_checkpoint_whose_masks_sank_below_twice_the_minimum_is_no_rollback_target():
    g = guard()
    run(g, [health(mask=0.3), health(mask=0.09)])
    assert "mean mask fell to 0.090" in g.checkpoint_written(2)
    run(g, [health(mask=0.1)], start=3)
    assert g.checkpoint_written(3) is None
    run(g, [health(mask=0.08)], start=4)  # the step on its weights
    assert g.ring == []
    run(g, [health(mask=0.5)], start=5)
    assert "fell to 0.080" in g.checkpoint_written(5)  # step 4 belongs to the period of checkpoint 5
    run(g, [health(mask=0.5)], start=6)
    assert g.checkpoint_written(6) is None
    run(g, [health(mask=0.5)], start=7)
    assert g.ring == [6]


def test_a_rollback_for_the_dcn_packs_brings_an_absurd_dcn_multiplier_down_to_the_cap():
    def dcn_factor(cause_steps, dcn_lr_mul: float, **overrides) -> float:
        g = guard(patience=1, **overrides)
        g.checkpoint_written(0)
        return g.plan_rollback(run(g, [health(), *cause_steps]), dcn_lr_mul).dcn_lr_factor

    offsets, masks, nonfinite = [health(offset=60)], [health(mask=0.001)], [health(finite=False)] * 3
    assert dcn_factor(offsets, 300) == pytest.approx(1 / 300)  # max_dcn_lr_mul 1 by default
    assert dcn_factor(masks, 75) == pytest.approx(1 / 75)
    assert dcn_factor(masks, 2, max_dcn_lr_mul=0.1) == pytest.approx(0.05)
    assert dcn_factor(offsets, 1) == 0.25  # below the cap: dcn_lr_factor alone
    assert dcn_factor(offsets, 300, max_dcn_lr_mul=None) == 0.25
    assert dcn_factor(nonfinite, 300) == 0.25  # not the DCN packs' trouble: every learning rate x lr_factor


def test_loss_spike_against_the_running_median_once_the_window_is_full():
    g = guard(patience=2, loss_spike_factor=10)  # window 5
    assert run(g, [health(loss=1.0), health(loss=50.0), health(loss=50.0)]) is None  # window not full yet
    g = guard(patience=2, loss_spike_factor=10)
    steps = [health(loss=v) for v in (1.0, 2.0, 1.5, 1.0, 3.0)]  # median 1.5
    assert run(g, [*steps, health(loss=16.0), health(loss=1.0), health(loss=16.0)]) is None  # not in a row
    trigger = run(g, [health(loss=40.0)], start=9)
    assert trigger.cause == LOSS_SPIKE and "above 10 x its running median" in trigger.detail


def test_isolated_nonfinite_steps_are_skipped_a_streak_triggers():
    g = guard(max_nonfinite_steps=3)
    assert run(g, [health(finite=False), health(finite=False), health(), health(finite=False)]) is None
    trigger = run(g, [health(finite=False), health(finite=False)], start=5)
    assert trigger.cause == NON_FINITE and "3 consecutive steps" in trigger.detail


def test_disabled_guard_only_stops_after_the_nonfinite_streak():
    g = guard(max_nonfinite_steps=2, enabled=False)
    assert run(g, [health(offset=1e4, loss=1e9)] * 10) is None
    with pytest.raises(NonFiniteLossError, match="2 consecutive non-finite losses up to iteration 12") as err:
        run(g, [health(finite=False)] * 2, start=11)
    assert "train.grad_clip" in err.value.hint


def test_rollback_goes_to_the_newest_healthy_checkpoint_and_further_back_when_trouble_returns():
    g = guard(patience=2, ring_size=3, dcn_lr_factor=0.25, lr_factor=0.5)
    g.checkpoint_written(0)
    run(g, [health()] * 10)
    assert g.checkpoint_written(10) is None
    run(g, [*[health()] * 5, health(offset=60), *[health()] * 4], start=11)  # trouble seen once
    assert "trouble" in g.checkpoint_written(20)
    assert g.ring == [0, 10]

    rollback = g.plan_rollback(run(g, [health(offset=60)] * 2, start=21))
    assert (rollback.target, rollback.lr_factor, rollback.dcn_lr_factor) == (10, 1.0, 0.25)  # DCN only
    g.rewind(None)
    rollback = g.plan_rollback(run(g, [health(finite=False)] * 3, start=11))  # back before a new checkpoint
    assert (rollback.target, rollback.lr_factor) == (0, 0.5)  # one further back; every learning rate too
    assert g.rollbacks == 2 and [h["target"] for h in g.history] == [10, 0]

    g.rewind(None)
    run(g, [health()] * 30, start=1)
    assert g.checkpoint_written(30) is None
    assert g.plan_rollback(run(g, [health(), *[health(offset=90)] * 2], start=31)).target == 30


def test_a_checkpoint_is_a_rollback_target_once_the_step_on_its_weights_is_healthy(caplog):
    g = guard()
    run(g, [health(offset=20), health(offset=25)])
    assert g.checkpoint_written(2) is None and g.ring == []  # healthy so far, offsets at most 25 px
    run(g, [health(offset=3)], start=3)  # the first step on its weights
    assert g.ring == [2]
    run(g, [health(offset=26)], start=4)  # creeping above half the threshold
    assert "reached 26.0 px" in g.checkpoint_written(4)
    run(g, [health(offset=3)], start=5)
    assert g.checkpoint_written(5) is None
    with caplog.at_level("INFO", logger="models.guard"):
        run(g, [health(offset=30)], start=6)  # the update of step 5 was the start of the trouble
    assert g.ring == [2] and "checkpoint of iteration 5 is not a rollback target" in caplog.text


def test_ring_keeps_the_newest_healthy_checkpoints():
    g = guard(ring_size=2)
    for iteration in (0, 5, 10, 15):
        assert g.checkpoint_written(iteration) is None
        g.observe(iteration + 1, health())
    assert g.ring == [10, 15]


def test_max_rollbacks_stops_with_the_cause_and_what_to_try():
    g = guard(patience=1, max_rollbacks=1)
    g.checkpoint_written(0)
    g.plan_rollback(run(g, [health(), health(offset=80)]))
    expected = (r"diverged at iteration 2: mean \|offset\|.*1 rollback\(s\) done "
                r"\(train.guard.max_rollbacks\).*checkpoint, iteration 0")
    with pytest.raises(TrainingDiverged, match=expected) as error:
        g.plan_rollback(run(g, [health(), health(offset=80)]))
    assert "train.optim.dcn_lr_mul" in error.value.hint and "network.max_offset" in error.value.hint
    assert "--auto-resume" in error.value.hint and g.history[-1]["action"] == "stop"
    with pytest.raises(TrainingDiverged, match="no healthy checkpoint"):
        fresh = guard(patience=1)
        fresh.plan_rollback(run(fresh, [health(offset=80)]))


def test_state_round_trip_and_rewind_keep_the_record_and_restore_the_branch():
    g = guard(patience=3)
    g.checkpoint_written(0)
    run(g, [health(loss=2.0), health(offset=70)])
    saved_at_2 = g.state_dict()
    rollback = g.plan_rollback(run(g, [health(offset=70)] * 2, start=3))  # 3 in a row at iteration 4
    g.rewind(saved_at_2)
    assert (g.losses, g.offset_streak, g.dirty) == ([2.0, 1.0], 1, True)
    assert g.rollbacks == 1 and g.last_target == rollback.target == 0

    restored = guard(patience=3)
    restored.load_state_dict(g.state_dict())
    assert restored.state_dict() == g.state_dict()
    empty = guard()
    empty.load_state_dict({})  # a training state written before the guard existed
    assert empty.state_dict() == guard().state_dict()
