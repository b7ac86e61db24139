"""Pixel losses (prediction and target (N, C, H, W), same shape)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CharbonnierLoss(nn.Module):
    """loss_weight * reduce(sqrt((pred - target)^2 + eps)): a smooth L1 (EDVR's loss)."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = "sum", eps: float = 1e-12):
        super().__init__()
        _check_reduction(reduction)
        self.loss_weight, self.reduction, self.eps = loss_weight, reduction, eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        loss = torch.sqrt((pred - target) ** 2 + self.eps)
        return self.loss_weight * (loss.sum() if self.reduction == "sum" else loss.mean())


class L1Loss(nn.Module):
    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", eps: float = 0.0):
        super().__init__()
        _check_reduction(reduction)
        self.loss_weight, self.reduction = loss_weight, reduction

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.loss_weight * F.l1_loss(pred, target, reduction=self.reduction)


class MSELoss(nn.Module):
    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", eps: float = 0.0):
        super().__init__()
        _check_reduction(reduction)
        self.loss_weight, self.reduction = loss_weight, reduction

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.loss_weight * F.mse_loss(pred, target, reduction=self.reduction)


LOSSES = {"CharbonnierLoss": CharbonnierLoss, "L1Loss": L1Loss, "MSELoss": MSELoss}


def _check_reduction(reduction: str) -> None:
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
