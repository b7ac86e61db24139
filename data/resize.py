"""MATLAB-compatible bicubic ``imresize`` (numpy and torch give the same numbers).

Follows MATLAB's ``imresize(img, scale, 'bicubic')``: cubic kernel with a = -0.5; output pixel
``i`` (1-based) maps to input coordinate ``u = i / s + 0.5 * (1 - 1 / s)``; when downscaling
(s < 1, antialiasing on) the kernel is stretched to width ``4 / s`` and scaled by ``s``; weights
are normalised to sum to 1; out-of-range taps mirror the border symmetrically (edge pixel
repeated); output size ``ceil(s * size)``; the dimension with the smaller scale is resized first.
uint8 numpy input gives uint8 output (rounded and clipped, as MATLAB does).

Each 1-D resize is a set of taps (index, weight) per output pixel: numpy sums the taps, torch
multiplies by the equivalent dense (out_len x in_len) matrix (fast on BLAS and GPUs).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB's bicubic kernel (a = -0.5), support [-2, 2]."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=64)
def contributions(
    in_len: int, out_len: int, scale: float, antialiasing: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Taps of a 1-D resize: (index, weights), both (out_len, taps); ``out[i] = sum_t weights[i, t] *
    in[index[i, t]]`` with 0-based, already mirrored indices. Taps that are zero in every row are dropped."""
    stretch = scale < 1 and antialiasing
    kernel_width = 4.0 / scale if stretch else 4.0
    out_pos = np.arange(1, out_len + 1, dtype=np.float64)
    u = out_pos / scale + 0.5 * (1 - 1 / scale)  # input coordinate of each output pixel (1-based)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    index = left[:, None] + np.arange(taps)[None, :]  # (out_len, taps), 1-based
    dist = u[:, None] - index
    weights = scale * cubic(scale * dist) if stretch else cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])  # symmetric border
    index0 = mirror[np.mod(index.astype(np.int64) - 1, 2 * in_len)]
    used = np.any(weights != 0, axis=0)
    index0, weights = index0[:, used], weights[:, used]
    index0.setflags(write=False)
    weights.setflags(write=False)
    return index0, weights


@lru_cache(maxsize=64)
def weight_matrix(in_len: int, out_len: int, scale: float, antialiasing: bool = True) -> np.ndarray:
    """The same resize as a dense (out_len, in_len) float64 matrix M: ``out = M @ in`` along one axis."""
    index, weights = contributions(in_len, out_len, scale, antialiasing)
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), index.shape[1])
    np.add.at(matrix, (rows, index.ravel()), weights.ravel())
    matrix.setflags(write=False)
    return matrix


def _resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float, antialiasing: bool) -> np.ndarray:
    """1-D resize of a float64 array along ``axis`` by summing its few taps (the matrix is banded)."""
    index, weights = contributions(img.shape[axis], out_len, scale, antialiasing)
    moved = np.moveaxis(img, axis, 0)
    out = np.zeros((out_len, *moved.shape[1:]), dtype=np.float64)
    expand = (slice(None),) + (None,) * (moved.ndim - 1)
    for t in range(index.shape[1]):
        out += weights[:, t][expand] * moved[index[:, t]]
    return np.moveaxis(out, 0, axis)


def _plan(
    in_hw: tuple[int, int], scale: float | tuple[float, float] | None, output_shape: tuple[int, int] | None
) -> tuple[tuple[float, float], tuple[int, int], list[int]]:
    """Per-axis scales, output (H, W) and axis order (0 = H, 1 = W) as MATLAB chooses them."""
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize: give exactly one of scale and output_shape")
    if scale is not None:
        scales = (float(scale), float(scale)) if np.isscalar(scale) else tuple(map(float, scale))
        if min(scales) <= 0:
            raise ValueError(f"imresize: scale must be > 0, got {scale}")
        out_hw = (math.ceil(scales[0] * in_hw[0]), math.ceil(scales[1] * in_hw[1]))
    else:
        out_hw = (int(output_shape[0]), int(output_shape[1]))
        if min(out_hw) <= 0:
            raise ValueError(f"imresize: output_shape must be positive, got {output_shape}")
        scales = (out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    order = [1, 0] if scales[1] < scales[0] else [0, 1]
    return scales, out_hw, order  # type: ignore[return-value]


def imresize(
    img: np.ndarray,
    scale: float | tuple[float, float] | None = None,
    output_shape: tuple[int, int] | None = None,
    antialiasing: bool = True,
) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) array; float in -> same float dtype out, uint8 in -> uint8 out."""
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize: expected (H, W) or (H, W, C) array, got shape {img.shape}")
    scales, out_hw, order = _plan(img.shape[:2], scale, output_shape)
    out = img.astype(np.float64)
    for axis in order:
        out = _resize_axis(out, axis, out_hw[axis], scales[axis], antialiasing)
    if img.dtype == np.uint8:
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out.astype(img.dtype if np.issubdtype(img.dtype, np.floating) else np.float64)


def imresize_torch(
    x: torch.Tensor,
    scale: float | tuple[float, float] | None = None,
    output_shape: tuple[int, int] | None = None,
    antialiasing: bool = True,
) -> torch.Tensor:
    """Resize a float tensor (..., H, W) along its last two axes; same dtype and device out."""
    import torch  # here, so numpy-only users (data preparation workers) do not load torch

    if x.ndim < 2 or not x.is_floating_point():
        raise ValueError(
            f"imresize_torch: expected a float tensor (..., H, W), got {x.dtype} {tuple(x.shape)}"
        )
    scales, out_hw, order = _plan((x.shape[-2], x.shape[-1]), scale, output_shape)
    out = x
    for axis in order:
        in_len = x.shape[-2 + axis]
        matrix = weight_matrix(in_len, out_hw[axis], scales[axis], antialiasing)
        m = torch.from_numpy(np.array(matrix)).to(device=x.device, dtype=x.dtype)
        out = m @ out if axis == 0 else out @ m.T
    return out
