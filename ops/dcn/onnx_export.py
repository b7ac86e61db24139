"""The DCN ops as the standard ONNX ``DeformConv`` (opset 19+), for ``torch.onnx.export(..., dynamo=True)``.

``translation_table()`` maps our ``vidrestore::deform_conv2d`` and torchvision's
``torchvision::deform_conv2d`` (whichever are registered in this process) to onnxscript
functions that emit one ``DeformConv`` node each: inputs X, W, offset, B, mask; attributes
``group``, ``offset_group``, ``kernel_shape``, ``pads``, ``strides``, ``dilations``. The offset
and mask layouts of all three are the same ([group][kernel point][dy, dx], in input pixels), so
nothing is rearranged. The exported graph needs no custom domain: ONNX Runtime runs it (CPU
kernel), TensorRT 10.1+ parses it as a native layer.

Imports onnxscript: only the export code imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from onnxscript import opset19

DEFORM_CONV_OPSET = 19  # the first opset with DeformConv


def last_opset() -> int:
    """The highest opset an export can target here: what the installed onnx defines, and at most
    what onnxscript's version converter reaches. torch.onnx builds the graph at its own opset (18)
    and converts it; beyond the converter's range it falls back to onnx's C converter, which has
    no DeformConv adapter, so the export would fail (measured: onnxscript 0.7.2 reaches 25,
    onnx 1.23.2 defines 28)."""
    import onnx
    from onnxscript.version_converter import _version_converter

    converter_max = getattr(_version_converter, "SUPPORTED_MAX_ONNX_OPSET", None)
    if converter_max is None:  # a later onnxscript: no known limit but onnx's own
        return onnx.defs.onnx_opset_version()
    return min(onnx.defs.onnx_opset_version(), converter_max)


def _static_dim(value: Any, axis: int, what: str) -> int:
    """A dimension of an exported value that must be known at export time (channels, kernel size)."""
    shape = getattr(value, "shape", None)
    dim = shape[axis] if shape is not None and len(shape) > axis else None
    if not isinstance(dim, int):
        name = getattr(value, "name", value)
        raise ValueError(f"DeformConv export: the {what} (dimension {axis} of {name}) must be static, "
                         f"got {dim!r}")
    return dim


def _deform_conv(x, weight, offset, bias, mask, stride: Sequence[int], padding: Sequence[int],
                 dilation: Sequence[int], groups: int, offset_groups: int):
    kernel = [_static_dim(weight, 2, "kernel height"), _static_dim(weight, 3, "kernel width")]
    return opset19.DeformConv(
        x, weight, offset, bias, mask,
        dilations=[int(d) for d in dilation],
        group=int(groups),
        kernel_shape=kernel,
        offset_group=int(offset_groups),
        pads=[int(padding[0]), int(padding[1]), int(padding[0]), int(padding[1])],  # top, left, bottom, right
        strides=[int(s) for s in stride],
    )


def vidrestore_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation):
    """``vidrestore::deform_conv2d`` (``ops.dcn.deform_conv2d``'s argument order): groups and
    offset groups are read off the static channel counts, as the op itself does."""
    points = _static_dim(weight, 2, "kernel height") * _static_dim(weight, 3, "kernel width")
    groups = _static_dim(x, 1, "input channels") // _static_dim(weight, 1, "input channels per group")
    offset_groups = _static_dim(offset, 1, "offset channels") // (2 * points)
    return _deform_conv(x, weight, offset, bias, mask, stride, padding, dilation, groups, offset_groups)


def torchvision_deform_conv2d(x, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                              dilation_h, dilation_w, groups, offset_groups, use_mask):
    """``torchvision::deform_conv2d``: without ``use_mask`` its mask input is a placeholder, left out."""
    return _deform_conv(x, weight, offset, bias, mask if use_mask else None, (stride_h, stride_w),
                        (pad_h, pad_w), (dilation_h, dilation_w), groups, offset_groups)


def translation_table() -> dict[Any, Callable]:
    """``custom_translation_table`` for ``torch.onnx.export``: each DCN op registered in this
    process (ours once the native library is loaded, torchvision's once torchvision is imported)."""
    try:
        import torchvision  # noqa: F401  registers torchvision::deform_conv2d
    except Exception:  # no (working) torchvision: its op cannot be in a graph either
        pass
    table = {}
    if hasattr(torch.ops.vidrestore, "deform_conv2d"):
        table[torch.ops.vidrestore.deform_conv2d.default] = vidrestore_deform_conv2d
    if hasattr(torch.ops.torchvision, "deform_conv2d"):
        table[torch.ops.torchvision.deform_conv2d.default] = torchvision_deform_conv2d
    return table
