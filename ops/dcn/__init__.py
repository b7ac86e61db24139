"""Modulated deformable convolution (DCNv2): op, layers and backend selection.

``deform_conv2d`` is the op; ``ModulatedDeformConv2d`` and ``DCNv2Pack`` are the layers
EDVR uses. Importing this package never fails: backends are loaded on first use and
``auto`` falls back, with a logged reason, to one that can run.

Files: ``function.py`` (the op's entry point and argument checks), ``backends.py`` (which
implementation runs), ``reference.py`` (pure PyTorch), ``build.py`` (compiling the native
kernels, ``python -m ops.dcn.build``), ``library.py`` (loading them as
``torch.ops.vidrestore.deform_conv2d``), ``modules.py`` (layers).
"""

from .backends import (
    BACKEND_ENV_VAR,
    BACKEND_NAMES,
    BackendUnavailable,
    available_backends,
    get_backend,
    reset_backends,
)
from .function import conv_output_size, deform_conv2d
from .modules import OFFSET_DIVERGENCE_THRESHOLD, DCNv2Pack, ModulatedDeformConv2d, dcn_packs
from .reference import deform_conv2d_reference

__all__ = [
    "BACKEND_ENV_VAR",
    "BACKEND_NAMES",
    "OFFSET_DIVERGENCE_THRESHOLD",
    "BackendUnavailable",
    "DCNv2Pack",
    "ModulatedDeformConv2d",
    "available_backends",
    "conv_output_size",
    "dcn_packs",
    "deform_conv2d",
    "deform_conv2d_reference",
    "get_backend",
    "reset_backends",
]
