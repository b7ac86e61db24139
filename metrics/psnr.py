"""PSNR, with the border crop and Y-channel options of the EDVR papers."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

# ITU-R BT.601 luma for RGB in [0, 1], giving Y in [16, 235] (of 255)
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """HxWx3 RGB on [0, 255] -> HxWx1 BT.601 Y on [16, 235], float64."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y: expected an HxWx3 RGB image, got shape {img.shape}")
    return (img / 255.0 @ np.array(Y_WEIGHTS) + Y_OFFSET)[..., None]


def rgb_to_y_torch(img: Tensor) -> Tensor:
    """(N, 3, H, W) RGB on [0, 1] -> (N, 1, H, W) Y on [16, 235] / 255, float64."""
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"rgb_to_y_torch: expected (N, 3, H, W) RGB, got shape {tuple(img.shape)}")
    weights = torch.tensor(Y_WEIGHTS, dtype=torch.float64, device=img.device).view(1, 3, 1, 1)
    return ((img.double() * weights).sum(dim=1, keepdim=True) + Y_OFFSET) / 255.0


def psnr(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """PSNR in dB between two HxWxC images on [0, 255]; inf for identical images.

    ``crop_border`` pixels are removed on each side first; ``test_y_channel`` compares
    the BT.601 Y channel only.
    """
    img, img2 = _prepare(img, img2, crop_border, test_y_channel)
    mse = np.mean((img - img2) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def psnr_torch(img: Tensor, img2: Tensor, crop_border: int = 0, test_y_channel: bool = False) -> Tensor:
    """PSNR in dB of each image pair, (N, C, H, W) on [0, 1] -> (N,) float64 (inf if equal)."""
    img, img2 = _prepare_torch(img, img2, crop_border, test_y_channel)
    mse = ((img - img2) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse)


def _check_pair(shape1: tuple, shape2: tuple, crop_border: int, layout: str) -> None:
    if shape1 != shape2:
        raise ValueError(f"images must have the same shape, got {shape1} and {shape2}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    h, w = (shape1[0], shape1[1]) if layout == "hwc" else (shape1[2], shape1[3])
    if 2 * crop_border >= min(h, w):
        raise ValueError(f"crop_border {crop_border} leaves nothing of a {h}x{w} image")


def _prepare(img, img2, crop_border: int, test_y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    img, img2 = np.asarray(img), np.asarray(img2)
    img = img[..., None] if img.ndim == 2 else img  # grey HxW -> HxWx1
    img2 = img2[..., None] if img2.ndim == 2 else img2
    _check_pair(img.shape, img2.shape, crop_border, "hwc")
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        return rgb_to_y(img), rgb_to_y(img2)
    return img.astype(np.float64), img2.astype(np.float64)


def _prepare_torch(img: Tensor, img2: Tensor, crop_border: int, test_y_channel: bool) -> tuple[Tensor, Tensor]:
    if img.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) tensors, got shape {tuple(img.shape)}")
    _check_pair(tuple(img.shape), tuple(img2.shape), crop_border, "nchw")
    if crop_border:
        img = img[..., crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[..., crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        return rgb_to_y_torch(img), rgb_to_y_torch(img2)
    return img.double(), img2.double()
