"""The training side of a network: optimiser, loss, EMA, AMP, TSA warm-up, DDP wrapping.

``Trainer.train_step(batch, iteration)`` runs one optimisation step. Everything it
decides per step (learning rate, which parameters train) is a function of the
iteration number, so a resumed run takes the same decisions as an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ops.dcn import dcn_packs

from .checkpoint import unwrap
from .losses import PixelLoss
from .restoration.engine import choose_precision
from .schedulers import LRSchedule


logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive training steps had a NaN or infinite loss."""


@dataclass
class StepStats:
    loss: float | Tensor  # a device tensor: read it only when logging (reading syncs)
    lr: float
    fusion_only: bool
    skipped: bool = False  # the loss was not finite: no update was made


def resolve_amp(amp: str, device: torch.device) -> str:
    """``train.amp`` as it runs on ``device``: "auto" becomes "bf16" where the hardware computes bfloat16
    natively (``models.restoration.engine.choose_precision``), else "none"; the choice is logged."""
    if amp != "auto":
        return amp
    chosen = choose_precision("auto", device)
    resolved = {"fp32": "none"}.get(chosen.name, chosen.name)
    logger.info("train.amp auto: %s (%s)", resolved, chosen.reason)
    return resolved


class Trainer:
    """Trains ``net`` (already on ``device``) with the recipe in ``train_opts`` (options.TrainOptions).

    ``model`` is what runs the forward pass (DDP-wrapped when ``distributed``);
    ``net`` the plain network; ``net_ema`` its exponential moving average (or None).
    """

    def __init__(self, net: nn.Module, train_opts, device: torch.device, distributed: bool = False):
        self.net = net
        self.opts = train_opts
        self.device = device
        self.distributed = distributed
        if train_opts.channels_last:
            net.to(memory_format=torch.channels_last)

        optim = train_opts.optim
        self.optimizer = _build_optimizer(net, optim.type, optim.lr, tuple(optim.betas), optim.weight_decay,
                                          optim.dcn_lr_mul)
        sched = train_opts.scheduler
        self.schedule = LRSchedule(sched.type, tuple(sched.periods), tuple(sched.restart_weights),
                                   sched.eta_min, train_opts.warmup_iter)
        if sched.type != "constant" and self.schedule.total_period < train_opts.total_iter:
            raise ValueError(
                f"train.scheduler.periods sum to {self.schedule.total_period} < train.total_iter "
                f"{train_opts.total_iter}: the schedule must cover every iteration"
            )
        loss = train_opts.pixel_loss
        self.loss_fn = PixelLoss(loss.type, loss.loss_weight, loss.reduction, loss.eps)

        self.net_ema = None
        if train_opts.ema_decay > 0:
            self.net_ema = copy.deepcopy(net).eval().requires_grad_(False)

        self.amp = resolve_amp(train_opts.amp, device)
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.amp]
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == "fp16")
        self.model: nn.Module = net
        self._fusion_only: bool | None = None  # the phase the parameters are set up for
        self.nonfinite_streak = 0  # consecutive steps skipped for a non-finite loss

    # -- what trains when ---------------------------------------------------------------------

    def fusion_only(self, iteration: int) -> bool:
        """TSA warm-up: during iterations 1..tsa_iter only the fusion module trains."""
        return iteration <= self.opts.tsa_iter

    def _enter_phase(self, fusion_only: bool) -> None:
        if fusion_only == self._fusion_only:
            return
        fusion = set(map(id, self.net.fusion.parameters())) if fusion_only else None
        for p in self.net.parameters():
            p.requires_grad_(fusion is None or id(p) in fusion)
            if not p.requires_grad:
                p.grad = None
        if self.distributed:
            # DDP registers hooks for the parameters that require grad when it is built, so it is
            # rebuilt at each phase change. Frozen parameters do not require grad, hence every
            # parameter DDP knows is used: no find_unused_parameters (and its extra graph pass).
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.net, device_ids=device_ids)
        self._fusion_only = fusion_only

    # -- one step -----------------------------------------------------------------------------

    def train_step(self, batch: dict, iteration: int) -> StepStats:
        """Forward, loss, backward, (clip), optimiser step and EMA update for ``iteration``."""
        fusion_only = self.fusion_only(iteration)
        self._enter_phase(fusion_only)
        self.schedule.apply(self.optimizer, iteration)
        self.model.train()

        lq = batch["lq"].to(self.device, non_blocking=True)
        gt = batch["gt"].to(self.device, non_blocking=True)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype)
                    if self.amp_dtype is not None else nullcontext())
        with autocast:
            output = self.model(lq)
        loss = self.loss_fn(output.float(), gt)

        self.optimizer.zero_grad(set_to_none=True)
        if not self._finite_on_every_rank(loss):
            self._skip_nonfinite(loss, batch, iteration)
            return StepStats(loss.detach(), self.optimizer.param_groups[0]["lr"], fusion_only, skipped=True)
        self.nonfinite_streak = 0
        self.scaler.scale(loss).backward()
        if self.opts.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_([p for p in self.net.parameters() if p.requires_grad], self.opts.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.net_ema is not None:
            self.update_ema()
        return StepStats(loss.detach(), self.optimizer.param_groups[0]["lr"], fusion_only)

    def _finite_on_every_rank(self, loss: Tensor) -> bool:
        """Whether the loss is finite here and on every other rank (all must skip together, or DDP
        would wait forever for the gradients of the rank that skipped). Reads one value per step."""
        finite = torch.isfinite(loss.detach()).to(torch.float32)
        if self.distributed:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item())

    def _skip_nonfinite(self, loss: Tensor, batch: dict, iteration: int) -> None:
        self.nonfinite_streak += 1
        keys = batch.get("key", "?")
        logger.warning("iteration %d: non-finite loss (%s on this rank); step skipped, weights unchanged "
                       "(%d in a row; batch keys: %s)", iteration, float(loss.detach()), self.nonfinite_streak, keys)
        if self.nonfinite_streak >= self.opts.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"{self.nonfinite_streak} consecutive non-finite losses up to iteration {iteration} "
                f"(train.max_nonfinite_steps): the training diverged; the last checkpoint is intact. Lower "
                "train.optim.lr, set train.grad_clip, or check the data of the keys logged above")

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema = decay * ema + (1 - decay) * weights, for every parameter; buffers copied."""
        decay = self.opts.ema_decay
        ema_params = list(self.net_ema.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in self.net.parameters()], 1 - decay)
        for ema_buffer, buffer in zip(self.net_ema.buffers(), self.net.buffers()):
            ema_buffer.copy_(buffer)

    # -- state for exact resume ---------------------------------------------------------------

    def state_dict(self) -> dict:
        """Optimiser and AMP scaler state (weights and EMA go to the weights file)."""
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore optimiser moments and the AMP scaler. The hyperparameters (learning rates,
        betas, weight decay) stay those of the current options, so a resume with a changed
        ``train.optim`` applies the change."""
        settings = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        saved_groups = len(state["optimizer"]["param_groups"])
        if saved_groups != len(settings):
            raise ValueError(f"the training state has {saved_groups} parameter group(s), this network and "
                             f"optimiser {len(settings)}: it was written by another network or version")
        self.optimizer.load_state_dict(state["optimizer"])
        for group, own in zip(self.optimizer.param_groups, settings):
            group.update(own)
        self.scaler.load_state_dict(state["scaler"])

    def offset_magnitudes(self) -> list[float]:
        """Mean |offset| (pixels) of each DCNv2Pack's last forward, for the training log."""
        packs = dcn_packs(unwrap(self.net))
        return [p.offset_magnitude for p in packs if p.offset_magnitude is not None]


def _build_optimizer(net: nn.Module, kind: str, lr: float, betas: tuple[float, float],
                     weight_decay: float, dcn_lr_mul: float) -> torch.optim.Optimizer:
    """Two parameter groups when the network has DCNv2Packs: the others, then every pack's
    parameters (its weight, bias and offset predictor; chosen by module type) with
    ``lr * dcn_lr_mul``. Always two, so that a resume may change ``dcn_lr_mul``."""
    dcn = [p for pack in dcn_packs(net) for p in pack.parameters()]
    if not dcn:
        groups = [{"params": list(net.parameters()), "lr": lr, "base_lr": lr}]
    else:
        dcn_ids = set(map(id, dcn))
        others = [p for p in net.parameters() if id(p) not in dcn_ids]
        groups = [{"params": others, "lr": lr, "base_lr": lr},
                  {"params": dcn, "lr": lr * dcn_lr_mul, "base_lr": lr * dcn_lr_mul}]
    optimizer_class = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[kind]
    return optimizer_class(groups, lr=lr, betas=betas, weight_decay=weight_decay)
