"""``deform_conv2d``: the one entry point of the op, with its argument checks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .backends import get_backend

IntPair = int | Sequence[int]

def deform_conv2d(
    x: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    *,
    backend: str | None = None,
) -> Tensor:
    """Modulated deformable convolution (DCNv2; DCNv1 when ``mask`` is None).

    Args:
        x: input, (B, Cin, H, W).
        offset: (B, 2*G*kh*kw, Ho, Wo), channel layout [group][kernel point][dy, dx]
            (as torchvision and mmcv), in input pixels. G, the number of deformable
            groups, is offset channels / (2*kh*kw); group g deforms input channels
            [g*Cin/G, (g+1)*Cin/G).
        mask: (B, G*kh*kw, Ho, Wo), multiplies each sample (already sigmoid-ed), or None.
        weight: (Cout, Cin/groups, kh, kw); ``groups`` is read from its shape, as in
            torchvision.
        bias: (Cout,) or None.
        stride, padding, dilation: int or (vertical, horizontal).
        backend: "auto", "native", "torchvision" or "reference"; None reads
            ``$VIDRESTORE_DCN`` (default "auto"). Chosen once per process and device type
            of x; see ``ops.dcn.backends``.

    Under bfloat16 autocast on the CPU with the native backend the op runs in bfloat16, as
    ``F.conv2d`` does (the kernel samples with float32 coordinates and accumulates in float32),
    and returns bfloat16. Otherwise (torchvision or reference backend, CUDA, float16) it runs
    in float32 and returns the dtype of x, as torchvision's op.

    Returns:
        (B, Cout, Ho, Wo) with Ho = (H + 2*pad - dilation*(kh-1) - 1) // stride + 1.

    Raises:
        ValueError: a tensor's shape, dtype or device does not fit, naming the tensor,
            what was expected and what was given.
        BackendUnavailable: the backend asked for by name cannot run inputs on x's device
            here (e.g. ``native`` for CUDA inputs with the CPU-only build).
    """
    if torch.is_autocast_enabled(x.device.type):
        dtype = _autocast_dtype(x.device.type, backend)
        with torch.autocast(x.device.type, enabled=False):
            cast = [t.to(dtype) if t is not None else None for t in (x, offset, mask, weight, bias)]
            out = deform_conv2d(*cast, stride, padding, dilation, backend=backend)
        return out.to(x.dtype) if dtype == torch.float32 else out  # torchvision's rule, or as F.conv2d
    stride = _pair(stride, "stride", minimum=1)
    padding = _pair(padding, "padding", minimum=0)
    dilation = _pair(dilation, "dilation", minimum=1)
    _check_tensors(x, offset, mask, weight, bias, stride, padding, dilation)
    kernel = get_backend(backend, x.device.type).forward
    return kernel(x, offset, mask, weight, bias, stride, padding, dilation)

def _autocast_dtype(device_type: str, backend: str | None) -> torch.dtype:
    """The dtype the op runs in under autocast on ``device_type``.

    Our native CPU kernel computes bfloat16 natively (bfloat16 storage, float32 coordinates and
    sums): under bfloat16 autocast it runs in bfloat16, as F.conv2d. torchvision's kernel, the
    reference, our CUDA kernel (not measured on a GPU yet) and float16 on the CPU (computed in
    float32 anyway) keep torchvision's rule: float32, which the sampling coordinates need where
    they are computed in the input dtype.
    """
    dtype = torch.get_autocast_dtype(device_type)
    if device_type == "cpu" and dtype == torch.bfloat16 and get_backend(backend, "cpu").name == "native":
        return dtype
    return torch.float32

def conv_output_size(
    size: tuple[int, int], kernel_size: tuple[int, int], stride: tuple[int, int],
    padding: tuple[int, int], dilation: tuple[int, int],
) -> tuple[int, int]:
    """(Ho, Wo) of a convolution over an input of spatial size (H, W)."""
    return tuple(
        (size[d] + 2 * padding[d] - dilation[d] * (kernel_size[d] - 1) - 1) // stride[d] + 1
        for d in range(2)
    )

def _pair(value: IntPair, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, int):
        pair = (value, value)
    elif isinstance(value, Sequence):
        pair = tuple(value)
    else:
        raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}")
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name}: expected values >= {minimum}, got {value!r}")
    return pair

def _check_tensors(x, offset, mask, weight, bias, stride, padding, dilation) -> None:
    named = {"x": x, "offset": offset, "mask": mask, "weight": weight, "bias": bias}
    for name, tensor in named.items():
        if tensor is None:
            continue
        if not isinstance(tensor, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got dtype {tensor.dtype}")
        if tensor.dtype != x.dtype or tensor.device != x.device:
            raise ValueError(
                f"{name}: expected dtype {x.dtype} on {x.device} (as x), "
                f"got dtype {tensor.dtype} on {tensor.device}"
            )
    for name in ("x", "offset", "weight"):
        if named[name].dim() != 4:
            raise ValueError(f"{name}: expected a 4-D tensor, got shape {tuple(named[name].shape)}")

    batch, in_channels, height, width = x.shape
    out_channels, in_per_group, kernel_h, kernel_w = weight.shape
    if in_per_group == 0 or in_channels % in_per_group or out_channels % (in_channels // in_per_group):
        raise ValueError(
            f"weight: expected shape (Cout, Cin/groups, kh, kw) with Cin={in_channels} and Cout "
            f"divisible by groups, got {tuple(weight.shape)}"
        )
    out_h, out_w = conv_output_size((height, width), (kernel_h, kernel_w), stride, padding, dilation)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"x: spatial size {(height, width)} is too small for kernel {(kernel_h, kernel_w)} with "
            f"stride {stride}, padding {padding}, dilation {dilation} (output would be {(out_h, out_w)})"
        )

    points = kernel_h * kernel_w
    offset_channels = offset.shape[1]
    if offset_channels == 0 or offset_channels % (2 * points):
        raise ValueError(
            f"offset: channels must be a positive multiple of 2*kh*kw = {2 * points} "
            f"(2 * deformable groups * kernel points), got shape {tuple(offset.shape)}"
        )
    deform_groups = offset_channels // (2 * points)
    if in_channels % deform_groups:
        raise ValueError(
            f"x: input channels ({in_channels}) must be divisible by the deformable groups "
            f"({deform_groups} = offset channels {offset_channels} / (2*kh*kw))"
        )
    expected = (batch, offset_channels, out_h, out_w)
    if tuple(offset.shape) != expected:
        raise ValueError(
            f"offset: expected shape {expected} (batch of x, channels, conv output size), "
            f"got {tuple(offset.shape)}"
        )
    if mask is not None:
        expected = (batch, deform_groups * points, out_h, out_w)
        if tuple(mask.shape) != expected:
            raise ValueError(
                f"mask: expected shape {expected} (batch, deformable groups {deform_groups} * kernel "
                f"points {points}, conv output size), got {tuple(mask.shape)}"
            )
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"bias: expected shape ({out_channels},), got {tuple(bias.shape)}")


__all__ = ["deform_conv2d", "conv_output_size"]
