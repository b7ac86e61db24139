"""The grid of deformable-convolution cases every DCN backend is tested on, and the helpers
that run a backend on them.

Shared by the reference/torchvision tests (test_dcn.py) and the native-kernel
tests (test_dcn_native.py), so every implementation faces the same shapes and offsets.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from ops.dcn import conv_output_size, deform_conv2d
from ops.dcn.function import _pair


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

# Small cases for torch.autograd.gradcheck (thousands of calls each).
GRADCHECK_CASES = [
    DcnCase(batch=2, in_channels=4, out_channels=2, height=5, width=6, deform_groups=2, offset_scale=1.5),
    DcnCase(batch=1, in_channels=4, out_channels=4, height=6, width=5, stride=2, padding=2, dilation=2,
            groups=2, offset_scale=3.0),
    DcnCase(batch=1, in_channels=2, out_channels=2, height=4, width=4, masked=False, offset_scale=1.0),
    DcnCase(batch=2, in_channels=4, out_channels=4, height=4, width=5, deform_groups=4, groups=4,
            bias=False, offset_scale=0.4, offset_shift=-1.6),
]

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}  # max |backend - reference|
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}  # half the gap from 1 to the next value
INPUT_NAMES = ("x", "offset", "mask", "weight", "bias")


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


def run(tensors: dict, kwargs: dict, backend: str) -> Tensor:
    """``deform_conv2d`` on ``make_inputs``' tensors and keyword arguments."""
    t = tensors
    return deform_conv2d(t["x"], t["offset"], t["mask"], t["weight"], t["bias"], **kwargs, backend=backend)


def outputs_and_grads(
    tensors: dict, kwargs: dict, backend: str, upstream_dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """Output and the gradients of every input for a fixed, non-uniform upstream gradient.

    ``upstream_dtype``: round the upstream gradient to that dtype first (a float64 reference
    then sees the very values a 16-bit run gets).
    """
    leaves = {k: v.detach().clone().requires_grad_(True) if v is not None else None for k, v in tensors.items()}
    out = run(leaves, kwargs, backend)
    upstream = torch.linspace(-1, 1, out.numel(), dtype=upstream_dtype or out.dtype, device=out.device)
    upstream = upstream.to(out.dtype).view_as(out)
    (out * upstream).sum().backward()
    result = {"out": out.detach()}
    result.update({f"grad_{name}": t.grad for name, t in leaves.items() if t is not None})
    return result


def gradcheck(case: DcnCase, backend: str) -> bool:
    """torch.autograd.gradcheck of ``backend`` on ``case`` (float64) w.r.t. every input."""
    tensors, kwargs = make_inputs(case, torch.float64, requires_grad=True, seed=3)
    names = [n for n in INPUT_NAMES if tensors[n] is not None]

    def fn(*inputs):
        return run(dict(zip(names, inputs), **{n: None for n in INPUT_NAMES if n not in names}), kwargs, backend)

    return torch.autograd.gradcheck(fn, [tensors[n] for n in names], eps=1e-6, atol=1e-6)

