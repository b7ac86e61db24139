"""Image quality metrics as the EDVR papers report them (BasicSR's protocol).

numpy functions take HxWxC images on the [0, 255] scale (uint8 or float); torch
functions take (N, C, H, W) tensors on the [0, 1] scale and return one value per
image. Both compute in float64 and agree with each other. RGB channel order.
"""

from .psnr import psnr, psnr_torch, rgb_to_y, rgb_to_y_torch
from .ssim import ssim, ssim_torch

METRICS = {"psnr": psnr_torch, "ssim": ssim_torch}  # by name, as option files give them (val.metrics)

__all__ = ["METRICS", "psnr", "psnr_torch", "rgb_to_y", "rgb_to_y_torch", "ssim", "ssim_torch"]
