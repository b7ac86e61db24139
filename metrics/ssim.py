"""SSIM (Wang et al. 2004) as the EDVR papers compute it.

11x11 Gaussian window (sigma 1.5), 'valid' filtering (no padding), constants
C1 = (0.01 * 255)^2 and C2 = (0.03 * 255)^2 on the [0, 255] scale, the SSIM map
averaged per channel and then over channels; float64 throughout.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from .psnr import _prepare, _prepare_torch

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def gaussian_window() -> np.ndarray:
    """The 11x11 Gaussian window, sum 1, float64."""
    coords = np.arange(WINDOW_SIZE, dtype=np.float64) - WINDOW_SIZE // 2
    g = np.exp(-(coords**2) / (2 * WINDOW_SIGMA**2))
    g /= g.sum()
    return np.outer(g, g)


def ssim(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """Mean SSIM between two HxWxC images on [0, 255] (1.0 for identical images)."""
    img, img2 = _prepare(img, img2, crop_border, test_y_channel)
    if min(img.shape[:2]) < WINDOW_SIZE:
        raise ValueError(f"SSIM needs images of at least {WINDOW_SIZE}x{WINDOW_SIZE}, got {img.shape[:2]}")
    window = gaussian_window()
    margin = WINDOW_SIZE // 2

    def blur(t: np.ndarray) -> np.ndarray:  # 'valid' filtering: drop what touched the border
        return cv2.filter2D(t, -1, window)[margin:-margin, margin:-margin]

    values = []
    for c in range(img.shape[2]):
        x, y = img[..., c], img2[..., c]
        mu_x, mu_y = blur(x), blur(y)
        sigma_x, sigma_y, sigma_xy = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + C1) * (2 * sigma_xy + C2)) / (
            (mu_x**2 + mu_y**2 + C1) * (sigma_x + sigma_y + C2)
        )
        values.append(ssim_map.mean())
    return float(np.mean(values))


def ssim_torch(img: Tensor, img2: Tensor, crop_border: int = 0, test_y_channel: bool = False) -> Tensor:
    """SSIM of each image pair, (N, C, H, W) on [0, 1] -> (N,) float64."""
    img, img2 = _prepare_torch(img, img2, crop_border, test_y_channel)
    if min(img.shape[-2:]) < WINDOW_SIZE:
        raise ValueError(f"SSIM needs images of at least {WINDOW_SIZE}x{WINDOW_SIZE}, got {tuple(img.shape[-2:])}")
    window = torch.from_numpy(gaussian_window()).to(img.device)
    return _ssim_per_image(img * 255.0, img2 * 255.0, window)


def _ssim_per_image(x: Tensor, y: Tensor, window: Tensor) -> Tensor:
    """(N, C, H, W) float64 on [0, 255] -> (N,) mean SSIM (``window``: the separable 2-D Gaussian)."""
    g = window.sum(dim=1)  # the 1-D Gaussian: the window is its outer product with itself
    # 'valid' separable filtering of the five maps at once (unfold + matmul: far faster than a
    # float64 depthwise conv on CPU)
    maps = torch.stack((x, y, x * x, y * y, x * y))
    blurred = maps.unfold(3, WINDOW_SIZE, 1) @ g
    blurred = blurred.unfold(4, WINDOW_SIZE, 1) @ g
    mu_x, mu_y, xx, yy, xy = blurred
    sigma_x, sigma_y, sigma_xy = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + C1) * (2 * sigma_xy + C2)) / (
        (mu_x**2 + mu_y**2 + C1) * (sigma_x + sigma_y + C2)
    )
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)
