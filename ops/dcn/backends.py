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
    raise BackendUnavailable(
        "the native CPU/CUDA DCN kernels are not part of this version of vidrestore yet"
    )


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
