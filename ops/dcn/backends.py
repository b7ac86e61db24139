"""Which implementation runs ``deform_conv2d``: selection, availability and logging.

Backends, best first: ``native`` (our compiled CPU/CUDA kernels), ``torchvision``
(``torchvision.ops.deform_conv2d``), ``reference`` (pure PyTorch, always available).
The choice comes from the ``backend`` argument, else the ``VIDRESTORE_DCN``
environment variable, else ``auto`` (the best available). ``auto`` never fails: it
takes the next backend and logs why the better ones were skipped. A backend asked
for by name that cannot run raises ``BackendUnavailable`` instead of silently
running something else. Each resolution is logged once per process.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .reference import deform_conv2d_reference

logger = logging.getLogger(__name__)

BACKEND_ENV_VAR = "VIDRESTORE_DCN"
AUTO_ORDER = ("native", "torchvision", "reference")
BACKEND_NAMES = ("auto",) + AUTO_ORDER

# (x, offset, mask, weight, bias, stride, padding, dilation) -> output; arguments validated.
KernelFn = Callable[
    [Tensor, Tensor, "Tensor | None", Tensor, "Tensor | None", tuple, tuple, tuple], Tensor
]


class BackendUnavailable(RuntimeError):
    """A DCN backend that was asked for by name cannot run here."""


@dataclass(frozen=True)
class Backend:
    name: str
    reason: str  # why this backend was chosen, for the log
    forward: KernelFn


def _load_native() -> KernelFn:
    """Build (first use, cached on disk) and load the compiled kernels (``ops.dcn._ext``).

    A build failure warns once (why, and how to fix it) and raises BackendUnavailable,
    so ``auto`` falls back. Inputs on a device the library has no kernel for (CUDA
    tensors with the CPU-only build) run on torchvision, with a one-time warning.
    Float16/bfloat16 CPU inputs are computed in float32 (as the reference does).
    """
    from . import _ext  # imported here: importing ops.dcn never builds anything

    try:
        library = _ext.load()
    except _ext.NativeBuildError as error:
        _ext.warn_once(f"vidrestore DCN: native kernels unavailable, using a fallback: {error}")
        raise BackendUnavailable(str(error)) from error
    native_op = torch.ops.vidrestore.deform_conv2d

    def forward(x, offset, mask, weight, bias, stride, padding, dilation):
        if x.device.type not in library.devices:
            _ext.warn_once(
                f"vidrestore DCN: the native library was built without {x.device.type} kernels "
                f"(set {_ext.CUDA_ENV_VAR}=1 and run `python -m ops.dcn.build` where nvcc is installed); "
                f"{x.device.type} inputs run on torchvision"
            )
            return _load_torchvision()(x, offset, mask, weight, bias, stride, padding, dilation)
        if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
            tensors = [t.float() if t is not None else None for t in (x, offset, mask, weight, bias)]
            return native_op(*tensors, stride, padding, dilation).to(x.dtype)
        return native_op(x, offset, mask, weight, bias, stride, padding, dilation)

    return forward


def _load_torchvision() -> KernelFn:
    try:
        from torchvision.ops import deform_conv2d as torchvision_deform_conv2d
    except Exception as error:  # a broken torchvision install must not break import
        raise BackendUnavailable(f"torchvision.ops.deform_conv2d cannot be imported ({error})") from error

    def forward(x, offset, mask, weight, bias, stride, padding, dilation):
        return torchvision_deform_conv2d(
            x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask
        )

    return forward


def _load_reference() -> KernelFn:
    return deform_conv2d_reference


_LOADERS: dict[str, Callable[[], KernelFn]] = {
    "native": _load_native,
    "torchvision": _load_torchvision,
    "reference": _load_reference,
}


def get_backend(name: str | None = None) -> Backend:
    """The backend for ``name``, else ``$VIDRESTORE_DCN``, else ``auto``.

    Raises:
        ValueError: unknown backend name.
        BackendUnavailable: a backend forced by name cannot run here.
    """
    source = "argument backend"
    if name is None:
        name = os.environ.get(BACKEND_ENV_VAR) or "auto"
        source = f"environment variable {BACKEND_ENV_VAR}"
    key = name.strip().lower()
    if key not in BACKEND_NAMES:
        raise ValueError(f"{source}: unknown DCN backend {name!r}; expected one of {', '.join(BACKEND_NAMES)}")
    return _resolve(key)


@functools.lru_cache(maxsize=None)
def _resolve(name: str) -> Backend:
    if name != "auto":
        backend = Backend(name, f"forced by name ({BACKEND_ENV_VAR} or option)", _LOADERS[name]())
    else:
        skipped = []
        for candidate in AUTO_ORDER:
            try:
                forward = _LOADERS[candidate]()
            except BackendUnavailable as error:
                skipped.append(f"{candidate}: {error}")
                continue
            reason = "auto: best available" + (f" (skipped {'; '.join(skipped)})" if skipped else "")
            backend = Backend(candidate, reason, forward)
            break
    if not torch.compiler.is_compiling():  # dynamo cannot trace logging; eager calls log the choice
        logger.info("DCN backend: %s (%s)", backend.name, backend.reason)
    return backend


def available_backends() -> dict[str, str]:
    """Each concrete backend's status: ``"available"`` or why it is not."""
    status = {}
    for name, loader in _LOADERS.items():
        try:
            loader()
            status[name] = "available"
        except BackendUnavailable as error:
            status[name] = str(error)
    return status
