"""``ModulatedDeformConv2d`` and EDVR's ``DCNv2Pack`` (parameter names as BasicSR)."""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .function import IntPair, _pair, deform_conv2d

logger = logging.getLogger(__name__)

OFFSET_DIVERGENCE_THRESHOLD = 50.0  # mean |offset| in pixels above which alignment is diverging


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer whose offsets and mask are given to ``forward``.

    Parameters ``weight`` (Cout, Cin/groups, kh, kw) and ``bias`` (Cout,), initialised
    as the reference: weight ~ U(-1/sqrt(Cin*kh*kw), +1/sqrt(Cin*kh*kw)), bias = 0.
    ``backend`` (None: ``$VIDRESTORE_DCN`` or auto) is passed to ``deform_conv2d``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = True,
        backend: str | None = None,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                f"divisible by groups ({groups})"
            )
        if in_channels % deformable_groups:
            raise ValueError(
                f"deformable_groups: in_channels ({in_channels}) must be divisible by "
                f"deformable_groups ({deformable_groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size", minimum=1)
        self.stride = _pair(stride, "stride", minimum=1)
        self.padding = _pair(padding, "padding", minimum=0)
        self.dilation = _pair(dilation, "dilation", minimum=1)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return deform_conv2d(
            x, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, deformable_groups={self.deformable_groups}, bias={self.bias is not None}"
        )


class DCNv2Pack(ModulatedDeformConv2d):
    """DCNv2 whose offsets and mask are predicted from a separate feature (EDVR's PCD).

    ``forward(x, feat)``: ``conv_offset(feat)`` (3*G*kh*kw channels, zero-initialised)
    is split into o1, o2, m; offset = cat(o1, o2), mask = sigmoid(m). With ``max_offset``
    (pixels, None: unbounded, as the reference) the offsets are ``max_offset *
    tanh(offset / max_offset)``: the same for small offsets, never beyond ``max_offset``.

    Offset statistics: each call computes, on the offsets' device, the mean |offset|,
    the max |offset| (pixels) and the mean mask (``OffsetStats``). ``offset_stats_tensor``
    is that (3,) float32 tensor of the last call (for a trainer that reads it with its own
    per-step values); ``offset_stats`` (``OffsetStats``, None before the first reading) and
    ``offset_magnitude`` (its mean |offset|) are host values. A warning is logged when the
    mean |offset| rises above 50 pixels (once per excursion). On CPU the values are read at
    once. On CUDA, reading them would stall the GPU, so each call starts an asynchronous copy
    to pinned host memory and a later call reads it once the copy has finished (no sync; the
    host values lag a few calls). Under ``torch.compile`` the statistics are off, so the
    compiled graph stays free of host reads; ``track_offsets = False`` turns them off (restoration
    does: about 10% of a bfloat16 frame on CPU went into them).
    """

    def __init__(self, *args, max_offset: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if max_offset is not None and not max_offset > 0:
            raise ValueError(f"max_offset: expected a number of pixels > 0 or None, got {max_offset}")
        self.max_offset = max_offset
        kernel_h, kernel_w = self.kernel_size
        self.conv_offset = nn.Conv2d(
            self.in_channels,
            self.deformable_groups * 3 * kernel_h * kernel_w,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=True,
        )
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        self._monitor = OffsetMonitor()
        self.track_offsets = True  # False: no statistics (restoration, which never reads them)

    @property
    def offset_stats(self) -> OffsetStats | None:
        return self._monitor.value

    @property
    def offset_stats_tensor(self) -> Tensor | None:
        return self._monitor.latest

    @property
    def offset_magnitude(self) -> float | None:
        return None if self._monitor.value is None else self._monitor.value.mean_abs

    def forward(self, x: Tensor, feat: Tensor) -> Tensor:
        out = self.conv_offset(feat)
        # The reference splits out into thirds (o1, o2, mask) and takes offset = cat(o1, o2):
        # that is the first two thirds, a view here (no copy).
        offset, mask = out.split((out.shape[1] // 3 * 2, out.shape[1] // 3), dim=1)
        if self.max_offset is not None:
            offset = self.max_offset * torch.tanh(offset / self.max_offset)
        mask = torch.sigmoid(mask)
        if self.track_offsets and not torch.compiler.is_compiling():
            self._monitor.record(offset, mask)
        return deform_conv2d(
            x, offset, mask, self.weight, self.bias, self.stride, self.padding,
            self.dilation, backend=self.backend,
        )

    def extra_repr(self) -> str:
        bound = f", max_offset={self.max_offset}" if self.max_offset is not None else ""
        return super().extra_repr() + bound


def dcn_packs(module: nn.Module) -> list[DCNv2Pack]:
    """Every DCNv2Pack inside ``module`` (itself included), in ``module.modules()`` order."""
    return [m for m in module.modules() if isinstance(m, DCNv2Pack)]


def named_dcn_packs(module: nn.Module) -> list[tuple[str, DCNv2Pack]]:
    """(dotted name, pack) of every DCNv2Pack inside ``module``, in ``module.modules()`` order
    (EDVR: ``pcd_align.dcn_pack.l3``, ``.l2``, ``.l1``, ``pcd_align.cas_dcnpack``)."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, DCNv2Pack)]


class OffsetStats(NamedTuple):
    """One DCNv2Pack call's offsets: mean and max |offset| (pixels) and mean mask (0..1)."""

    mean_abs: float
    max_abs: float
    mean_mask: float


def offset_statistics(offset: Tensor, mask: Tensor) -> Tensor:
    """(mean |offset|, max |offset|, mean mask) as a (3,) float32 tensor on the inputs' device
    (no host read)."""
    offset, mask = offset.detach(), mask.detach()
    dtype = torch.promote_types(offset.dtype, torch.float32)  # half precision summed in float32
    # One |offset| temporary and plain reductions: 4x faster than vector_norm(ord=1/inf, dtype=...)
    # on a bfloat16 channel slice of a channels-last tensor (which converts the whole slice first).
    magnitude = offset.abs()
    max_abs = magnitude.amax().to(dtype) if magnitude.numel() else magnitude.new_zeros((), dtype=dtype)
    return torch.stack((magnitude.sum(dtype=dtype) / offset.numel(), max_abs,
                        mask.sum(dtype=dtype) / mask.numel())).float()


class OffsetMonitor:
    """The offset statistics of a DCNv2Pack, read without stalling the GPU (see DCNv2Pack).

    Holds no state worth copying: deepcopy/pickle (EMA copies, checkpoints of the
    module object) start a fresh monitor.
    """

    def __init__(self) -> None:
        self.value: OffsetStats | None = None
        self.latest: Tensor | None = None  # the last call's statistics, on its device
        self._diverging = False
        self._host: Tensor | None = None  # pinned buffer the device values are copied into
        self._copy_done: torch.cuda.Event | None = None

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def record(self, offset: Tensor, mask: Tensor) -> None:
        stats = offset_statistics(offset, mask)
        self.latest = stats
        if not stats.is_cuda:
            self._update(OffsetStats(*stats.tolist()))
            return
        if self._copy_done is not None:
            if not self._copy_done.query():
                return  # the previous copy is still in flight: skip this reading
            self._update(OffsetStats(*self._host.tolist()))
        if self._host is None:
            self._host = torch.empty(3, dtype=stats.dtype, pin_memory=True)
        self._host.copy_(stats, non_blocking=True)
        self._copy_done = torch.cuda.Event()
        self._copy_done.record()

    def _update(self, value: OffsetStats) -> None:
        self.value = value
        diverging = value.mean_abs > OFFSET_DIVERGENCE_THRESHOLD
        if diverging and not self._diverging:
            logger.warning(
                "DCNv2Pack: mean |offset| is %.1f px (> %.0f): the alignment is diverging; "
                "consider a lower learning rate for the offsets or gradient clipping",
                value.mean_abs, OFFSET_DIVERGENCE_THRESHOLD,
            )
        self._diverging = diverging
