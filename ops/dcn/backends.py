"""Which implementation runs ``deform_conv2d``: selection, availability and logging.

Backends, best first: ``native`` (our compiled CPU/CUDA kernels, ``ops.dcn.library``),
``torchvision`` (``torchvision.ops.deform_conv2d``), ``reference`` (pure PyTorch, always
available). The choice comes from the ``backend`` argument, else the ``VIDRESTORE_DCN``
environment variable, else ``auto``, and is made per device type of the inputs:

- ``auto`` never fails: it takes the first backend that can run inputs on that device. When it
  has to skip ``native`` (the library cannot be built or loaded, or it has no kernels for that
  device, e.g. CUDA inputs with the CPU-only build), one warning says why and how to fix it.
- A backend asked for by name runs or raises ``BackendUnavailable`` (with the reason and the
  fix); it never runs another backend instead.

Each choice is logged once and remembered for the rest of the process, so compiled graphs
(``torch.compile``) only read it; with ``fullgraph=True`` make the first choice eagerly (one
eager call, or ``get_backend(name, device)``), as choosing may build and load the library.
``reset_backends()`` forgets the choices: the next call chooses again, retrying a native
build that failed (e.g. once a compiler is installed).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .reference import deform_conv2d_reference

logger = logging.getLogger(__name__)

BACKEND_ENV_VAR = "VIDRESTORE_DCN"
BACKEND_NAMES = ("auto", "native", "torchvision", "reference")


def auto_order(device_type: str) -> tuple[str, ...]:
    """The backends ``auto`` tries, best first, for inputs on ``device_type``.

    CPU: our kernels first (several times torchvision's speed, docs/benchmarks.md). Other devices:
    torchvision first. On an H100 our CUDA kernels were no faster than torchvision's in float32
    (0.7-1.0x forward, 1.0-1.3x forward+backward, training step 0.97x) and their float16/bfloat16
    offset gradients failed the precision tests, so they run only when asked for by name
    (``VIDRESTORE_DCN=native`` with the CUDA flavour, ``VIDRESTORE_DCN_CUDA=1``).
    """
    if device_type == "cpu":
        return ("native", "torchvision", "reference")
    return ("torchvision", "native", "reference")

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


def _load_native(device_type: str) -> KernelFn:
    """Our compiled kernels, built on first use (cached on disk) and loaded.

    Float16/bfloat16 CPU inputs are computed in float32 (as the reference does).

    Raises:
        BackendUnavailable: the library cannot be built or loaded, or it has no kernels for
            ``device_type``.
    """
    from . import build, library  # imported here: importing ops.dcn never builds anything

    try:
        loaded = library.load(with_cuda=build.default_with_cuda())
    except build.NativeBuildError as error:
        raise BackendUnavailable(str(error)) from error
    if device_type not in loaded.devices:
        if device_type == "cuda":
            fix = (f"build the CUDA flavour where nvcc is installed (`python -m ops.dcn.build --cuda`) and "
                   f"run with {build.CUDA_ENV_VAR}=1")
        else:
            fix = f"use the torchvision or reference backend for {device_type} inputs"
        raise BackendUnavailable(f"the native library {loaded.name} has no {device_type} kernels. Fix: {fix}")
    return _native_forward


def _native_forward(x, offset, mask, weight, bias, stride, padding, dilation):
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        tensors = [t.float() if t is not None else None for t in (x, offset, mask, weight, bias)]
        return torch.ops.vidrestore.deform_conv2d(*tensors, stride, padding, dilation).to(x.dtype)
    return torch.ops.vidrestore.deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)


def _load_torchvision(device_type: str) -> KernelFn:
    try:
        from torchvision.ops import deform_conv2d as torchvision_deform_conv2d
    except Exception as error:  # a broken torchvision install must not break import
        raise BackendUnavailable(f"torchvision.ops.deform_conv2d cannot be imported ({error})") from error

    def forward(x, offset, mask, weight, bias, stride, padding, dilation):
        return torchvision_deform_conv2d(
            x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask
        )

    return forward


def _load_reference(device_type: str) -> KernelFn:
    return deform_conv2d_reference


# Each loader returns the backend's kernel for inputs on a device type, or raises BackendUnavailable.
_LOADERS: dict[str, Callable[[str], KernelFn]] = {
    "native": _load_native,
    "torchvision": _load_torchvision,
    "reference": _load_reference,
}

# The backends chosen in this process, by (name, device type); see reset_backends().
_chosen: dict[tuple[str, str], Backend] = {}


def get_backend(name: str | None = None, device: str | torch.device = "cpu") -> Backend:
    """The backend that runs inputs on ``device`` for ``name``, else ``$VIDRESTORE_DCN``, else ``auto``.

    The first call for a (name, device type) chooses, logs and remembers; later calls return the
    same backend.

    Raises:
        ValueError: unknown backend name.
        BackendUnavailable: a backend asked for by name cannot run inputs on ``device`` here.
    """
    source = "argument backend"
    if name is None:
        name = os.environ.get(BACKEND_ENV_VAR) or "auto"
        source = f"environment variable {BACKEND_ENV_VAR}"
    key = name.strip().lower()
    if key not in BACKEND_NAMES:
        raise ValueError(f"{source}: unknown DCN backend {name!r}; expected one of {', '.join(BACKEND_NAMES)}")
    device_type = torch.device(device).type
    backend = _chosen.get((key, device_type))
    if backend is None:
        backend = _chosen[(key, device_type)] = _choose(key, device_type)
    return backend


def reset_backends() -> None:
    """Forget the backends chosen in this process: the next call chooses again (and retries
    loading, or building, the native library)."""
    _chosen.clear()


def _choose(name: str, device_type: str) -> Backend:
    if name != "auto":
        backend = Backend(name, f"forced by name ({BACKEND_ENV_VAR} or option)", _LOADERS[name](device_type))
    else:
        backend = _choose_automatically(device_type)
    if not torch.compiler.is_compiling():  # dynamo cannot trace logging; eager calls log the choice
        logger.info("DCN backend: %s (%s), for %s inputs", backend.name, backend.reason, device_type)
    return backend


def _choose_automatically(device_type: str) -> Backend:
    skipped = []
    for candidate in auto_order(device_type):
        try:
            forward = _LOADERS[candidate](device_type)
        except BackendUnavailable as error:
            skipped.append(f"{candidate}: {error}")
            if candidate == "native":
                warnings.warn(f"vidrestore DCN: native kernels unavailable for {device_type} inputs, "
                              f"using a fallback: {error}", stacklevel=5)
            continue
        reason = "auto: best available" + (f" (skipped {'; '.join(skipped)})" if skipped else "")
        return Backend(candidate, reason, forward)
    raise AssertionError("the reference backend is always available")


def available_backends(device: str | torch.device = "cpu") -> dict[str, str]:
    """Each concrete backend's status for inputs on ``device``: ``"available"`` or why it is not.

    Tries each backend afresh (a native build that failed is retried); changes no choice.
    """
    device_type = torch.device(device).type
    status = {}
    for name, loader in _LOADERS.items():
        try:
            loader(device_type)
            status[name] = "available"
        except BackendUnavailable as error:
            status[name] = str(error)
    return status
