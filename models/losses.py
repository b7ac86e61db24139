"""Pixel losses between a prediction and its target (same shape, e.g. (N, C, H, W))."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# per-element penalty of the difference d = pred - target
PENALTIES = {
    "CharbonnierLoss": lambda d, eps: torch.sqrt(d * d + eps),  # a smooth L1: EDVR's loss
    "L1Loss": lambda d, eps: d.abs(),
    "MSELoss": lambda d, eps: d * d,
}


class PixelLoss(nn.Module):
    """loss_weight * reduce(penalty(pred - target)), reduce = sum or mean over every element.

    ``type``: "CharbonnierLoss" (sqrt(d^2 + eps)), "L1Loss" (|d|) or "MSELoss" (d^2).
    """

    def __init__(self, type: str = "CharbonnierLoss", loss_weight: float = 1.0, reduction: str = "sum",
                 eps: float = 1e-12):
        super().__init__()
        if type not in PENALTIES:
            raise ValueError(f"pixel_loss.type: expected one of {', '.join(PENALTIES)}, got {type!r}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"pixel_loss.reduction: expected 'sum' or 'mean', got {reduction!r}")
        self.type, self.loss_weight, self.reduction, self.eps = type, loss_weight, reduction, eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        loss = PENALTIES[self.type](pred - target, self.eps)
        return self.loss_weight * (loss.sum() if self.reduction == "sum" else loss.mean())
