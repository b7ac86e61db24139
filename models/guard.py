"""The divergence guard: watches every training step and decides when to roll back.

Pure bookkeeping, no tensors and no files: ``train.py`` hands it what each step measured
(``observe``) and which checkpoints it wrote (``checkpoint_written``), and carries out the
rollbacks it asks for (``plan_rollback``). Everything it decides is a function of its state
(saved in every training state) and of the values it is shown, which are the same on every
rank and, on CPU, in a resumed run: so rollbacks resume exactly and DDP ranks agree.

Watched (``train.guard``): a DCN pack's mean |offset| above ``offset_threshold`` pixels (capped
at the training patch's side: an offset longer than the patch samples outside it), a pack's
mean mask below ``min_mask_mean`` (the pack passes almost nothing: its alignment collapsed) and
the loss above ``loss_spike_factor`` times its running median over ``loss_window`` iterations
(each for ``patience`` iterations in a row), and ``train.max_nonfinite_steps`` steps in a row
whose loss or gradients were not finite (an isolated one is skipped by the trainer). A
checkpoint is healthy when, from the step after the previous one to the step after it (the
first to run on its weights), no condition held (not even once), no step was skipped, every
pack's mean |offset| stayed at most half the threshold and every pack's mean mask at least twice
the minimum (values creeping towards a limit are the start of the trouble, not a state to go
back to). The newest healthy checkpoints (``ring_size``) are the rollback targets; a trouble
that comes back before a new healthy checkpoint was written goes one checkpoint further back.
A rollback for offsets or masks (the DCN packs' trouble) also brings the DCN packs' learning-rate
multiplier down to ``max_dcn_lr_mul`` when it is above.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from ops.dcn.modules import OffsetStats

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The training diverged and the guard may not (or cannot) roll back any more.

    A user error (one ``error:`` line and exit status 2): the recipe needs changing; ``hint``
    says what to try.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class NonFiniteLossError(TrainingDiverged):
    """Too many consecutive training steps had a NaN or infinite loss (guard disabled)."""


OFFSETS, MASKS, LOSS_SPIKE, NON_FINITE = "offsets", "masks", "loss spike", "non-finite"
DCN_CAUSES = (OFFSETS, MASKS)  # the DCN packs' own trouble: only their learning rate is lowered
HEALTHY_MARGIN = 2.0  # a healthy checkpoint: offsets at most threshold / this, masks at least minimum x this

HINTS = {
    OFFSETS: "lower train.optim.dcn_lr_mul or train.optim.lr, set train.grad_clip, bound the offsets of a "
             "new model with network.max_offset, or start the large model from a trained smaller one "
             "(path.pretrain_network_g)",
    MASKS: "lower train.optim.dcn_lr_mul (the DCN packs learn too fast: their masks collapsed), set "
           "train.grad_clip, or lower train.guard.min_mask_mean if such masks are normal for this model",
    LOSS_SPIKE: "lower train.optim.lr (and train.optim.dcn_lr_mul), set train.grad_clip, or check the data",
    NON_FINITE: "lower train.optim.lr, set train.grad_clip, or check the data of the batch keys logged above",
}


@dataclass(frozen=True)
class StepHealth:
    """What one step measured, combined over ranks (identical on every rank)."""

    loss: float  # mean over ranks
    finite: bool  # loss (and, without fp16, gradients) finite on every rank: else the step was skipped
    offsets: Sequence[OffsetStats] = ()  # per DCN pack: rank mean of mean |offset| and mask, max of max


@dataclass(frozen=True)
class Trigger:
    """Why the guard stepped in: ``cause`` (OFFSETS, MASKS, LOSS_SPIKE, NON_FINITE) and a sentence."""

    iteration: int
    cause: str
    detail: str


@dataclass(frozen=True)
class Rollback:
    """What to do about a trigger: restore checkpoint ``target`` and multiply the learning rates."""

    trigger: Trigger
    target: int
    lr_factor: float  # every group
    dcn_lr_factor: float  # the DCN group, on top


class DivergenceGuard:
    """Decides, step by step, whether the training must roll back (see the module docstring).

    ``opts``: ``options.schema.GuardOptions``; ``max_nonfinite_steps``: non-finite steps in a
    row that trigger (guard enabled) or stop the training (``NonFiniteLossError``, disabled);
    ``pack_names``: labels of the DCN packs, in the order of ``StepHealth.offsets``;
    ``patch_size``: the side of a training patch in the offsets' pixels (None: no cap).
    """

    def __init__(self, opts, max_nonfinite_steps: int, pack_names: Sequence[str] = (),
                 patch_size: int | None = None):
        self.opts = opts
        self.max_nonfinite_steps = max_nonfinite_steps
        self.pack_names = list(pack_names)
        self.offset_threshold, self.threshold_text = offset_threshold(opts.offset_threshold, patch_size)
        # the run so far (kept across rollbacks)
        self.rollbacks = 0
        self.ring: list[int] = []  # healthy checkpoint iterations, oldest first
        self.last_target: int | None = None
        self.history: list[dict] = []  # one entry per rollback (and the final stop)
        # the current branch (rewound with the weights on a rollback)
        self.dirty = False  # a condition held, or a step was skipped, since the last checkpoint
        self.peak_offset = 0.0  # the largest mean |offset| of a pack since the last checkpoint
        self.floor_mask = 1.0  # the smallest mean mask of a pack since the last checkpoint
        self.pending: int | None = None  # a checkpoint healthy so far, until the step on its weights
        self.nonfinite_streak = 0
        self.offset_streak = 0
        self.mask_streak = 0
        self.spike_streak = 0
        self.losses: list[float] = []  # the last loss_window finite losses, oldest first

    @property
    def enabled(self) -> bool:
        return self.opts.enabled

    def describe(self) -> str:
        """One sentence for the log: what triggers a rollback."""
        nonfinite = f"{self.max_nonfinite_steps} non-finite steps in a row"
        if not self.enabled:
            return f"divergence guard off: {nonfinite} stop the training"
        opts = self.opts
        mask = "" if opts.min_mask_mean is None else f", a pack's mean mask below {opts.min_mask_mean:g}"
        spike = "" if opts.loss_spike_factor is None else (
            f", the loss above {opts.loss_spike_factor:g} x its running median over {opts.loss_window} "
            "iterations")
        return (f"divergence guard: a pack's mean |offset| above {self.threshold_text}{mask}{spike} "
                f"({opts.patience} iterations in a row) or {nonfinite} roll the training back "
                f"(at most {opts.max_rollbacks} times)")

    # -- every step ---------------------------------------------------------------------------

    def observe(self, iteration: int, health: StepHealth) -> Trigger | None:
        """Take in a step's health; a ``Trigger`` when the training must roll back."""
        if not health.finite:
            self.dirty = True
            self._confirm_pending(False, "a non-finite loss or gradients")
            self.nonfinite_streak += 1
            if self.nonfinite_streak < self.max_nonfinite_steps:
                return None
            detail = (f"{self.nonfinite_streak} consecutive steps with a non-finite loss or gradients "
                      f"up to iteration {iteration} (train.max_nonfinite_steps)")
            if not self.enabled:
                raise NonFiniteLossError(
                    f"{self.nonfinite_streak} consecutive non-finite losses up to iteration {iteration} "
                    "(train.max_nonfinite_steps): the training diverged; the last checkpoint is intact",
                    hint=HINTS[NON_FINITE])
            return Trigger(iteration, NON_FINITE, detail)
        self.nonfinite_streak = 0
        if not self.enabled:
            return None
        high = self._high_offsets(health.offsets)
        low = self._low_masks(health.offsets)
        spike = self._spike(health.loss)
        self.losses = (self.losses + [health.loss])[-self.opts.loss_window:]
        self.offset_streak = self.offset_streak + 1 if high else 0
        self.mask_streak = self.mask_streak + 1 if low else 0
        self.spike_streak = self.spike_streak + 1 if spike is not None else 0
        condition = bool(high) or bool(low) or spike is not None
        self.dirty = self.dirty or condition
        step_peak = max((s.mean_abs for s in health.offsets), default=0.0)
        step_floor = min((s.mean_mask for s in health.offsets), default=1.0)
        self.peak_offset = max(self.peak_offset, step_peak)
        self.floor_mask = min(self.floor_mask, step_floor)
        if condition:
            self._confirm_pending(False, "a trigger condition")
        elif not self._masks_healthy(step_floor):
            self._confirm_pending(False, f"a mean mask of {step_floor:.3f}")
        else:
            self._confirm_pending(self._offsets_healthy(step_peak), f"a mean |offset| of {step_peak:.1f} px")
        if self.offset_streak >= self.opts.patience:
            listed = ", ".join(f"{name} {value:.1f} px" for name, value in high)
            return Trigger(iteration, OFFSETS, f"mean |offset| above {self.threshold_text} for "
                                               f"{self.offset_streak} iterations ({listed})")
        if self.mask_streak >= self.opts.patience:
            listed = ", ".join(f"{name} {value:.3f}" for name, value in low)
            return Trigger(iteration, MASKS, f"mean mask below {self.opts.min_mask_mean:g} (train.guard."
                                             f"min_mask_mean) for {self.mask_streak} iterations ({listed})")
        if self.spike_streak >= self.opts.patience:
            factor = self.opts.loss_spike_factor
            return Trigger(iteration, LOSS_SPIKE, f"loss {health.loss:.4g} above {factor:g} x its running "
                                                  f"median {spike:.4g} for {self.spike_streak} iterations")
        return None

    def _names(self, offsets: Sequence[OffsetStats]) -> list[str]:
        return self.pack_names or [f"pack {i}" for i in range(len(offsets))]

    def _high_offsets(self, offsets: Sequence[OffsetStats]) -> list[tuple[str, float]]:
        threshold = self.offset_threshold
        if threshold is None:
            return []
        return [(name, s.mean_abs) for name, s in zip(self._names(offsets), offsets, strict=True)
                if not s.mean_abs <= threshold]  # NaN counts as high

    def _low_masks(self, offsets: Sequence[OffsetStats]) -> list[tuple[str, float]]:
        minimum = self.opts.min_mask_mean
        if minimum is None:
            return []
        return [(name, s.mean_mask) for name, s in zip(self._names(offsets), offsets, strict=True)
                if not s.mean_mask >= minimum]  # NaN counts as low

    def _offsets_healthy(self, peak: float) -> bool:
        """Whether a mean |offset| of ``peak`` (the largest of the packs') is fit for a rollback target."""
        return self.offset_threshold is None or peak <= self.offset_threshold / HEALTHY_MARGIN

    def _masks_healthy(self, floor: float) -> bool:
        """Whether a mean mask of ``floor`` (the smallest of the packs') is fit for a rollback target."""
        return self.opts.min_mask_mean is None or floor >= self.opts.min_mask_mean * HEALTHY_MARGIN

    def _confirm_pending(self, healthy: bool, what: str) -> None:
        """The step on the weights of the pending checkpoint decides whether it is a rollback target."""
        if self.pending is None:
            return
        if healthy:
            self.ring = ([i for i in self.ring if i < self.pending] + [self.pending])[-self.opts.ring_size:]
        else:
            logger.info("the checkpoint of iteration %d is not a rollback target: the step on its weights "
                        "measured %s", self.pending, what)
        self.pending = None

    def _spike(self, loss: float) -> float | None:
        """The running median when ``loss`` is a spike above it, else None."""
        factor = self.opts.loss_spike_factor
        if factor is None or len(self.losses) < self.opts.loss_window:
            return None
        median = statistics.median(self.losses)
        return median if loss > factor * median else None

    # -- checkpoints --------------------------------------------------------------------------

    def checkpoint_written(self, iteration: int) -> str | None:
        """Call when the checkpoint of ``iteration`` is about to be saved (before ``state_dict``).
        One healthy so far becomes a rollback target if the next step, the first on its weights, is
        healthy too. Returns why it is no rollback target, or None."""
        if self.dirty or self.nonfinite_streak:
            reason = "the guard saw trouble since the previous checkpoint"
        elif not self._offsets_healthy(self.peak_offset):
            reason = (f"a mean |offset| reached {self.peak_offset:.1f} px since the previous checkpoint, "
                      f"above half the guard's threshold of {self.offset_threshold:g} px")
        elif not self._masks_healthy(self.floor_mask):
            reason = (f"a mean mask fell to {self.floor_mask:.3f} since the previous checkpoint, below twice "
                      f"train.guard.min_mask_mean {self.opts.min_mask_mean:g}")
        else:
            reason = None
            self.pending = iteration
        self.dirty, self.peak_offset, self.floor_mask = False, 0.0, 1.0
        return reason

    # -- rollbacks ----------------------------------------------------------------------------

    def plan_rollback(self, trigger: Trigger, dcn_lr_mul: float = 1.0) -> Rollback:
        """The rollback for ``trigger``, recorded in the guard's state; raises ``TrainingDiverged``
        when ``max_rollbacks`` are spent or no healthy checkpoint exists. ``dcn_lr_mul``: the DCN
        packs' learning rate now, relative to the others' (``train.optim.dcn_lr_mul`` times the
        factors of earlier rollbacks)."""
        diverged = f"the training diverged at iteration {trigger.iteration}: {trigger.detail}"
        if not self.ring:
            raise TrainingDiverged(f"{diverged}; there is no healthy checkpoint to roll back to",
                                   hint=HINTS[trigger.cause])
        if self.ring[-1] == self.last_target and len(self.ring) > 1:
            self.ring.pop()  # the trouble came back from there: one further back
        target = self.ring[-1]
        record = {"iteration": trigger.iteration, "cause": trigger.cause, "detail": trigger.detail,
                  "target": target}
        if self.rollbacks >= self.opts.max_rollbacks:
            self.history.append({**record, "action": "stop"})
            raise TrainingDiverged(
                f"{diverged}; {self.rollbacks} rollback(s) done (train.guard.max_rollbacks), stopping at the "
                f"last healthy checkpoint, iteration {target}",
                hint=HINTS[trigger.cause] + f"; then continue from iteration {target} with --auto-resume "
                     "(or raise train.guard.max_rollbacks)")
        lr_factor = 1.0 if trigger.cause in DCN_CAUSES else self.opts.lr_factor
        dcn_lr_factor = self.opts.dcn_lr_factor
        cap = self.opts.max_dcn_lr_mul
        if trigger.cause in DCN_CAUSES and cap is not None and dcn_lr_mul * dcn_lr_factor > cap:
            dcn_lr_factor = cap / dcn_lr_mul  # an absurd multiplier comes down in one rollback
        self.rollbacks += 1
        self.last_target = target
        self.history.append({**record, "action": "rollback", "lr_factor": lr_factor,
                             "dcn_lr_factor": dcn_lr_factor})
        return Rollback(trigger, target, lr_factor, dcn_lr_factor)

    def rewind(self, target_state: dict | None) -> None:
        """After the weights of the target were restored: the current branch's bookkeeping as it
        was at the target (from its saved guard state), the run's record kept."""
        for key, default in BRANCH_FIELDS.items():
            value = default if target_state is None else target_state.get(key, default)
            setattr(self, key, list(value) if isinstance(value, list) else value)

    # -- state for exact resume ---------------------------------------------------------------

    def state_dict(self) -> dict:
        """Plain values only (torch.load(weights_only=True) reads them back)."""
        keys = ("rollbacks", "ring", "last_target", "history", *BRANCH_FIELDS)
        state = {key: getattr(self, key) for key in keys}
        return {key: list(value) if isinstance(value, list) else value for key, value in state.items()}

    def load_state_dict(self, state: dict) -> None:
        self.rollbacks = int(state.get("rollbacks", 0))
        self.ring = [int(i) for i in state.get("ring", [])]
        self.last_target = state.get("last_target")
        self.history = list(state.get("history", []))
        self.rewind(state)


def offset_threshold(configured: float | None, patch_size: int | None) -> tuple[float | None, str]:
    """The mean |offset| the guard allows (pixels; None: not watched) and how to name it: the
    configured one, capped at the training patch's side (an offset longer than the patch samples
    outside it)."""
    if configured is None or patch_size is None or patch_size >= configured:
        return configured, f"{configured:g} px" if configured is not None else "none"
    return float(patch_size), (f"{patch_size} px (train.guard.offset_threshold {configured:g} capped at the "
                               f"{patch_size}-pixel training patch)")


# The bookkeeping of the current branch and its values at the start of a training
BRANCH_FIELDS = {"dirty": False, "peak_offset": 0.0, "floor_mask": 1.0, "pending": None,
                 "nonfinite_streak": 0, "offset_streak": 0, "mask_streak": 0, "spike_streak": 0, "losses": []}
