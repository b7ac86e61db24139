"""Running a trained network on windows of frames: padding to the size the network needs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def restore_windows(net: nn.Module, lq: Tensor, multiple: int = 4, scale: int = 4,
                    amp_dtype: torch.dtype | None = None) -> Tensor:
    """Restore the centre frame of each window: (B, T, C, h, w) -> (B, C, h*scale, w*scale).

    Frames whose size is not a multiple of ``multiple`` are reflect-padded at the
    bottom/right and the output is cropped back. ``scale`` is 1 for hr_in networks.
    """
    b, t, c, h, w = lq.shape
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        if pad_h >= h or pad_w >= w:
            raise ValueError(f"frames of {h}x{w} are too small to pad to a multiple of {multiple}")
        lq = F.pad(lq.view(b, t * c, h, w), (0, pad_w, 0, pad_h), mode="reflect").view(b, t, c, h + pad_h, w + pad_w)
    with torch.autocast(lq.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = net(lq)
    return out[..., : h * scale, : w * scale].float()
