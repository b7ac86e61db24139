"""``ModulatedDeformConv2d`` and EDVR's ``DCNv2Pack`` (parameter names as BasicSR)."""

from __future__ import annotations

import logging
import math

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
    is split into o1, o2, m; offset = cat(o1, o2), mask = sigmoid(m).

    Divergence monitor: the mean |offset| of the last call is kept in
    ``offset_magnitude`` (a float, None before the first reading) and a warning is
    logged when it rises above 50 pixels (once per excursion). On CPU it is read at
    once. On CUDA, reading it would stall the GPU, so each call starts an
    asynchronous copy to pinned host memory and a later call reads it once the copy
    has finished (no sync; the value lags a few calls). Under ``torch.compile`` the
    monitor is off, so the compiled graph stays free of host reads.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
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

    @property
    def offset_magnitude(self) -> float | None:
        return self._monitor.value

    def forward(self, x: Tensor, feat: Tensor) -> Tensor:
        out = self.conv_offset(feat)
        # The reference splits out into thirds (o1, o2, mask) and takes offset = cat(o1, o2):
        # that is the first two thirds, a view here (no copy).
        offset, mask = out.split((out.shape[1] // 3 * 2, out.shape[1] // 3), dim=1)
        if not torch.compiler.is_compiling():
            self._monitor.record(offset)
        return deform_conv2d(
            x, offset, torch.sigmoid(mask), self.weight, self.bias, self.stride, self.padding,
            self.dilation, backend=self.backend,
        )


def dcn_packs(module: nn.Module) -> list[DCNv2Pack]:
    """Every DCNv2Pack inside ``module`` (itself included), in ``module.modules()`` order."""
    return [m for m in module.modules() if isinstance(m, DCNv2Pack)]


class OffsetMonitor:
    """Mean |offset| of a DCNv2Pack, read without stalling the GPU (see DCNv2Pack).

    Holds no state worth copying: deepcopy/pickle (EMA copies, checkpoints of the
    module object) start a fresh monitor.
    """

    def __init__(self) -> None:
        self.value: float | None = None
        self._diverging = False
        self._host: Tensor | None = None  # pinned buffer the device value is copied into
        self._copy_done: torch.cuda.Event | None = None

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def record(self, offset: Tensor) -> None:
        offset = offset.detach()
        magnitude = torch.linalg.vector_norm(offset, ord=1) / offset.numel()  # mean |offset|, no |.| copy
        if not magnitude.is_cuda:
            self._update(float(magnitude))
            return
        if self._copy_done is not None:
            if not self._copy_done.query():
                return  # the previous copy is still in flight: skip this reading
            self._update(float(self._host))
        if self._host is None:
            self._host = torch.empty((), dtype=magnitude.dtype, pin_memory=True)
        self._host.copy_(magnitude, non_blocking=True)
        self._copy_done = torch.cuda.Event()
        self._copy_done.record()

    def _update(self, value: float) -> None:
        self.value = value
        diverging = value > OFFSET_DIVERGENCE_THRESHOLD
        if diverging and not self._diverging:
            logger.warning(
                "DCNv2Pack: mean |offset| is %.1f px (> %.0f): the alignment is diverging; "
                "consider a lower learning rate for the offsets or gradient clipping",
                value, OFFSET_DIVERGENCE_THRESHOLD,
            )
        self._diverging = diverging
