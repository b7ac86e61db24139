"""The grid of deformable-convolution cases every DCN backend is tested on.

Shared by the reference/torchvision tests (test_dcn.py) and the native-kernel
tests, so every implementation faces the same shapes and offsets.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class DcnCase:
    batch: int = 2
    in_channels: int = 16
    out_channels: int = 8
    height: int = 7
    width: int = 9  # non-square by default
    kernel: tuple[int, int] = (3, 3)
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 1
    dilation: int | tuple[int, int] = 1
    deform_groups: int = 1
    groups: int = 1
    offset_scale: float = 2.0  # offsets ~ U(-scale, scale) + shift, in pixels
    offset_shift: float = 0.0
    masked: bool = True  # False: mask=None (DCNv1)
    bias: bool = True

    @property
    def id(self) -> str:
        fields = (
            f"b{self.batch}", f"c{self.in_channels}-{self.out_channels}", f"{self.height}x{self.width}",
            f"k{self.kernel[0]}x{self.kernel[1]}", f"s{self.stride}", f"p{self.padding}",
            f"d{self.dilation}", f"dg{self.deform_groups}", f"g{self.groups}",
            f"off{self.offset_scale:g}+{self.offset_shift:g}", "mask" if self.masked else "nomask",
            "bias" if self.bias else "nobias",
        )
        return "-".join(fields).replace(" ", "").replace("(", "").replace(")", "").replace(",", "_")


def _grid() -> list[DcnCase]:
    cases = [
        DcnCase(stride=s, padding=p, dilation=d, deform_groups=dg, groups=1 + (i % 2))
        for i, (s, p, d, dg) in enumerate(itertools.product((1, 2), (0, 1, 2), (1, 2), (1, 8)))
    ]
    cases += [
        DcnCase(batch=1, height=12, width=5, kernel=(3, 1), padding=(1, 0)),  # non-square kernel
        DcnCase(kernel=(1, 3), stride=(2, 1), padding=(0, 2), dilation=(1, 3)),  # per-axis args
        DcnCase(masked=False, deform_groups=8),  # DCNv1
        DcnCase(bias=False, deform_groups=2, groups=4),
        DcnCase(offset_scale=6.0, deform_groups=8),  # many samples partly outside the image
        DcnCase(offset_scale=0.4, offset_shift=-1.6),  # samples straddling the top/left border
        DcnCase(offset_scale=0.5, offset_shift=40.0),  # every sample fully outside: output = bias
        DcnCase(batch=3, in_channels=64, out_channels=64, height=8, width=8, deform_groups=8),  # EDVR-like
    ]
    return cases


CASES: list[DcnCase] = _grid()


def make_inputs(
    case: DcnCase,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    requires_grad: bool = False,
    contiguous: bool = True,
    seed: int = 0,
) -> tuple[dict[str, Tensor | None], dict[str, object]]:
    """Random tensors for ``case``: ({x, offset, mask, weight, bias}, {stride, padding, dilation}).

    ``contiguous=False`` returns the same values as non-contiguous views (x and offset
    channels-last, weight transposed storage), to exercise stride handling.
    """
    from ops.dcn import conv_output_size
    from ops.dcn.function import _pair

    generator = torch.Generator().manual_seed(seed)
    stride, padding, dilation = (_pair(v, n, 0) for v, n in (
        (case.stride, "stride"), (case.padding, "padding"), (case.dilation, "dilation")))
    out_h, out_w = conv_output_size((case.height, case.width), case.kernel, stride, padding, dilation)
    points = case.kernel[0] * case.kernel[1]

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, dtype=torch.float64)

    tensors: dict[str, Tensor | None] = {
        "x": rand(case.batch, case.in_channels, case.height, case.width) * 2 - 1,
        "offset": (rand(case.batch, 2 * case.deform_groups * points, out_h, out_w) * 2 - 1)
        * case.offset_scale + case.offset_shift,
        "mask": rand(case.batch, case.deform_groups * points, out_h, out_w) if case.masked else None,
        "weight": (rand(case.out_channels, case.in_channels // case.groups, *case.kernel) * 2 - 1) * 0.5,
        "bias": rand(case.out_channels) if case.bias else None,
    }
    for name, value in tensors.items():
        if value is None:
            continue
        value = value.to(device=device, dtype=dtype)
        if not contiguous:
            value = _non_contiguous(value)
        tensors[name] = value.requires_grad_(requires_grad)
    return tensors, {"stride": stride, "padding": padding, "dilation": dilation}


def _non_contiguous(t: Tensor) -> Tensor:
    if t.dim() == 4:
        view = t.contiguous(memory_format=torch.channels_last)
        if view.is_contiguous() and t.shape[1] > 1 and t.shape[2] * t.shape[3] > 1:
            raise AssertionError("expected a non-contiguous view")
        return view
    return torch.stack((t, t), dim=1)[:, 0]  # 1-D: a stride-2 view with the same values
