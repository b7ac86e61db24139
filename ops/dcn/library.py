"""Load the native DCN library as the op ``torch.ops.vidrestore.deform_conv2d``.

``load(with_cuda)`` finds the library in the build cache (``ops.dcn.build``), builds it first
when it is missing or out of date, loads it, and registers, next to its C++ kernels, the
autograd formula (the fused backward op) and the fake kernels that ``torch.compile`` traces
with. Loading an up-to-date library compiles nothing and imports no ``torch.utils.cpp_extension``.

A loaded library cannot be unloaded: the one this process loaded is remembered. A failed load
is not: the next call tries again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from . import build
from .build import NativeBuildError
from .function import conv_output_size

OP_NAME = "vidrestore::deform_conv2d"


@dataclass(frozen=True)
class NativeLibrary:
    """A loaded flavour of the library."""

    name: str  # extension name, e.g. "vidrestore_dcn_cpu"
    with_cuda: bool
    path: Path  # the shared library
    build_seconds: float  # time spent building (when needed) and loading
    devices: frozenset[str]  # device types with a kernel: {"cpu"} or {"cpu", "cuda"}


_loaded: NativeLibrary | None = None  # the library loaded into this process


def load(with_cuda: bool) -> NativeLibrary:
    """Load one flavour (building it first if needed) and register autograd and fake kernels.

    Returns at once when that flavour is already loaded.

    Raises:
        NativeBuildError: why the library cannot be built or loaded, and the fix.
    """
    global _loaded
    if _loaded is not None:
        if _loaded.with_cuda != with_cuda:
            raise NativeBuildError(
                f"{_loaded.name} is already loaded in this process, so {build.extension_name(with_cuda)} "
                f"cannot be. Fix: restart the process (with {build.CUDA_ENV_VAR} set as wanted)"
            )
        return _loaded
    start = time.perf_counter()
    path = build.library_path(with_cuda)
    if not build.is_up_to_date(path, with_cuda):
        path = build.build(with_cuda)
    _load_shared_library(path)
    _register_python_parts()
    devices = frozenset(d for d in ("cpu", "cuda") if has_kernel(d))
    seconds = time.perf_counter() - start
    _loaded = NativeLibrary(build.extension_name(with_cuda), with_cuda, path, seconds, devices)
    return _loaded


def has_kernel(device_type: str) -> bool:
    """Whether the loaded op has a kernel for ``device_type`` ("cpu", "cuda")."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, key)


def _op_is_registered() -> bool:
    return hasattr(torch.ops.vidrestore, "deform_conv2d")


def _load_shared_library(path: Path) -> None:
    if _op_is_registered() and str(path.resolve()) not in torch.ops.loaded_libraries:
        # A second library defining the same op would abort the process.
        raise NativeBuildError(
            f"another build of {OP_NAME} is already loaded in this process, so {path} cannot be. "
            f"Fix: restart the process"
        )
    try:
        torch.ops.load_library(str(path))  # nothing happens if this very file is already loaded
    except OSError as error:
        raise NativeBuildError(
            f"{path} exists but cannot be loaded ({error.__cause__ or error}). Fix: delete {path.parent} "
            f"and rebuild with `python -m ops.dcn.build`"
        ) from error
    if not _op_is_registered():
        raise NativeBuildError(f"{path} loaded but registered no {OP_NAME} op")


# ---- autograd and fake kernels ------------------------------------------------------------------


def _fake_forward(x, offset, mask, weight, bias, stride, padding, dilation):
    """(N, Cout, Ho, Wo) in the real kernels' layout: channels-last on the CPU when x is
    channels-last (and not also contiguous), else contiguous."""
    out_h, out_w = conv_output_size(tuple(x.shape[2:]), tuple(weight.shape[2:]), stride, padding, dilation)
    channels_last = x.device.type == "cpu" and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)
    return torch.empty((x.shape[0], weight.shape[0], out_h, out_w), dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _channels_last_empty(like: Tensor) -> Tensor:
    """An empty (N, C, H, W) tensor like ``like``, channels-last strided."""
    n, c, h, w = like.shape
    return like.new_empty((n, h, w, c)).permute(0, 3, 1, 2)


def _per_pixel_grad_empty(t: Tensor) -> Tensor:
    """The offset or mask gradient as the kernels return it: channels-last on the CPU when the
    input's channels are innermost (a channel slice of a channels-last tensor), else contiguous."""
    innermost = t.device.type == "cpu" and not t.is_contiguous() and t.shape[1] > 1 and t.stride(1) == 1
    return _channels_last_empty(t) if innermost else t.new_empty(t.shape)


def _fake_backward(grad_out, x, offset, mask, weight, with_bias, stride, padding, dilation):
    """Same shapes and strides as the real kernels: grad_x is channels-last strided, the offset
    and mask gradients as ``_per_pixel_grad_empty``."""
    grad_x = _channels_last_empty(x)
    grad_mask = _per_pixel_grad_empty(mask) if mask is not None else x.new_empty((0,))
    grad_bias = x.new_empty((weight.shape[0],)) if with_bias else x.new_empty((0,))
    return grad_x, _per_pixel_grad_empty(offset), grad_mask, weight.new_empty(weight.shape), grad_bias


def _setup_context(ctx, inputs, output) -> None:
    x, offset, mask, weight, bias, stride, padding, dilation = inputs
    ctx.save_for_backward(x, offset, mask, weight)
    ctx.with_mask = mask is not None
    ctx.with_bias = bias is not None
    ctx.params = (stride, padding, dilation)


def _backward(ctx, grad_out):
    x, offset, mask, weight = ctx.saved_tensors
    grad_x, grad_offset, grad_mask, grad_weight, grad_bias = torch.ops.vidrestore.deform_conv2d_backward(
        grad_out, x, offset, mask, weight, ctx.with_bias, *ctx.params
    )
    return (
        grad_x,
        grad_offset,
        grad_mask if ctx.with_mask else None,
        grad_weight,
        grad_bias if ctx.with_bias else None,
        None,
        None,
        None,
    )


def _register_python_parts() -> None:
    """Called once per process, right after the first successful load."""
    torch.library.register_fake(OP_NAME)(_fake_forward)
    torch.library.register_fake("vidrestore::deform_conv2d_backward")(_fake_backward)
    torch.library.register_autograd(OP_NAME, _backward, setup_context=_setup_context)
