"""The training side of a network: optimiser, loss, EMA, AMP, TSA warm-up, DDP wrapping.

``Trainer.train_step(batch, iteration)`` runs one optimisation step. Everything it
decides per step (learning rate, which parameters train) is a function of the
iteration number and of its saved state (the divergence guard's learning-rate scales),
so a resumed run takes the same decisions as an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ops.dcn.modules import OffsetStats, dcn_packs, named_dcn_packs

from .guard import StepHealth
from .losses import PixelLoss
from .restoration.engine import choose_precision
from .schedulers import LRSchedule


logger = logging.getLogger(__name__)


@dataclass
class StepStats:
    loss: float  # mean over ranks
    lr: float
    fusion_only: bool
    skipped: bool = False  # the loss or the gradients were not finite: no update was made
    offsets: list[OffsetStats] = field(default_factory=list)  # per DCN pack (see Trainer.read_health)
    offsets_frozen: bool = False

    @property
    def health(self) -> StepHealth:
        return StepHealth(self.loss, not self.skipped, self.offsets)


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
        self._phase: tuple[bool, bool] | None = None  # (fusion only, offsets frozen) as the parameters are
        named = named_dcn_packs(net)
        self.pack_names = [name.rsplit(".", 1)[-1] for name, _ in named]  # EDVR: l3, l2, l1, cas_dcnpack
        self.packs = [pack for _, pack in named]
        # The divergence guard's learning-rate scales (saved state): every group's lr is multiplied
        # by lr_scale, the DCN group's also by dcn_lr_scale.
        self.lr_scale = 1.0
        self.dcn_lr_scale = 1.0

    # -- what trains when ---------------------------------------------------------------------

    def fusion_only(self, iteration: int) -> bool:
        """TSA warm-up: during iterations 1..tsa_iter only the fusion module trains."""
        return iteration <= self.opts.tsa_iter

    def offsets_frozen(self, iteration: int) -> bool:
        """Offset warm-up: during iterations 1..offset_warmup_iter every DCN pack's offset predictor
        (``conv_offset``) is frozen."""
        return iteration <= self.opts.offset_warmup_iter

    def _enter_phase(self, fusion_only: bool, offsets_frozen: bool) -> None:
        if (fusion_only, offsets_frozen) == self._phase:
            return
        fusion = set(map(id, self.net.fusion.parameters())) if fusion_only else None
        frozen = set()
        if offsets_frozen:
            frozen = {id(p) for pack in self.packs for p in pack.conv_offset.parameters()}
        for p in self.net.parameters():
            p.requires_grad_((fusion is None or id(p) in fusion) and id(p) not in frozen)
            if not p.requires_grad:
                p.grad = None
        if self.distributed:
            # DDP registers hooks for the parameters that require grad when it is built, so it is
            # rebuilt at each phase change. Frozen parameters do not require grad, hence every
            # parameter DDP knows is used: no find_unused_parameters (and its extra graph pass).
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.net, device_ids=device_ids)
        self._phase = (fusion_only, offsets_frozen)

    # -- learning rates -----------------------------------------------------------------------

    def group_lr_scales(self) -> list[float]:
        """The guard's factor of each optimiser group (others, then DCN)."""
        scales = [self.lr_scale, self.lr_scale * self.dcn_lr_scale]
        return scales[: len(self.optimizer.param_groups)]

    def scale_learning_rates(self, factor: float, dcn_factor: float) -> None:
        """Multiply every group's learning rate by ``factor`` and the DCN group's also by
        ``dcn_factor``, from the next step on (the divergence guard's action; saved state)."""
        self.lr_scale *= factor
        self.dcn_lr_scale *= dcn_factor

    # -- one step -----------------------------------------------------------------------------

    def train_step(self, batch: dict, iteration: int) -> StepStats:
        """Forward, loss, backward, (clip), optimiser step and EMA update for ``iteration``.

        A step whose loss or gradients are not finite on some rank is skipped on every rank
        (weights, moments and EMA unchanged). With fp16 the GradScaler handles non-finite
        gradients itself (it skips and lowers its scale), so only the loss is checked.
        """
        fusion_only, offsets_frozen = self.fusion_only(iteration), self.offsets_frozen(iteration)
        self._enter_phase(fusion_only, offsets_frozen)
        self.schedule.apply(self.optimizer, iteration)
        for group, scale in zip(self.optimizer.param_groups, self.group_lr_scales()):
            group["lr"] *= scale
        self.model.train()

        lq = batch["lq"].to(self.device, non_blocking=True)
        gt = batch["gt"].to(self.device, non_blocking=True)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype)
                    if self.amp_dtype is not None else nullcontext())
        self.optimizer.zero_grad(set_to_none=True)
        with autocast:
            output = self.model(lq)
        loss = self.loss_fn(output.float(), gt)
        self.scaler.scale(loss).backward()

        trained = [p for p in self.net.parameters() if p.requires_grad and p.grad is not None]
        grad_norm = None
        if self.opts.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = nn.utils.clip_grad_norm_(trained, self.opts.grad_clip)
        elif not self.scaler.is_enabled():
            grad_norm = nn.utils.get_total_norm([p.grad for p in trained])
        loss_value, finite, offsets = self.read_health(loss, None if self.scaler.is_enabled() else grad_norm)
        stats = StepStats(loss_value, self.optimizer.param_groups[0]["lr"], fusion_only, offsets=offsets,
                          offsets_frozen=offsets_frozen)
        if not finite:
            self._skip_nonfinite(loss_value, batch, iteration, unscaled=self.opts.grad_clip is not None)
            stats.skipped = True
            return stats
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.net_ema is not None:
            self.update_ema()
        return stats

    def read_health(self, loss: Tensor, grad_norm: Tensor | None) -> tuple[float, bool, list[OffsetStats]]:
        """(loss, finite, offset statistics per DCN pack) of this step, combined over ranks: mean
        loss; finite when the loss (and ``grad_norm``) is finite on every rank; per pack the mean
        of the ranks' mean |offset| and mean mask and the max of their max |offset|. Every rank
        gets the same values (one all_gather), so all take the same decisions (skip, roll back).
        This is the step's one host read: the packs' statistics were computed on the device."""
        finite = torch.isfinite(loss.detach())
        if grad_norm is not None:
            finite = finite & torch.isfinite(grad_norm)
        pack_stats = [pack.offset_stats_tensor for pack in self.packs]
        if any(stats is None for stats in pack_stats):  # e.g. under torch.compile: no statistics
            pack_stats = []
        vector = torch.cat([loss.detach().float().reshape(1), finite.float().reshape(1), *pack_stats])
        if self.distributed:
            gathered = [torch.empty_like(vector) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, vector)
            rows = torch.stack(gathered).tolist()
        else:
            rows = [vector.tolist()]
        count = len(rows)
        loss_value = sum(row[0] for row in rows) / count
        finite_everywhere = all(row[1] == 1.0 for row in rows)
        offsets = []
        for i in range(len(pack_stats)):
            column = [row[2 + 3 * i : 5 + 3 * i] for row in rows]
            offsets.append(OffsetStats(sum(c[0] for c in column) / count, max(c[1] for c in column),
                                       sum(c[2] for c in column) / count))
        return loss_value, finite_everywhere, offsets

    def _skip_nonfinite(self, loss: float, batch: dict, iteration: int, unscaled: bool) -> None:
        if self.scaler.is_enabled():  # fp16: the scaler sees the non-finite gradients and lowers its scale
            if not unscaled:
                self.scaler.unscale_(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        keys = batch.get("key", "?")
        logger.warning("iteration %d: non-finite loss or gradients (loss %s); step skipped, weights "
                       "unchanged (batch keys: %s)", iteration, loss, keys)

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
        """Optimiser and AMP scaler state and the guard's learning-rate scales (weights and EMA go
        to the weights file)."""
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "lr_scale": self.lr_scale, "dcn_lr_scale": self.dcn_lr_scale}

    def load_state_dict(self, state: dict) -> None:
        """Restore optimiser moments, the AMP scaler and the guard's learning-rate scales. The
        hyperparameters (learning rates, betas, weight decay) stay those of the current options, so
        a resume with a changed ``train.optim`` applies the change (the scales apply on top)."""
        settings = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        saved_groups = len(state["optimizer"]["param_groups"])
        if saved_groups != len(settings):
            raise ValueError(f"the training state has {saved_groups} parameter group(s), this network and "
                             f"optimiser {len(settings)}: it was written by another network or version")
        self.optimizer.load_state_dict(state["optimizer"])
        for group, own in zip(self.optimizer.param_groups, settings):
            group.update(own)
        self.scaler.load_state_dict(state["scaler"])
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self.dcn_lr_scale = float(state.get("dcn_lr_scale", 1.0))

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
